"""Figures of a MoCo run: nearest-neighbour retrieval of test images, a map of the test set's
embedding (t-SNE; both from infer.py's feature cache), and training curves.

    python visualize.py --checkpoint RESULTS/model_last.ckpt [--embedding] --data-dir ./data
    python visualize.py --curves RESULTS/ [--reference]
"""

import argparse
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
    add_options,
    load_config_file,
    resolve_evaluation_args,
    script_parser,
    settings,
)
from src.data import DatasetError
from src.eval.evaluate import EvalData, Features, load_features
from src.eval.retrieval import rank_by_similarity
from src.train.checkpoint import CheckpointError
from src.train.log import read_curves
from src.utils import figures
from src.utils.device import DeviceError, set_device
from src.utils.figures import RetrievalRow, Tile
from src.utils.progress import logger, setup_logging

OPTIONS = [  # see src/config.py's table
    ("--embedding", bool, False, "with --checkpoint: a t-SNE map of the test set (scikit-learn)"),
    ("--embedding-points", int, 10000, "map a random subset of N test images"),
    ("--num-queries", int, 3, "random test images to query"),
    ("--query-index", int, [], "test-set indices to query instead"),
    ("--topk", int, 5, "most / least similar images shown"),
    ("--seed", int, 0, "seed of the random queries and of the map"),
    ("--reference", bool, False, "with --curves: add the PyTorch demo's published curve"),
    ("--output", str, "", "PNG path; empty: beside the checkpoint or the log"),
]


def random_indices(seed: int, count: int, total: int) -> np.ndarray:
    """``count`` distinct indices in ``[0, total)`` drawn with ``seed``, sorted."""
    return np.sort(np.random.default_rng(seed).choice(total, count, replace=False))


def choose_queries(args: argparse.Namespace, num_test: int) -> np.ndarray:
    """Test indices to query: the given ones, or ``--num-queries`` distinct random ones."""
    if args.query_index:
        if bad := [i for i in args.query_index if not 0 <= i < num_test]:
            raise ConfigError(f"--query-index {bad} outside the test set [0, {num_test})")
        return np.array(args.query_index)
    if not 1 <= args.num_queries <= num_test:
        raise ConfigError(f"--num-queries must be in [1, {num_test}], got {args.num_queries}")
    return random_indices(args.seed, args.num_queries, num_test)


def checkpoint_features(args: argparse.Namespace) -> tuple[Features, str]:
    """The checkpoint's features of bank and queries (infer.py's feature cache) and a title."""
    resolve_evaluation_args(args)
    set_device(args.device_target, args.mode)
    features = load_features(args.checkpoint, settings(EvalData, args, use_cache=not args.no_cache))
    return features, f"{args.dataset}: {os.path.basename(args.checkpoint)} (epoch {features.epoch})"


def output_path(args: argparse.Namespace, name: str) -> str:
    """``--output``, or ``name`` beside the log (``--curves``) or the checkpoint."""
    folder = args.curves or os.path.dirname(os.path.abspath(args.checkpoint))
    return args.output or os.path.join(folder, name)


def draw_retrieval(args: argparse.Namespace) -> str:
    if args.topk < 1:
        raise ConfigError(f"--topk must be positive, got {args.topk}")
    features, title = checkpoint_features(args)
    bank, queries = features.bank, features.queries
    chosen = choose_queries(args, len(queries))
    embedding = features.bank_features["embedding"]
    ranking = rank_by_similarity(features.query_features["embedding"][chosen], embedding, args.topk)

    def tiles(indices, scores, label):  # bank images under their class and similarity
        found = zip(indices, bank.labels[indices], scores)
        return [
            Tile(bank.images[i], f"{bank.classes[c]}\n{s:.3f}", c == label) for i, c, s in found
        ]

    rows = []
    for r, query in enumerate(chosen):
        label = queries.labels[query]
        nearest = tiles(ranking.nearest[r], ranking.nearest_scores[r], label)
        farthest = tiles(ranking.farthest[r], ranking.farthest_scores[r], label)
        query_tile = Tile(queries.images[query], f"test #{query}\n{queries.classes[label]}")
        rows.append(RetrievalRow(query_tile, nearest, farthest))
    title = (
        f"{title}, bank of {len(bank)} train images, cosine "
        f"similarity of the {embedding.shape[1]}-d embedding; green: same class as the query"
    )
    figure = figures.retrieval_grid_figure(rows, args.topk, title)
    return figures.save_figure(figure, output_path(args, "retrieval.png"))


def draw_embedding(args: argparse.Namespace) -> str:
    """t-SNE map of the test set's L2-normalised embedding (what the kNN compares), by class."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ConfigError("--embedding needs scikit-learn: pip install scikit-learn") from None
    if args.embedding_points < 2:
        raise ConfigError(f"--embedding-points must be at least 2, got {args.embedding_points}")
    features, title = checkpoint_features(args)
    embedding, labels = features.query_features["embedding"], features.query_features["labels"]
    chosen = random_indices(args.seed, min(args.embedding_points, len(embedding)), len(embedding))
    start = time.perf_counter()
    perplexity = min(30.0, max(1.0, (len(chosen) - 1) / 3))  # below the number of points
    tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=args.seed)
    points_2d = tsne.fit_transform(embedding[chosen])
    logger.info("t-SNE of %d points: %.1f s", len(chosen), time.perf_counter() - start)
    shown = "all" if len(chosen) == len(embedding) else f"{len(chosen)} of the"
    title = (
        f"{title}: t-SNE of the L2-normalised {embedding.shape[1]}-d "
        f"embedding (what the kNN compares)\n{shown} {len(embedding)} test images, by class"
    )
    figure = figures.embedding_figure(points_2d, labels[chosen], features.queries.classes, title)
    return figures.save_figure(figure, output_path(args, "embedding.png"))


def run_description(results_dir: str) -> str:
    """Two lines on the run's recipe, from its config.yaml if there is one."""
    name = os.path.basename(os.path.normpath(results_dir))
    path = os.path.join(results_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        return name
    get = load_config_file(path).get
    images = f"first {get('train_subset')}" if get("train_subset") else "all"
    return (
        f"{name}: {get('dataset')}, {images} train images, batch {get('batch_size')}, "
        f"lr {get('lr')}, moco-k {get('moco_k')}, {get('epochs')} epochs\nkNN monitor: "
        f"k={get('knn_k')}, bank = those train images, {get('test_subset') or 'all'} test images"
    )


def draw_curves(args: argparse.Namespace) -> str:
    try:
        loss, knn = read_curves(args.curves)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    figure = figures.training_curves_figure(loss, knn, run_description(args.curves), args.reference)
    return figures.save_figure(figure, output_path(args, "training_curve.png"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    setup_logging()
    parser = script_parser(__doc__.split("\n")[0])
    modes = parser.add_mutually_exclusive_group(required=True)
    add_evaluation_arguments(parser, modes)
    modes.add_argument("--curves", default="", metavar="RESULTS", help="plot RESULTS/log.csv")
    add_options(parser, OPTIONS)
    args = parser.parse_args(argv)
    if args.embedding and not args.checkpoint:
        parser.error("--embedding draws a checkpoint's map: add --checkpoint")
    draw = draw_curves if args.curves else draw_embedding if args.embedding else draw_retrieval
    try:
        print(draw(args))
    except (ConfigError, DatasetError, CheckpointError, DeviceError, OSError) as err:
        logger.error("error: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
