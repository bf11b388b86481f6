"""Tests for src.train.schedule against the demo's adjust_learning_rate."""

import math

import pytest

from src.train.schedule import learning_rate


def reference_adjust_learning_rate(epoch, lr, epochs, cos, schedule):
    """The demo notebook's adjust_learning_rate, minus the optimizer."""
    if cos:
        lr *= 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    else:
        for milestone in schedule:
            lr *= 0.1 if epoch >= milestone else 1.0
    return lr


def test_cosine_at_first_epoch():
    assert learning_rate(1, 0.06, 200, True, []) == 0.06 * 0.5 * (1 + math.cos(math.pi / 200))


def test_cosine_at_half_is_half_the_base_rate():
    assert learning_rate(100, 0.06, 200, True, []) == pytest.approx(0.03, abs=1e-17)


def test_cosine_at_last_epoch_is_zero():
    assert learning_rate(200, 0.06, 200, True, []) == 0.0


def test_cosine_ignores_schedule():
    assert learning_rate(150, 0.06, 200, True, [120, 160]) == learning_rate(
        150, 0.06, 200, True, []
    )


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (1, 0.06),
        (119, 0.06),
        (120, 0.06 * 0.1),
        (159, 0.06 * 0.1),
        (160, 0.06 * 0.1 * 0.1),
        (200, 0.06 * 0.1 * 0.1),
    ],
)
def test_step_schedule_drops_tenfold_at_each_milestone(epoch, expected):
    assert learning_rate(epoch, 0.06, 200, False, [120, 160]) == expected


def test_empty_schedule_without_cos_is_constant():
    assert [learning_rate(e, 0.06, 5, False, []) for e in range(1, 6)] == [0.06] * 5


@pytest.mark.parametrize("cos, schedule", [(True, []), (False, [120, 160]), (False, [1, 3])])
def test_every_epoch_matches_reference(cos, schedule):
    rates = [learning_rate(e, 0.06, 200, cos, schedule) for e in range(1, 201)]
    assert rates == [
        reference_adjust_learning_rate(e, 0.06, 200, cos, schedule) for e in range(1, 201)
    ]


@pytest.mark.parametrize("epoch", [0, 201])
def test_epoch_outside_one_based_range_fails(epoch):
    with pytest.raises(ValueError, match="1-based"):
        learning_rate(epoch, 0.06, 200, True, [])
