"""Two-view train pipeline throughput (img/s and CPU time) on the CIFAR-10 train split.

    python -m benchmarks.pipeline [--data-dir ../shared/data] [--batch-size 512] [--quick]

``--repeats`` rounds (each a new epoch: other images and draws) of ``--batches`` timed batches.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import mindspore.dataset as ds

from src.data import create_augmentation, create_train_dataset, load_data


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
    parser.add_argument("--repeats", type=int, default=5, help="rounds")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 batches, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.repeats = 3, 3
    needed = (args.batches + 1) * args.batch_size
    split = load_data("cifar10", args.data_dir).pretrain
    if len(split) < needed:
        parser.error(f"the split has {len(split)} images, {needed} are needed")
    augmentation = create_augmentation("cifar10", 32, aug_plus=False)
    rates, cpu = [], []
    for round_ in range(args.repeats):
        build = partial(
            create_train_dataset, split, augmentation, args.batch_size, 0, round_ + 1, args.workers
        )
        rate, cpu_ms = measure(build, args.batches, args.batch_size)
        rates.append(rate)
        cpu.append(cpu_ms)
        print(f"round {round_ + 1}: {rate:.0f} img/s")
    print(
        f"batch {args.batch_size}, workers {args.workers}, {args.batches} batches x "
        f"{args.repeats} rounds; medians: {statistics.median(rates):.0f} img/s "
        f"({min(rates):.0f}-{max(rates):.0f}), {statistics.median(cpu):.0f} CPU ms per 1000 img"
    )


if __name__ == "__main__":
    main()
