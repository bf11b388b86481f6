"""Nearest and farthest bank images of a query, by cosine similarity of normalised features."""

from dataclasses import dataclass

import numpy as np


@dataclass
class Retrieval:
    """Q x k bank indices (most similar first; least similar first) and their similarities."""

    nearest: np.ndarray
    nearest_scores: np.ndarray
    farthest: np.ndarray
    farthest_scores: np.ndarray


def rank_by_similarity(queries: np.ndarray, bank: np.ndarray, topk: int) -> Retrieval:
    """Ranks the N x D bank by dot product (the kNN's cosine for L2-normalised rows) with each
    of the Q x D queries; ``topk`` is clamped to N; ties rank the lower bank index first."""
    queries, bank = np.atleast_2d(np.asarray(queries)), np.asarray(bank)
    if bank.ndim != 2 or queries.shape[1] != bank.shape[1] or len(bank) == 0 or topk < 1:
        raise ValueError(f"need queries Q x D, bank N x D, N > 0, topk > 0: {bank.shape}, {topk}")
    scores = queries @ bank.T  # Q x N
    nearest = np.argsort(-scores, axis=1, kind="stable")[:, :topk]
    # A second stable sort, not the first one reversed: ties keep the lower index first here too.
    farthest = np.argsort(scores, axis=1, kind="stable")[:, :topk]
    near_scores, far_scores = (np.take_along_axis(scores, i, 1) for i in (nearest, farthest))
    return Retrieval(nearest, near_scores, farthest, far_scores)
