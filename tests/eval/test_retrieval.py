"""Tests for src.eval.retrieval: ranking by cosine similarity."""

import numpy as np
import pytest

from src.eval.retrieval import rank_by_similarity


def test_ranking_puts_an_exact_duplicate_first():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 8))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    bank[31] = -bank[17]  # the query's opposite: the most dissimilar item
    result = rank_by_similarity(bank[17:18].copy(), bank, topk=4)
    assert result.nearest[0, 0] == 17 and result.nearest_scores[0, 0] == pytest.approx(1.0)
    assert result.farthest[0, 0] == 31 and result.farthest_scores[0, 0] == pytest.approx(-1.0)
    assert np.all(np.diff(result.nearest_scores[0]) <= 0)
    assert np.all(np.diff(result.farthest_scores[0]) >= 0)
    assert result.nearest.shape == result.farthest.shape == (1, 4)


def test_ranking_ties_keep_the_lower_index_first():
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    result = rank_by_similarity(np.array([[1.0, 0.0]]), bank, topk=10)  # clamped to the bank
    np.testing.assert_array_equal(result.nearest, [[0, 2, 1, 3]])
    np.testing.assert_array_equal(result.farthest, [[1, 3, 0, 2]])
