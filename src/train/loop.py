"""The training loop: epochs of compiled steps, kNN monitor, CSV log and checkpoint."""

import argparse
import csv
import math
import os
from typing import Callable, Optional

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import nn

from ..data import CifarSplit, create_train_dataset, dataset_info
from ..data.transforms import BLUR_MIN_SIZE, CROP_SCALE, CROP_SCALE_V2
from ..utils import faults
from ..utils.distributed import ONE_DEVICE, Group
from ..utils.progress import Progress, logger
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .schedule import learning_rate
from .step import set_learning_rate

LOG_NAME = "log.csv"
LOG_FIELDS = ("epoch", "lr", "loss", "knn_top1", "seconds")


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


def shuffle_permutations(seed: int, epoch: int, steps: int, batch_size: int) -> np.ndarray:
    """Shuffle-BN permutations of one epoch: ``steps`` x 2 x N, a function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, 1])
    permutations = [[rng.permutation(batch_size) for _ in range(2)] for _ in range(steps)]
    return np.stack(permutations).astype(np.int32)


def train_one_epoch(
    train_step: nn.Cell,
    dataset: ds.Dataset,
    epoch: int,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int,
    max_steps: int = 0,
) -> tuple[float, float]:
    """Runs the compiled step over one epoch's batches (``im_1``, ``im_2``); ``max_steps`` > 0
    stops early. Returns ``(mean loss, seconds)``; raises NonFiniteLossError naming the step.

    Shuffle-BN permutations of the global ``batch_size`` derive from ``(seed, epoch)``; ``lr``
    is for display only.
    """
    steps = dataset.get_dataset_size()
    if max_steps:
        steps = min(steps, max_steps)
    permutations = shuffle_permutations(seed, epoch, steps, batch_size)
    train_step.set_train(True)
    progress = Progress(steps, f"Train [{epoch}/{epochs}]", batch_size)
    total_loss, overflows = 0.0, 0
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    for step, (im_1, im_2) in enumerate(iterator):
        if step == steps:
            break
        faults.kill_if_requested(f"step:{epoch}:{step + 1}")
        for value, name in ((np.nan, "nan"), (np.inf, "inf")):
            if faults.requested(f"{name}:step:{epoch}:{step + 1}"):
                im_1 = im_1 * value
        loss, grads_finite = train_step(
            ms.Tensor(im_1), ms.Tensor(im_2), ms.Tensor(permutations[step])
        )
        loss = float(loss.asnumpy())
        finite = math.isfinite(loss) and bool(grads_finite.asnumpy())
        if not (finite or _skipped_overflow(train_step)):
            progress.close()
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) or gradients at epoch {epoch}, step {step + 1}/{steps}"
            )
        overflows += not finite
        total_loss += loss if finite else 0.0
        progress.update(loss=total_loss / max(step + 1 - overflows, 1), lr=lr)
    seconds = progress.close()
    if overflows:
        scale = float(train_step.loss_scale.loss_scale.asnumpy())
        logger.info(
            "epoch %d: %d of %d steps overflowed in float16 and were skipped (loss scale now %g)",
            epoch, overflows, steps, scale,
        )  # fmt: skip
    return total_loss / max(steps - overflows, 1), seconds


def _skipped_overflow(train_step: nn.Cell) -> bool:
    """Whether a non-finite step was a float16 overflow that the loss scale skipped: with loss
    scaling, while the scale (halved at each overflow) has not fallen below 1."""
    scale = getattr(train_step, "loss_scale", None)
    return scale is not None and float(scale.loss_scale.asnumpy()) >= 1.0


def restart_log(path: str, start_epoch: int) -> None:
    """Keeps the log rows of finished epochs (those before ``start_epoch``) only."""
    rows = []
    if start_epoch > 0 and os.path.isfile(path):
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["epoch"]) < start_epoch]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def append_log(path: str, **row) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, LOG_FIELDS).writerow(row)


def read_log(path: str) -> list[dict]:
    """The rows of a ``log.csv``; raises ValueError if it lacks the columns."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(LOG_FIELDS) - set(rows[0]):
        raise ValueError(f"{path} has no rows with the columns {', '.join(LOG_FIELDS)}")
    return rows


def fit(
    train_step: nn.Cell,
    train_split: CifarSplit,
    args: argparse.Namespace,
    monitor: Optional[Callable[[], float]] = None,
    group: Group = ONE_DEVICE,
) -> None:
    """Trains from ``args.resume`` (if set) to ``args.epochs``, into ``args.results_dir``.

    After each epoch: ``monitor()`` (kNN top-1) every ``args.knn_interval`` epochs, a row of
    ``log.csv``, then the checkpoint. Epoch 0 of the log is the monitor at initialisation.
    Every device of ``group`` trains on its shard of each batch and runs the monitor; only the
    main one writes.
    """
    info = dataset_info(args.dataset)
    blur = args.aug_plus and args.image_size >= BLUR_MIN_SIZE  # see BLUR_MIN_SIZE
    log_path = os.path.join(args.results_dir, LOG_NAME)
    checkpoint_path = os.path.join(args.results_dir, CHECKPOINT_NAME)
    start_epoch = 1
    if args.resume:
        start_epoch = load_checkpoint(train_step, args.resume, args) + 1
        logger.info("resumed from %s: continuing at epoch %d", args.resume, start_epoch)
    if group.is_main:
        restart_log(log_path, start_epoch)
    monitor = monitor if args.knn_interval else None

    if start_epoch == 1 and monitor:
        top1 = monitor()
        logger.info("epoch 0 (initialisation): kNN top-1 %.2f%%", top1)
        if group.is_main:
            append_log(log_path, epoch=0, lr="", loss="", knn_top1=f"{top1:.2f}", seconds="")

    for epoch in range(start_epoch, args.epochs + 1):
        lr = learning_rate(epoch, args.lr, args.epochs, args.cos, args.schedule)
        set_learning_rate(train_step.optimizer, lr)
        dataset = create_train_dataset(
            train_split,
            info.mean,
            info.std,
            args.batch_size,
            args.seed,
            epoch,
            args.workers,
            group.rank,
            group.size,
            CROP_SCALE_V2 if args.aug_plus else CROP_SCALE,
            args.image_size,
            blur,
        )
        loss, seconds = train_one_epoch(
            train_step, dataset, epoch, args.epochs, lr, args.seed, args.batch_size, args.max_steps
        )
        top1 = ""
        if monitor and (epoch % args.knn_interval == 0 or epoch == args.epochs):
            top1 = f"{monitor():.2f}"
        logger.info(
            "epoch %d/%d lr %.5f loss %.4f kNN top-1 %s%% (%.0fs)",
            epoch,
            args.epochs,
            lr,
            loss,
            top1 or "-",
            seconds,
        )
        if not group.is_main:
            continue
        # Log first, then checkpoint: a resume drops log rows the checkpoint does not cover.
        append_log(
            log_path,
            epoch=epoch,
            lr=f"{lr:.6g}",
            loss=f"{loss:.6f}",
            knn_top1=top1,
            seconds=f"{seconds:.1f}",
        )
        save_checkpoint(train_step, checkpoint_path, epoch, args)
        faults.kill_if_requested(f"epoch-end:{epoch}")
