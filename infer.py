"""Evaluates a MoCo checkpoint: weighted kNN or a linear classifier on the frozen backbone.

    python infer.py --checkpoint RESULTS/model_last.ckpt --data-dir ./data
    python infer.py --checkpoint RESULTS/model_last.ckpt --protocol linear

The model settings come from the checkpoint; data and kNN settings from the ``config.yaml``
beside it, if any. kNN and linear-cached features are cached beside the checkpoint; the linear
protocol trains on augmented images and saves its classifier in --results-dir after each epoch.
"""

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Optional

from src.config import (
    ConfigError,
    add_evaluation_arguments,
    add_options,
    check_ranges,
    resolve_evaluation_args,
    script_parser,
    settings,
)
from src.data import DatasetError
from src.eval.evaluate import (
    EvalData,
    cached_linear_results,
    knn_results,
    linear_results,
    load_features,
)
from src.eval.lincls import classifier_path
from src.eval.linear_probe import LinearProbeConfig
from src.train.checkpoint import CheckpointError
from src.train.log import EVAL_NAME
from src.utils.device import DeviceError, set_device
from src.utils.io import write_json
from src.utils.progress import setup_logging

OPTIONS = [  # see src/config.py's table
    (
        "--protocol",
        str,
        "knn",
        "knn: weighted kNN on the embedding; linear: MoCo's linear classifier on the frozen "
        "backbone, augmented images; linear-cached: on un-augmented features extracted once",
        ["knn", "linear", "linear-cached"],
    ),
    ("--knn-k", int, None, "neighbours (default: the training config's)"),
    ("--knn-t", float, None, "kNN softmax temperature (default: the training config's)"),
    (
        "--results-dir",
        str,
        "",
        "folder of the results and the linear classifier; default: the checkpoint's",
    ),
    ("--output-json", str, "", "results file; empty: eval_<protocol>.json in --results-dir"),
    (
        "--resume",
        str,
        "",
        "linear: classifier checkpoint to continue; auto: --results-dir's, if any",
    ),
    "linear protocols (main_lincls.py's settings)",
    ("--linear-epochs", int, 100, "epochs"),
    ("--linear-lr", float, 30.0, "initial learning rate"),
    ("--linear-batch-size", int, 256, "features per step"),
    (
        "--linear-schedule",
        int,
        [60, 80],
        "0-based epochs where lr drops 10x (not with --linear-cos)",
    ),
    ("--linear-cos", bool, False, "cosine schedule instead"),
    ("--seed", int, 0, "seed of the classifier's initialisation and order"),
]


def create_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__.split("\n")[0])
    add_evaluation_arguments(parser)
    add_options(parser, OPTIONS)
    return parser


def _probe(args: argparse.Namespace) -> LinearProbeConfig:
    return LinearProbeConfig(
        epochs=args.linear_epochs,
        lr=args.linear_lr,
        batch_size=args.linear_batch_size,
        cos=args.linear_cos,
        schedule=tuple(args.linear_schedule),
        seed=args.seed,
    )


def evaluate(args: argparse.Namespace) -> dict:
    """``args.protocol`` on the checkpoint: the results to save."""
    start = time.perf_counter()
    data = settings(EvalData, args, use_cache=not args.no_cache)
    if args.protocol == "linear":
        results = linear_results(args.checkpoint, data, _probe(args), args.results_dir, args.resume)
    else:
        features = load_features(args.checkpoint, data)
        if args.protocol == "knn":
            results = knn_results(features, args.knn_k, args.knn_t)
        else:
            results = cached_linear_results(features, _probe(args))
        results.update(
            epoch=features.epoch,
            num_classes=features.queries.num_classes,
            num_train_images=len(features.bank),
            num_test_images=len(features.queries),
            features_from_cache=features.from_cache,
            seconds_features=round(features.seconds, 1),
        )
    return {
        "protocol": args.protocol,
        **results,
        "checkpoint": os.path.abspath(args.checkpoint),
        "dataset": args.dataset,
        "seconds": round(time.perf_counter() - start, 1),
    }


def prepare_results_dir(args: argparse.Namespace) -> None:
    """Resolves ``--results-dir`` and ``--resume auto``; a folder that cannot be written fails
    now, not after the training of a linear classifier."""
    args.results_dir = args.results_dir or os.path.dirname(os.path.abspath(args.checkpoint))
    try:
        os.makedirs(args.results_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.results_dir):
            pass
    except OSError as err:
        raise ConfigError(f"--results-dir {args.results_dir} cannot be written: {err}") from err
    if args.resume == "auto":
        found = classifier_path(args.results_dir)
        args.resume = found if os.path.isfile(found) else ""
    elif args.resume and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume: classifier checkpoint not found: {args.resume}")


def summary(results: dict) -> str:
    if results["protocol"] == "knn":
        name, prefix = f"kNN (k={results['k']}, t={results['t']})", "knn"
    else:
        name, prefix = results["protocol"], "linear"
    top1, top5 = results[f"{prefix}_top1"], results[f"{prefix}_top5"]
    head = f"{name} top-1 {top1:.2f}% top-5 {top5:.2f}%"
    return (
        f"{head} on {results['num_test_images']} {results['dataset']} test images "
        f"(bank/train: {results['num_train_images']}), epoch {results['epoch']}, "
        f"{results['seconds']:.0f}s"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    logger = setup_logging()
    args = create_parser().parse_args(argv)
    try:
        resolve_evaluation_args(args, more=("knn_k", "knn_t"))
        check_ranges(args, "knn_k knn_t linear_epochs linear_lr linear_batch_size")
        set_device(args.device_target, args.mode)
        prepare_results_dir(args)
        results = evaluate(args)
        output = args.output_json or os.path.join(args.results_dir, EVAL_NAME.format(args.protocol))
        write_json(output, results)
    except (ConfigError, DatasetError, CheckpointError, DeviceError, OSError) as err:
        logger.error("error: %s", err)
        return 2
    print(summary(results))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
