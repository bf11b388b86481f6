"""Tests for src.eval.knn: weighted kNN vote, chunking, normalisation."""

import math

import numpy as np
import pytest

from src.eval.knn import default_chunk_size, knn_predict, l2_normalize


def unit(degrees):
    """A 2-D unit vector at the given angle, so cosines are easy to reason about."""
    radians = math.radians(degrees)
    return [math.cos(radians), math.sin(radians)]


# Query along the x axis. One class-0 neighbour is very close (cos 0.99);
# two class-1 neighbours are farther (cos 0.6); the fourth point is opposite.
QUERY = np.array([[1.0, 0.0]])
BANK = np.array(
    [
        [0.99, math.sqrt(1 - 0.99**2)],
        [0.6, 0.8],
        [0.6, -0.8],
        [-1.0, 0.0],
    ]
)
BANK_LABELS = np.array([0, 1, 1, 2])


def test_weighted_vote_beats_majority_vote():
    # k = 3 neighbours: sims 0.99 (class 0), 0.6 and 0.6 (class 1).
    # Majority: class 1 (2 votes vs 1). Weighted with t = 0.1:
    #   class 0: exp(9.9) ~ 19930, class 1: 2 * exp(6) ~ 807 -> class 0 wins.
    ranked = knn_predict(QUERY, BANK, BANK_LABELS, num_classes=3, k=3, t=0.1)
    assert ranked.tolist() == [[0, 1, 2]]  # class 2 is not a neighbour: score 0, last


def test_high_temperature_turns_weighting_into_majority():
    # t = 10: class 0: exp(0.099) ~ 1.104, class 1: 2 * exp(0.06) ~ 2.124 -> class 1 wins.
    ranked = knn_predict(QUERY, BANK, BANK_LABELS, num_classes=3, k=3, t=10.0)
    assert ranked.tolist() == [[1, 0, 2]]


def test_scores_are_sums_of_exp_weights():
    # k = 4 includes the opposite point, so every class scores > 0. With t = 1:
    #   class 0: exp(0.99) ~ 2.69, class 1: 2 * exp(0.6) ~ 3.64, class 2: exp(-1) ~ 0.37.
    scores = {0: math.exp(0.99), 1: 2 * math.exp(0.6), 2: math.exp(-1.0)}
    expected = sorted(scores, key=scores.get, reverse=True)
    assert expected == [1, 0, 2]
    assert knn_predict(QUERY, BANK, BANK_LABELS, 3, k=4, t=1.0).tolist() == [expected]


def test_k_larger_than_bank_is_clamped():
    all_points = knn_predict(QUERY, BANK, BANK_LABELS, 3, k=4, t=0.5)
    assert np.array_equal(knn_predict(QUERY, BANK, BANK_LABELS, 3, k=200, t=0.5), all_points)


def test_k_one_is_nearest_neighbour():
    queries = np.array([unit(0), unit(55), unit(-55), unit(180)])
    ranked = knn_predict(queries, BANK, BANK_LABELS, 3, k=1, t=0.1)
    assert ranked[:, 0].tolist() == [0, 1, 1, 2]


def test_equal_scores_rank_lower_class_first():
    bank = np.array([unit(10), unit(-10)])
    ranked = knn_predict(QUERY, bank, np.array([1, 0]), num_classes=3, k=2, t=0.1)
    assert ranked.tolist() == [[0, 1, 2]]


def random_unit_rows(rng, rows, dim):
    return l2_normalize(rng.standard_normal((rows, dim)).astype(np.float32))


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunking_matches_a_single_chunk(chunk_size):
    rng = np.random.default_rng(0)
    features = random_unit_rows(rng, 100, 16)
    bank = random_unit_rows(rng, 300, 16)
    labels = rng.integers(0, 10, size=300)
    whole = knn_predict(features, bank, labels, 10, k=20, t=0.1, chunk_size=100)
    assert np.array_equal(
        knn_predict(features, bank, labels, 10, k=20, t=0.1, chunk_size=chunk_size), whole
    )


def test_matches_a_direct_transcription_of_the_reference():
    rng = np.random.default_rng(1)
    features = random_unit_rows(rng, 50, 8).astype(np.float64)
    bank = random_unit_rows(rng, 120, 8).astype(np.float64)
    labels = rng.integers(0, 5, size=120)
    # Reference: full sort for top-k, one-hot tensor, weighted sum, argsort.
    sim = features @ bank.T
    top = np.argsort(-sim, axis=1)[:, :15]
    weight = np.exp(np.take_along_axis(sim, top, axis=1) / 0.2)
    one_hot = np.eye(5)[labels[top]]
    scores = (one_hot * weight[..., None]).sum(axis=1)
    assert np.array_equal(
        knn_predict(features, bank, labels, 5, k=15, t=0.2)[:, 0], np.argmax(scores, axis=1)
    )


def test_output_shape_and_permutation():
    rng = np.random.default_rng(2)
    ranked = knn_predict(
        random_unit_rows(rng, 9, 4),
        random_unit_rows(rng, 30, 4),
        rng.integers(0, 10, size=30),
        num_classes=10,
        k=5,
        t=0.1,
    )
    assert ranked.shape == (9, 10)
    assert all(sorted(row) == list(range(10)) for row in ranked.tolist())


def test_default_chunk_stays_within_64_mb():
    chunk = default_chunk_size(50_000, itemsize=4)
    assert chunk * 50_000 * (4 + 8) <= 64 * 2**20
    assert default_chunk_size(10**9) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bank_labels=np.array([0, 1, 1, 3])), r"\[0, 3\)"),
        (dict(bank_labels=np.array([0, 1, 1, -1])), r"\[0, 3\)"),
        (dict(bank_labels=np.array([0, 1, 1])), "shape"),
        (dict(bank=np.ones((4, 3))), "share D"),
        (dict(k=0), "k >= 1"),
        (dict(t=0.0), "t > 0"),
        (dict(chunk_size=0), "chunk_size"),
    ],
)
def test_invalid_inputs_fail(kwargs, match):
    arguments = dict(features=QUERY, bank=BANK, bank_labels=BANK_LABELS, num_classes=3, k=3, t=0.1)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        knn_predict(**arguments)


def test_l2_normalize_rows():
    assert np.allclose(l2_normalize(np.array([[3.0, 4.0], [0.0, -2.0]])), [[0.6, 0.8], [0.0, -1.0]])


def test_l2_normalize_zero_vector_stays_zero():
    result = l2_normalize(np.zeros((1, 4), dtype=np.float32))
    assert not np.isnan(result).any()
    assert np.array_equal(result, np.zeros((1, 4)))
    assert result.dtype == np.float32


def test_l2_normalize_other_axis_and_tiny_norm():
    assert np.allclose(l2_normalize(np.array([[3.0], [4.0]]), axis=0), [[0.6], [0.8]])
    # Below eps the divisor is eps, as in torch.nn.functional.normalize.
    assert np.allclose(l2_normalize(np.array([[1e-13, 0.0]])), [[0.1, 0.0]])
