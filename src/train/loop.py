"""The training loop: epochs of compiled steps, kNN monitor, CSV log and checkpoint."""

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import nn

from ..utils.distributed import ONE_DEVICE, Group
from ..utils.progress import Progress, logger
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .log import LOG_NAME, append_log, restart_log
from .schedule import learning_rate, moco_momentum, warmup_cosine_lr
from .step import set_learning_rate


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


@dataclass(frozen=True)
class TrainSettings:
    """What :func:`fit` needs to know of a run; ``batch_size`` is the global batch."""

    epochs: int
    lr: float
    cos: bool
    schedule: tuple[int, ...]
    batch_size: int
    seed: int
    results_dir: str
    resume: str = ""
    max_steps: int = 0  # > 0: stop each epoch after this many steps
    knn_interval: int = 1  # epochs between kNN monitors; 0: none
    method: str = "v1"  # v3: lr and momentum per step, from the fractional epoch
    warmup_epochs: int = 0
    moco_m: float = 0.99
    moco_m_cos: bool = False

    def lr_at(self, epoch: float) -> float:
        """v1: the rate of a whole 1-based epoch; v3: at the fractional 0-based ``epoch``."""
        if self.method == "v3":
            return warmup_cosine_lr(epoch, self.lr, self.epochs, self.warmup_epochs)
        return learning_rate(epoch, self.lr, self.epochs, self.cos, self.schedule)

    def momentum_at(self, epoch: float) -> float:
        """v3's key-encoder momentum at the fractional 0-based ``epoch``."""
        return moco_momentum(epoch, self.moco_m, self.epochs) if self.moco_m_cos else self.moco_m


class Callback:
    """Hooks into :func:`fit`, each a no-op here: subclass and override what you need."""

    def on_step_begin(self, epoch: int, step: int, images: tuple) -> tuple:
        """Before step ``step`` (1-based) of ``epoch``: returns the ``(im_1, im_2)`` to train on."""
        return images

    def on_checkpoint_written(self, epoch: int, tmp_path: str) -> None:
        """The checkpoint is in its temporary file, not yet renamed over the last one."""

    def on_epoch_end(self, epoch: int) -> None:
        """The epoch's log row and checkpoint are written."""


def shuffle_permutations(seed: int, epoch: int, steps: int, batch_size: int) -> np.ndarray:
    """Shuffle-BN permutations of one epoch: ``steps`` x 2 x N, a function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, 1])
    permutations = [[rng.permutation(batch_size) for _ in range(2)] for _ in range(steps)]
    return np.stack(permutations).astype(np.int32)


def train_one_epoch(
    train_step: nn.Cell,
    dataset: ds.Dataset,
    epoch: int,
    settings: TrainSettings,
    callbacks: Sequence[Callback] = (),
) -> tuple[float, float]:
    """Sets the learning rate (each epoch; v3: each step) and runs the step over the batches.

    Returns ``(mean loss, seconds)``. Raises NonFiniteLossError naming the step, unless a
    float16 loss scale skipped it (while the scale, halved at each overflow, is >= 1).
    """
    lr = settings.lr_at(epoch if settings.method == "v1" else epoch - 1)  # v3: at every step
    set_learning_rate(train_step.optimizer, lr)
    steps = dataset.get_dataset_size()
    steps = min(steps, settings.max_steps) if settings.max_steps else steps
    permutations = shuffle_permutations(settings.seed, epoch, steps, settings.batch_size)
    train_step.set_train(True)
    progress = Progress(steps, f"Train [{epoch}/{settings.epochs}]", settings.batch_size)
    total_loss, overflows = 0.0, 0
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    for step, images in zip(range(steps), iterator):
        for callback in callbacks:
            images = callback.on_step_begin(epoch, step + 1, images)
        if settings.method == "v3":  # main_moco.py: epoch + i / iters_per_epoch, 0-based
            lr = settings.lr_at(epoch - 1 + step / steps)
            set_learning_rate(train_step.optimizer, lr)
            third = ms.Tensor(settings.momentum_at(epoch - 1 + step / steps), ms.float32)
        else:
            third = ms.Tensor(permutations[step])  # shuffle BN's
        loss, grads_finite = train_step(*map(ms.Tensor, images), third)
        loss = float(loss.asnumpy())
        finite = math.isfinite(loss) and bool(grads_finite.asnumpy())
        scale = train_step.current_loss_scale()  # None in float32: nothing is skipped
        if not (finite or scale is not None and scale >= 1.0):
            progress.close()
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) or gradients at epoch {epoch}, step {step + 1}/{steps}"
            )
        overflows += not finite
        total_loss += loss if finite else 0.0
        progress.update(loss=total_loss / max(step + 1 - overflows, 1), lr=lr)
    seconds = progress.close()
    if overflows:
        logger.info(
            "epoch %d: %d of %d steps overflowed in float16 and were skipped (loss scale now %g)",
            *(epoch, overflows, steps, train_step.current_loss_scale()),
        )
    return total_loss / max(steps - overflows, 1), seconds


def _resume(train_step: nn.Cell, settings: TrainSettings, model: Mapping[str, Any]) -> int:
    """The first epoch to train: 1, or the one after ``settings.resume``'s, restored."""
    if not settings.resume:
        return 1
    start_epoch = load_checkpoint(train_step, settings.resume, model) + 1
    logger.info("resumed from %s: continuing at epoch %d", settings.resume, start_epoch)
    return start_epoch


