"""Nearest and farthest bank images of a query, by cosine similarity of normalised features.

Example::

    result = rank_by_similarity(test_embedding[[3, 7]], train_embedding, topk=5)
    result.nearest[0]          # train indices most similar to test image 3, best first
    result.farthest_scores[0]  # the lowest similarities, lowest first
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Retrieval:
    """Ranked bank indices and similarities, one row per query.

    Attributes:
        nearest: (Q, k) indices of the most similar bank items, most similar first.
        nearest_scores: (Q, k) their similarities.
        farthest: (Q, k) indices of the least similar bank items, least similar first.
        farthest_scores: (Q, k) their similarities.
    """

    nearest: np.ndarray
    nearest_scores: np.ndarray
    farthest: np.ndarray
    farthest_scores: np.ndarray


def rank_by_similarity(queries: np.ndarray, bank: np.ndarray, topk: int) -> Retrieval:
    """Ranks the bank by dot product with each query.

    With L2-normalised rows the dot product is the cosine similarity the kNN
    classifier uses. Equal scores rank the lower bank index first.

    Args:
        queries: (Q, D) query features.
        bank: (N, D) bank features.
        topk: How many nearest and farthest items to return; clamped to N.

    Returns:
        The ranking.

    Raises:
        ValueError: On mismatched shapes, an empty bank or ``topk < 1``.
    """
    queries = np.atleast_2d(np.asarray(queries))
    bank = np.asarray(bank)
    if bank.ndim != 2 or queries.shape[1] != bank.shape[1] or bank.shape[0] == 0:
        raise ValueError(
            f"need queries (Q, D) and a non-empty bank (N, D), got {queries.shape} and {bank.shape}"
        )
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    topk = min(topk, bank.shape[0])
    scores = queries @ bank.T
    order = np.argsort(-scores, axis=1, kind="stable")
    nearest = order[:, :topk]
    # A second stable sort, not the first one reversed: ties keep the lower index first here too.
    farthest = np.argsort(scores, axis=1, kind="stable")[:, :topk]
    return Retrieval(
        nearest=nearest,
        nearest_scores=np.take_along_axis(scores, nearest, axis=1),
        farthest=farthest,
        farthest_scores=np.take_along_axis(scores, farthest, axis=1),
    )
