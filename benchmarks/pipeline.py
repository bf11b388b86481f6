"""Two-view train pipeline throughput (img/s and CPU time) on the CIFAR-10 train split:
``--repeats`` rounds (each a new epoch: other images and draws) of ``--batches`` timed batches.

    python -m benchmarks.pipeline [--data-dir ../shared/data] [--batch-size 512] [--quick]
"""

import argparse
import statistics

from benchmarks.workers import cifar10_epochs, iterate


def main(argv=None) -> None:
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
    build = cifar10_epochs(args.data_dir, args.batch_size, args.workers)
    images = args.batches * args.batch_size  # timed per round
    if (steps := build(1).get_dataset_size()) <= args.batches:
        parser.error(f"an epoch has {steps} batches, {args.batches + 1} are needed")
    rates, cpu = [], []
    for round_ in range(1, args.repeats + 1):
        wall, cpu_s = iterate(build(round_), args.batches)
        rates.append(images / wall)
        cpu.append(cpu_s * 1e6 / images)
        print(f"round {round_}: {rates[-1]:.0f} img/s")
    print(
        f"batch {args.batch_size}, workers {args.workers}, {args.batches} batches x "
        f"{args.repeats} rounds; medians: {statistics.median(rates):.0f} img/s "
        f"({min(rates):.0f}-{max(rates):.0f}), {statistics.median(cpu):.0f} CPU ms per 1000 img"
    )


if __name__ == "__main__":
    main()
