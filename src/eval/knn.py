"""Weighted kNN monitor of MoCo's CIFAR demo, in NumPy.

The classifier of Wu et al. (2018, instance discrimination): each query votes
with its ``k`` most similar bank features, each neighbour weighted by
``exp(similarity / t)``. Features and bank are expected L2-normalised, so the
similarity is the cosine.

Example::

    ranked = knn_predict(l2_normalize(test_features), l2_normalize(train_features),
                         train_labels, num_classes=10, k=200, t=0.1)  # B x C, best first
"""

from typing import Optional

import numpy as np

# Budget for the per-chunk working arrays (similarities and the argpartition
# indices), so a 50k-image bank never needs a 10k x 50k matrix at once.
MAX_CHUNK_BYTES = 64 * 2**20


def l2_normalize(x: np.ndarray, axis: int = 1, eps: float = 1e-12) -> np.ndarray:
    """``x / max(||x||, eps)`` along ``axis``, as ``torch.nn.functional.normalize``; keeps
    the dtype of ``x`` (float64 for ints), zero vectors stay zero."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps).astype(x.dtype)


def default_chunk_size(bank_size: int, itemsize: int = 4) -> int:
    """Queries per chunk (at least 1) so that a chunk's similarities and int64 argpartition
    indices fit MAX_CHUNK_BYTES."""
    bytes_per_query = max(1, bank_size) * (itemsize + np.dtype(np.int64).itemsize)
    return max(1, MAX_CHUNK_BYTES // bytes_per_query)


def _rank_classes(
    sim: np.ndarray, bank_labels: np.ndarray, num_classes: int, k: int, t: float
) -> np.ndarray:
    """Ranks classes for one chunk of queries given their similarity rows."""
    num_queries, bank_size = sim.shape
    if k < bank_size:
        # Partition puts the k largest at the end, unordered: order does not
        # matter for a sum of weights.
        neighbours = np.argpartition(sim, bank_size - k, axis=1)[:, bank_size - k :]
    else:
        neighbours = np.broadcast_to(np.arange(bank_size), (num_queries, bank_size))
    weights = np.exp(np.take_along_axis(sim, neighbours, axis=1).astype(np.float64) / t)
    neighbour_labels = bank_labels[neighbours]
    # One bincount over (query, class) cells replaces the reference's one-hot
    # tensor of shape (B, k, classes).
    cells = np.arange(num_queries)[:, None] * num_classes + neighbour_labels
    scores = np.bincount(
        cells.ravel(), weights=weights.ravel(), minlength=num_queries * num_classes
    ).reshape(num_queries, num_classes)
    # Stable sort of negated scores: ties go to the lower class index.
    return np.argsort(-scores, axis=1, kind="stable")


def knn_predict(
    features: np.ndarray,
    bank: np.ndarray,
    bank_labels: np.ndarray,
    num_classes: int,
    k: int,
    t: float,
    chunk_size: Optional[int] = None,
) -> np.ndarray:
    """Ranks classes for each query by a similarity-weighted kNN vote.

    Args:
        features: Queries, shape (B, D), L2-normalised.
        bank: Reference features, shape (N, D), L2-normalised.
        bank_labels: Integer labels of the bank, shape (N,), in
            ``[0, num_classes)``.
        num_classes: Number of classes C.
        k: Number of neighbours; clamped to N.
        t: Temperature of the weights ``exp(sim / t)``.
        chunk_size: Queries processed at once, bounding memory to a
            ``chunk_size x N`` similarity block; ``None`` picks one within
            ``MAX_CHUNK_BYTES``.

    Returns:
        Class indices ranked by score, best first, shape (B, C), int64.
        Column 0 is the top-1 prediction. Classes without neighbours score 0
        and come last; equal scores rank the lower class index first. When
        several bank items tie at the k-th similarity, which of them count is
        unspecified (as with the reference's ``topk``).

    Raises:
        ValueError: On inconsistent shapes, labels outside the classes, or
            non-positive ``k``, ``t``, ``num_classes`` or ``chunk_size``.
    """
    features = np.asarray(features)
    bank = np.asarray(bank)
    bank_labels = np.asarray(bank_labels)
    if features.ndim != 2 or bank.ndim != 2 or features.shape[1] != bank.shape[1]:
        raise ValueError(
            f"features (B, D) and bank (N, D) must share D, got {features.shape} and {bank.shape}"
        )
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"bank_labels must have shape ({bank.shape[0]},), got {bank_labels.shape}")
    if bank.shape[0] == 0:
        raise ValueError("bank is empty")
    if num_classes < 1 or k < 1 or t <= 0:
        raise ValueError(f"need num_classes >= 1, k >= 1, t > 0; got {num_classes}, {k}, {t}")
    if not np.issubdtype(bank_labels.dtype, np.integer):
        raise ValueError(f"bank_labels must be integers, got {bank_labels.dtype}")
    if bank_labels.min() < 0 or bank_labels.max() >= num_classes:
        # Out-of-range labels would silently vote into a neighbouring query's row.
        raise ValueError(
            f"bank_labels must lie in [0, {num_classes}), got [{bank_labels.min()}, "
            f"{bank_labels.max()}]"
        )
    if chunk_size is None:
        chunk_size = default_chunk_size(bank.shape[0], np.result_type(features, bank).itemsize)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    k = min(k, bank.shape[0])
    bank_labels = bank_labels.astype(np.int64)
    ranked = np.empty((features.shape[0], num_classes), dtype=np.int64)
    for start in range(0, features.shape[0], chunk_size):
        stop = start + chunk_size
        sim = features[start:stop] @ bank.T
        ranked[start:stop] = _rank_classes(sim, bank_labels, num_classes, k, t)
    return ranked
