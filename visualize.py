"""Figures of a MoCo run: nearest-neighbour retrieval of test images, a map of the test
set's embedding, and training curves.

    python visualize.py --checkpoint RESULTS/model_last.ckpt --data-dir ./data
    python visualize.py --embedding --checkpoint RESULTS/model_last.ckpt --data-dir ./data
    python visualize.py --curves RESULTS/

Retrieval ranks the training set by cosine similarity of the normalised
embedding (the kNN monitor's features); the map is a t-SNE of that embedding
(scikit-learn). Both reuse infer.py's feature cache. The curves come from
RESULTS/log.csv written by main.py.
"""

import argparse
import json
import logging
import os
import sys
import time
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
from src.eval.evaluate import Features, load_features
from src.eval.retrieval import rank_by_similarity
from src.train.checkpoint import CheckpointError
from src.train.loop import LOG_NAME, read_log
from src.utils.device import DeviceError, set_device
from src.utils.figures import (
    RetrievalRow,
    Tile,
    embedding_figure,
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
        description="Draw the retrieval grid or the embedding map of a checkpoint, or the "
        "training curves of a run",
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
        "--embedding",
        action="store_true",
        help="draw a t-SNE map of the checkpoint's test-set embedding instead (needs scikit-learn)",
    )
    parser.add_argument(
        "--embedding-points",
        type=int,
        default=10000,
        metavar="N",
        help="map a random subset of N test images (default: 10000, the whole CIFAR test set)",
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
        "--seed", type=int, default=0, help="seed of the random queries and of the map (default: 0)"
    )
    parser.add_argument(
        "--output",
        default="",
        help="PNG path (default: retrieval.png, embedding.png or training_curve.png in the "
        "results folder)",
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
    return random_indices(args.seed, args.num_queries, num_test)


def random_indices(seed: int, count: int, total: int) -> np.ndarray:
    """``count`` distinct indices in ``[0, total)`` drawn with ``seed``, sorted."""
    return np.sort(np.random.default_rng(seed).choice(total, count, replace=False))


def checkpoint_features(args: argparse.Namespace, logger: logging.Logger) -> Features:
    """The checkpoint's features of both splits, through infer.py's feature cache."""
    resolve_evaluation_args(args)
    set_device(args.device_target, args.mode)
    return load_features(args, logger)


def checkpoint_title(args: argparse.Namespace, features: Features) -> str:
    return f"{args.dataset}: {os.path.basename(args.checkpoint)} (epoch {features.epoch})"


def checkpoint_output(args: argparse.Namespace, name: str) -> str:
    """``--output``, or ``name`` in the checkpoint's folder."""
    return args.output or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), name)


def draw_retrieval(args: argparse.Namespace, logger: logging.Logger) -> str:
    if args.topk < 1:
        raise ConfigError(f"--topk must be positive, got {args.topk}")
    features = checkpoint_features(args, logger)
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
        f"{checkpoint_title(args, features)}, bank of {len(features.train)} train images, "
        f"cosine similarity of the {bank.shape[1]}-d embedding; green: same class as the query"
    )
    figure = retrieval_grid_figure(rows, args.topk, title)
    return save_figure(figure, checkpoint_output(args, "retrieval.png"))


def load_tsne():
    """scikit-learn's TSNE class, imported here: only --embedding needs scikit-learn."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ConfigError("--embedding needs scikit-learn: pip install scikit-learn") from None
    return TSNE


def tsne_2d(tsne_class, points: np.ndarray, seed: int) -> np.ndarray:
    """t-SNE of the rows of ``points`` to 2-D: PCA init, ``seed``, perplexity 30 (scikit-learn's
    default), lowered for a few points so that it stays below their number."""
    perplexity = min(30.0, max(1.0, (len(points) - 1) / 3))
    tsne = tsne_class(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(points)


def draw_embedding(args: argparse.Namespace, logger: logging.Logger) -> str:
    """t-SNE map of the test set's L2-normalised embedding (what the kNN compares), by class."""
    tsne_class = load_tsne()  # before the features: a missing package fails at once
    if args.embedding_points < 2:
        raise ConfigError(f"--embedding-points must be at least 2, got {args.embedding_points}")
    features = checkpoint_features(args, logger)
    embedding, labels = features.test_features["embedding"], features.test_features["labels"]
    chosen = random_indices(args.seed, min(args.embedding_points, len(embedding)), len(embedding))
    start = time.perf_counter()
    points_2d = tsne_2d(tsne_class, embedding[chosen], args.seed)
    logger.info("t-SNE of %d points: %.1f s", len(chosen), time.perf_counter() - start)
    shown = "all" if len(chosen) == len(embedding) else f"{len(chosen)} of the"
    title = (
        f"{checkpoint_title(args, features)}: t-SNE of the L2-normalised {embedding.shape[1]}-d "
        f"embedding (what the kNN compares)\n{shown} {len(embedding)} test images, coloured by "
        "their class"
    )
    figure = embedding_figure(points_2d, labels[chosen], features.test.classes, title)
    return save_figure(figure, checkpoint_output(args, "embedding.png"))


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
    if bool(args.curves) == bool(args.checkpoint) or (args.embedding and args.curves):
        parser.error(
            "give exactly one of --checkpoint (retrieval grid), --embedding --checkpoint "
            "(embedding map) or --curves RESULTS"
        )
    draw_checkpoint = draw_embedding if args.embedding else draw_retrieval
    try:
        path = draw_curves(args) if args.curves else draw_checkpoint(args, logger)
    except (ConfigError, DatasetError, CheckpointError, DeviceError, OSError) as err:
        logger.error("error: %s", err)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
