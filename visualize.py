"""Figures of a MoCo run: nearest-neighbour retrieval of test images, and training curves.

    python visualize.py --checkpoint RESULTS/model_last.ckpt --data-dir ./data
    python visualize.py --curves RESULTS/

Retrieval ranks the training set by cosine similarity of the normalised
embedding (the kNN monitor's features) and reuses infer.py's feature cache.
The curves come from RESULTS/log.csv written by main.py.
"""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Optional

import numpy as np

from src.config import (
    CONFIG_NAME,
    ConfigError,
    add_evaluation_arguments,
    load_config_file,
    resolve_evaluation_args,
)
from src.data import DatasetError
from src.eval.evaluate import load_features
from src.eval.retrieval import rank_by_similarity
from src.train.checkpoint import CheckpointError
from src.train.loop import LOG_NAME, read_log
from src.utils.device import DeviceError, set_device
from src.utils.figures import (
    RetrievalRow,
    Tile,
    retrieval_grid_figure,
    save_figure,
    training_curves_figure,
)
from src.utils.progress import setup_logging

DEMO_RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "cifar10.yaml")
RECIPE_KEYS = {"dataset", "arch", "lr", "epochs", "cos", "batch_size", "wd", "moco-dim", "moco-k",
               "moco-m", "moco-t", "bn-splits", "symmetric"}  # fmt: skip


def create_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Draw the retrieval grid of a checkpoint or the training curves of a run",
        allow_abbrev=False,
    )
    add_evaluation_arguments(parser, checkpoint_required=False)
    parser.add_argument(
        "--curves",
        default="",
        metavar="RESULTS",
        help="plot loss and kNN top-1 per epoch from RESULTS/log.csv instead",
    )
    parser.add_argument(
        "--num-queries", type=int, default=3, help="random test images to query (default: 3)"
    )
    parser.add_argument(
        "--query-index",
        type=int,
        nargs="+",
        default=None,
        help="test-set indices to query instead of random ones",
    )
    parser.add_argument(
        "--topk", type=int, default=5, help="most / least similar images shown (default: 5)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random queries (default: 0)"
    )
    parser.add_argument(
        "--output",
        default="",
        help="PNG path (default: retrieval.png or training_curve.png in the results folder)",
    )
    return parser


def choose_queries(args: argparse.Namespace, num_test: int) -> np.ndarray:
    """Test indices to query: the given ones, or ``--num-queries`` distinct random ones."""
    if args.query_index:
        bad = [i for i in args.query_index if not 0 <= i < num_test]
        if bad:
            raise ConfigError(f"--query-index {bad} outside the test set [0, {num_test})")
        return np.array(args.query_index)
    if not 1 <= args.num_queries <= num_test:
        raise ConfigError(f"--num-queries must be in [1, {num_test}], got {args.num_queries}")
    return np.sort(
        np.random.default_rng(args.seed).choice(num_test, args.num_queries, replace=False)
    )


def draw_retrieval(args: argparse.Namespace, logger: logging.Logger) -> str:
    if args.topk < 1:
        raise ConfigError(f"--topk must be positive, got {args.topk}")
    resolve_evaluation_args(args)
    set_device(args.device_target, args.mode)
    features = load_features(args, logger)
    queries = choose_queries(args, len(features.test))
    bank = features.train_features["embedding"]
    ranking = rank_by_similarity(features.test_features["embedding"][queries], bank, args.topk)
    classes = features.test.classes

    def tiles(indices, scores, query_label):
        return [
            Tile(
                features.train.images[i],
                f"{classes[features.train.labels[i]]}\n{s:.3f}",
                same_class=bool(features.train.labels[i] == query_label),
            )
            for i, s in zip(indices, scores)
        ]

    rows = []
    for row, query in enumerate(queries):
        label = features.test.labels[query]
        rows.append(
            RetrievalRow(
                query=Tile(features.test.images[query], f"test #{query}\n{classes[label]}"),
                nearest=tiles(ranking.nearest[row], ranking.nearest_scores[row], label),
                farthest=tiles(ranking.farthest[row], ranking.farthest_scores[row], label),
            )
        )
    title = (
        f"{args.dataset}: {os.path.basename(args.checkpoint)} (epoch {features.epoch}), "
        f"bank of {len(features.train)} train images, cosine similarity of the "
        f"{bank.shape[1]}-d embedding; green: same class as the query"
    )
    figure = retrieval_grid_figure(rows, args.topk, title)
    results_dir = os.path.dirname(os.path.abspath(args.checkpoint))
    return save_figure(figure, args.output or os.path.join(results_dir, "retrieval.png"))


