"""Evaluates a MoCo checkpoint on CIFAR: weighted kNN or linear probe on frozen features.

    python infer.py --checkpoint RESULTS/model_last.ckpt --data-dir ./data
    python infer.py --checkpoint RESULTS/model_last.ckpt --protocol linear

The model settings come from the checkpoint; data and kNN settings from the
``config.yaml`` beside it, if any. Features of both whole splits are extracted
once and cached beside the checkpoint for later runs of either protocol and
of visualize.py.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Optional

from src.config import ConfigError, add_evaluation_arguments, resolve_evaluation_args
from src.data import DatasetError
from src.eval.evaluate import evaluate
from src.train.checkpoint import CheckpointError
from src.utils.device import DeviceError, set_device
from src.utils.io import write_json
from src.utils.progress import setup_logging


def create_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate a MoCo checkpoint: weighted kNN or linear probe on frozen features",
        allow_abbrev=False,
    )
    add_evaluation_arguments(parser)
    parser.add_argument(
        "--protocol",
        default="knn",
        choices=["knn", "linear"],
        help="knn: weighted kNN on the normalised embedding; linear: linear "
        "classifier on the 512-d backbone features (default: knn)",
    )
    parser.add_argument(
        "--knn-k", type=int, default=None, help="neighbours (default: the config's)"
    )
    parser.add_argument(
        "--knn-t", type=float, default=None, help="kNN softmax temperature (default: the config's)"
    )
    parser.add_argument(
        "--output-json",
        default="",
        help="results file (default: eval_<protocol>.json beside the checkpoint)",
    )
    group = parser.add_argument_group("linear protocol (main_lincls.py's settings)")
    group.add_argument("--linear-epochs", type=int, default=100, help="epochs (default: 100)")
    group.add_argument(
        "--linear-lr", type=float, default=30.0, help="initial learning rate (default: 30)"
    )
    group.add_argument(
        "--linear-batch-size", type=int, default=256, help="features per step (default: 256)"
    )
    group.add_argument(
        "--linear-schedule",
        type=int,
        nargs="*",
        default=[60, 80],
        help="0-based epochs where lr drops 10x, ignored with --linear-cos (default: 60 80)",
    )
    group.add_argument("--linear-cos", action="store_true", help="cosine schedule instead")
    group.add_argument(
        "--seed", type=int, default=0, help="seed of the classifier init and order (default: 0)"
    )
    return parser


def summary(results: dict) -> str:
    if results["protocol"] == "knn":
        head = (
            f"kNN (k={results['k']}, t={results['t']}) top-1 {results['knn_top1']:.2f}% "
            f"top-5 {results['knn_top5']:.2f}%"
        )
    else:
        head = f"linear top-1 {results['linear_top1']:.2f}% top-5 {results['linear_top5']:.2f}%"
    return (
        f"{head} on {results['num_test_images']} {results['dataset']} test images "
        f"(bank/train: {results['num_train_images']}), epoch {results['epoch']}, "
        f"{results['seconds']:.0f}s"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    logger = setup_logging()
    args = create_parser().parse_args(argv)
    try:
        resolve_evaluation_args(args)
        set_device(args.device_target, args.mode)
        results = evaluate(args, logger)
        output = args.output_json or os.path.join(
            os.path.dirname(os.path.abspath(args.checkpoint)), f"eval_{args.protocol}.json"
        )
        write_json(output, results)
    except (ConfigError, DatasetError, CheckpointError, DeviceError, OSError) as err:
        logger.error("error: %s", err)
        return 2
    print(summary(results))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
