"""Two-view train pipeline img/s, the old augmentation (baseline) against the current one.

    python -m benchmarks.pipeline [--data-dir ../shared/data] [--batch-size 512] [--quick]

The two alternate over ``--repeats`` rounds of ``--batches`` timed batches; medians and ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import mindspore.dataset as ds
import mindspore.dataset.transforms as transforms
import mindspore.dataset.vision as vision

from src.data import CifarSplit, create_train_dataset, epoch_order, get_dataset_spec, load_cifar
from src.data.loaders import augmentation_seed, two_view_dataset
from src.data.transforms import (
    BRIGHTNESS,
    COLOR_JITTER_PROB,
    CONTRAST,
    CROP_RATIO,
    CROP_SCALE,
    CROP_SIZE,
    FLIP_PROB,
    GRAYSCALE_PROB,
    HUE,
    SATURATION,
    to_normalized_chw,
)


def baseline_train_transforms(mean: Sequence[float], std: Sequence[float]) -> list:
    """The old per-view ops. MindSpore seeds each random op from the one global seed, so they
    draw the same numbers in lockstep (flip, jitter and grayscale decisions coupled).
    """
    return [
        vision.RandomResizedCrop(
            CROP_SIZE, scale=CROP_SCALE, ratio=CROP_RATIO, interpolation=vision.Inter.BILINEAR
        ),
        vision.RandomHorizontalFlip(FLIP_PROB),
        transforms.RandomApply(
            [vision.RandomColorAdjust(BRIGHTNESS, CONTRAST, SATURATION, HUE)],
            prob=COLOR_JITTER_PROB,
        ),
        transforms.RandomApply(
            [
                vision.ConvertColor(vision.ConvertMode.COLOR_RGB2GRAY),
                vision.ConvertColor(vision.ConvertMode.COLOR_GRAY2RGB),
            ],
            prob=GRAYSCALE_PROB,
        ),
        *to_normalized_chw(mean, std),
    ]


def create_baseline_train_dataset(
    split: CifarSplit,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    seed: int,
    epoch: int,
    workers: int = 1,
) -> ds.Dataset:
    """``create_train_dataset`` as it was: same order and seed, the old augmentation."""
    order = epoch_order(len(split), seed, epoch)
    ds.config.set_seed(augmentation_seed(seed, epoch))
    transforms_ = baseline_train_transforms(mean, std)
    return two_view_dataset(split.images, order, transforms_, batch_size, workers)


def measure(build: Callable[[], ds.Dataset], batches: int, batch_size: int) -> tuple[float, float]:
    """Images (pairs of views) per second over ``batches`` batches after a first (warm-up) one,
    and the process's CPU milliseconds per 1000 images (all threads), steadier on a busy host.
    """
    iterator = build().create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(iterator)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return batches * batch_size / wall, cpu * 1e6 / (batches * batch_size)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (pipelines alternate)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 batches, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.repeats = 3, 3
    needed = (args.batches + 1) * args.batch_size
    split = load_cifar("cifar10", args.data_dir, "train")
    if len(split) < needed:
        parser.error(f"the split has {len(split)} images, {needed} are needed")
    spec = get_dataset_spec("cifar10")
    builders = {"old": create_baseline_train_dataset, "new": create_train_dataset}
    rates: dict[str, list[float]] = {name: [] for name in builders}
    cpu: dict[str, list[float]] = {name: [] for name in builders}
    for round_ in range(args.repeats):
        for name, create in builders.items():
            epoch = round_ + 1  # another epoch each round: other images and draws
            build = partial(create, split, spec.mean, spec.std, args.batch_size, 0, epoch)
            rate, cpu_ms = measure(partial(build, args.workers), args.batches, args.batch_size)
            rates[name].append(rate)
            cpu[name].append(cpu_ms)
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {r[-1]:.0f}" for n, r in rates.items()))
    print(
        f"batch {args.batch_size}, workers {args.workers}, {args.batches} batches x "
        f"{args.repeats} rounds; medians:"
    )
    print(f"  {'':5}{'img/s (min-max)':<22}CPU ms per 1000 img")
    for name in builders:
        low, high = min(rates[name]), max(rates[name])
        spread = f"{statistics.median(rates[name]):.0f} ({low:.0f}-{high:.0f})"
        print(f"  {name + ':':5}{spread:<22}{statistics.median(cpu[name]):.0f}")
    ratio = statistics.median(rates["new"]) / statistics.median(rates["old"])
    cpu_ratio = statistics.median(cpu["new"]) / statistics.median(cpu["old"])
    print(f"  new / old: img/s {ratio:.2f}, CPU per image {cpu_ratio:.2f}")


if __name__ == "__main__":
    main()
