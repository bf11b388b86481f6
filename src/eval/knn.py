"""Weighted kNN monitor of MoCo's CIFAR demo, in NumPy.

The classifier of Wu et al. (2018): each query votes with its ``k`` most similar bank features,
weighted by ``exp(sim / t)``. Features and bank are L2-normalised, so ``sim`` is the cosine.
"""

from typing import Optional

import numpy as np

# Budget of a chunk's similarities and argpartition indices: no 10k x 50k matrix at once.
MAX_CHUNK_BYTES = 64 * 2**20


def l2_normalize(x: np.ndarray, axis: int = 1, eps: float = 1e-12) -> np.ndarray:
    """``x / max(||x||, eps)`` as torch's ``F.normalize``: zero rows stay zero, ints -> float64."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps).astype(x.dtype)


def default_chunk_size(bank_size: int, itemsize: int = 4) -> int:
    """Queries per chunk (>= 1) whose similarities and int64 indices fit MAX_CHUNK_BYTES."""
    return max(1, MAX_CHUNK_BYTES // (max(1, bank_size) * (itemsize + 8)))


def knn_predict(
    features: np.ndarray,
    bank: np.ndarray,
    bank_labels: np.ndarray,
    num_classes: int,
    k: int,
    t: float,
    chunk_size: Optional[int] = None,
) -> np.ndarray:
    """Classes ranked by kNN vote, best first: B x C int64 for features B x D, bank N x D.

    ``k`` is clamped to N; ties rank the lower class first; which bank items tied at the k-th
    similarity count is unspecified (as with the reference's ``topk``).
    """
    features, bank, labels = np.asarray(features), np.asarray(bank), np.asarray(bank_labels)
    if features.ndim != 2 or bank.ndim != 2 or features.shape[1] != bank.shape[1]:
        raise ValueError(f"features and bank must share D, got {features.shape}, {bank.shape}")
    n = bank.shape[0]
    if labels.shape != (n,) or n == 0:
        raise ValueError(f"need a non-empty bank and bank_labels of shape ({n},)")
    if k < 1 or t <= 0:
        raise ValueError(f"need k >= 1, t > 0; got {k}, {t}")
    # Out-of-range labels (or num_classes < 1) would silently vote into another query's row.
    if labels.dtype.kind not in "iu" or not 0 <= labels.min() <= labels.max() < num_classes:
        raise ValueError(f"bank_labels must be integers in [0, {num_classes})")
    if chunk_size is None:
        chunk_size = default_chunk_size(n, np.result_type(features, bank).itemsize)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    k, labels = min(k, n), labels.astype(np.int64)
    ranked = np.empty((features.shape[0], num_classes), dtype=np.int64)
    for start in range(0, features.shape[0], chunk_size):
        sim = features[start : start + chunk_size] @ bank.T  # b x N
        b = sim.shape[0]
        if k < n:  # the k largest, unordered: order does not matter for a sum of weights
            idx = np.argpartition(sim, n - k, axis=1)[:, n - k :]
        else:
            idx = np.broadcast_to(np.arange(n), (b, n))
        weights = np.exp(np.take_along_axis(sim, idx, axis=1).astype(np.float64) / t)  # b x k
        # One bincount over (query, class) cells, not the reference's b x k x C one-hot.
        cells = (np.arange(b)[:, None] * num_classes + labels[idx]).ravel()
        scores = np.bincount(cells, weights.ravel(), minlength=b * num_classes).reshape(b, -1)
        # Stable sort of negated scores: ties go to the lower class index.
        ranked[start : start + b] = np.argsort(-scores, axis=1, kind="stable")
    return ranked