def read_training_log(path: str):
    """Epochs with a loss and epochs with a kNN accuracy, from main.py's log.csv; an epoch
    without a monitor value takes infer.py's kNN (``eval_knn.json`` beside it), if it has one.
    """
    if not os.path.isfile(path):
        raise ConfigError(
            f"training log not found: {path} (main.py writes log.csv into its results folder)"
        )
    try:
        rows = read_log(path)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    loss = [(int(r["epoch"]), float(r["loss"])) for r in rows if r["loss"]]
    knn = [(int(r["epoch"]), float(r["knn_top1"])) for r in rows if r["knn_top1"]]
    evaluated = os.path.join(os.path.dirname(path), "eval_knn.json")
    if os.path.isfile(evaluated):
        with open(evaluated) as f:
            result = json.load(f)
        if result.get("epoch") not in {epoch for epoch, _ in knn}:
            knn = sorted([*knn, (int(result["epoch"]), float(result["knn_top1"]))])
    return loss, knn


def run_description(results_dir: str) -> str:
    """Two lines on the run's recipe, from its config.yaml if there is one."""
    name = os.path.basename(os.path.normpath(results_dir))
    path = os.path.join(results_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        return name
    config = load_config_file(path)
    images = f"first {config['train_subset']}" if config.get("train_subset") else "all"
    tests = config.get("test_subset") or "all"
    return (
        f"{name}: {config.get('dataset')}, {images} train images, "
        f"batch {config.get('batch_size')}, lr {config.get('lr')}, "
        f"moco-k {config.get('moco_k')}, "
        f"{config.get('epochs')} epochs\nkNN monitor: k={config.get('knn_k')}, "
        f"bank = those train images, {tests} test images"
    )


def is_demo_recipe(results_dir: str) -> bool:
    """The run's config.yaml has the demo's recipe (configs/cifar10.yaml) on the whole set."""
    path = os.path.join(results_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        return False
    run, demo = load_config_file(path), load_config_file(DEMO_RECIPE)
    recipe = {key.replace("-", "_"): value for key, value in demo.items() if key in RECIPE_KEYS}
    same = all(run.get(key) == value for key, value in recipe.items())
    return same and not run.get("train_subset") and not run.get("test_subset")


def draw_curves(args: argparse.Namespace) -> str:
    results_dir = args.curves
    loss, knn = read_training_log(os.path.join(results_dir, LOG_NAME))
    figure = training_curves_figure(
        [e for e, _ in loss],
        [v for _, v in loss],
        [e for e, _ in knn],
        [v for _, v in knn],
        title=run_description(results_dir),
        reference=is_demo_recipe(results_dir),
    )
    return save_figure(figure, args.output or os.path.join(results_dir, "training_curve.png"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    logger = setup_logging()
    parser = create_parser()
    args = parser.parse_args(argv)
    if bool(args.curves) == bool(args.checkpoint):
        parser.error("give exactly one of --checkpoint (retrieval grid) or --curves RESULTS")
    try:
        path = draw_curves(args) if args.curves else draw_retrieval(args, logger)
    except (ConfigError, DatasetError, CheckpointError, DeviceError, OSError) as err:
        logger.error("error: %s", err)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