def fit(
    train_step: nn.Cell,
    epoch_data: Callable[[int], ds.Dataset],
    settings: TrainSettings,
    model: Mapping[str, Any],
    monitor: Optional[Callable[[], float]] = None,
    group: Group = ONE_DEVICE,
    callbacks: Sequence[Callback] = (),
) -> None:
    """Trains from ``settings.resume`` (if set) to ``settings.epochs``, into ``results_dir``.

    ``epoch_data(epoch)`` is an epoch's dataset (this device's shard); ``model``: the settings
    checkpoints record. After each epoch: ``monitor()`` (kNN top-1) every ``knn_interval``
    epochs, a row of ``log.csv``, the checkpoint. Only the main device of ``group`` writes.
    """
    log_path = os.path.join(settings.results_dir, LOG_NAME)
    checkpoint_path = os.path.join(settings.results_dir, CHECKPOINT_NAME)
    start_epoch = _resume(train_step, settings, model)
    monitor = monitor if settings.knn_interval else None
    write = group.is_main
    if write:
        restart_log(log_path, start_epoch)
    if start_epoch == 1 and monitor:
        top1 = monitor()
        logger.info("epoch 0 (initialisation): kNN top-1 %.2f%%", top1)
        if write:
            append_log(log_path, epoch=0, lr="", loss="", knn_top1=f"{top1:.2f}", seconds="")

    for epoch in range(start_epoch, settings.epochs + 1):
        loss, seconds = train_one_epoch(train_step, epoch_data(epoch), epoch, settings, callbacks)
        lr = settings.lr_at(epoch)
        top1 = ""
        if monitor and (epoch % settings.knn_interval == 0 or epoch == settings.epochs):
            top1 = f"{monitor():.2f}"
        logger.info(
            "epoch %d/%d lr %.5f loss %.4f kNN top-1 %s%% (%.0fs)",
            *(epoch, settings.epochs, lr, loss, top1 or "-", seconds),
        )
        if not write:
            continue
        # Log first, then checkpoint: a resume drops log rows the checkpoint does not cover.
        row = dict(lr=f"{lr:.6g}", loss=f"{loss:.6f}", knn_top1=top1, seconds=f"{seconds:.1f}")
        append_log(log_path, epoch=epoch, **row)

        def on_written(tmp, epoch=epoch):
            for callback in callbacks:
                callback.on_checkpoint_written(epoch, tmp)

        save_checkpoint(train_step, checkpoint_path, epoch, model, on_written)
        for callback in callbacks:
            callback.on_epoch_end(epoch)
