"""Per-epoch learning rate of the MoCo CIFAR demo.

Reproduces ``adjust_learning_rate`` of the demo notebook, which is called with
1-based epochs (``for epoch in range(1, epochs + 1)``), so the cosine schedule
reaches exactly 0 at the last epoch and never uses ``base_lr`` itself.
"""

import math
from collections.abc import Sequence


def learning_rate(
    epoch: int, base_lr: float, epochs: int, cos: bool, schedule: Sequence[int]
) -> float:
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


def warmup_cosine_lr(epoch: float, lr: float, epochs: int, warmup_epochs: int) -> float:
    """MoCo v3's rate (``adjust_learning_rate`` of its main_moco.py) at the fractional 0-based
    ``epoch + i / iters_per_epoch``: a linear warmup from 0 over ``warmup_epochs``, then a
    half-cycle cosine down to 0 at ``epochs``."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


def moco_momentum(epoch: float, m: float, epochs: int) -> float:
    """MoCo v3's momentum (``adjust_moco_momentum``, ``--moco-m-cos``) at the fractional 0-based
    ``epoch``: from ``m`` at epoch 0 up to 1 at ``epochs``, a half-cycle cosine."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) * (1.0 - m)
