"""Per-epoch learning rate of the MoCo CIFAR demo.

Reproduces ``adjust_learning_rate`` of the demo notebook, which is called with
1-based epochs (``for epoch in range(1, epochs + 1)``), so the cosine schedule
reaches exactly 0 at the last epoch and never uses ``base_lr`` itself.
"""

import math
from typing import List, Sequence

__all__ = ["learning_rate", "learning_rates"]


def learning_rate(epoch: int, base_lr: float, epochs: int, cos: bool,
                  schedule: Sequence[int]) -> float:
    """Returns the learning rate used throughout one epoch.

    Args:
        epoch: 1-based epoch index, in ``[1, epochs]``.
        base_lr: Initial learning rate (``--lr``).
        epochs: Total number of epochs.
        cos: Use ``base_lr * 0.5 * (1 + cos(pi * epoch / epochs))``.
        schedule: Milestone epochs; each one with ``epoch >= milestone``
            multiplies the rate by 0.1. Ignored when ``cos`` is set.

    Returns:
        The learning rate for ``epoch``.

    Raises:
        ValueError: If ``epoch`` is outside ``[1, epochs]``.
    """
    if not 1 <= epoch <= epochs:
        raise ValueError(f"epoch must be in [1, {epochs}] (1-based), got {epoch}")
    lr = base_lr
    if cos:
        lr *= 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    else:
        # Multiply once per milestone, in order, so values match the reference bit for bit.
        for milestone in schedule:
            lr *= 0.1 if epoch >= milestone else 1.0
    return lr


def learning_rates(base_lr: float, epochs: int, cos: bool, schedule: Sequence[int],
                   steps_per_epoch: int = 1) -> List[float]:
    """Returns the learning rate of every step of training.

    Suited to MindSpore optimizers, which accept a per-step list of rates.

    Args:
        base_lr: Initial learning rate.
        epochs: Total number of epochs.
        cos: See ``learning_rate``.
        schedule: See ``learning_rate``.
        steps_per_epoch: Repeats each epoch's rate this many times; with the
            default of 1 the list holds one rate per epoch (index 0 = epoch 1).

    Returns:
        A list of ``epochs * steps_per_epoch`` floats.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    rates = []
    for epoch in range(1, epochs + 1):
        rates.extend([learning_rate(epoch, base_lr, epochs, cos, schedule)] * steps_per_epoch)
    return rates
