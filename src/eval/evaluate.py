"""What infer.py and visualize.py share: a checkpoint's query encoder, the features of both
splits (cached beside the checkpoint), and the kNN and linear-probe results."""

import argparse
import dataclasses
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from mindspore import nn

from ..data import CifarSplit, DatasetError, create_eval_dataset, dataset_info, load_data
from ..models import create_backbone
from ..train.checkpoint import (
    CheckpointError,
    checkpoint_settings,
    load_checkpoint,
    read_checkpoint,
)
from ..utils.progress import Progress
from .feature_cache import FeatureCache, split_digest
from .features import BackboneAndEmbedding, extract_features
from .knn import knn_predict
from .linear_probe import LinearProbeConfig, predict_ranked, train_linear_classifier
from .metrics import classification_report


@dataclass
class Features:
    """A checkpoint's features (``backbone``, ``embedding``, ``labels``) of both splits."""

    epoch: int
    train: CifarSplit
    test: CifarSplit
    train_features: dict[str, np.ndarray]
    test_features: dict[str, np.ndarray]
    from_cache: bool
    seconds: float


def restore_encoder(checkpoint: str) -> tuple[nn.Cell, dict]:
    """``encoder_q`` of a checkpoint, in eval mode, built from the settings the file records;
    returns it and those settings (epoch, arch, moco_dim, ...)."""
    saved = read_checkpoint(checkpoint)
    settings = checkpoint_settings(saved)
    missing = [key for key in ("arch", "moco_dim", "bn_splits") if key not in settings]
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint} does not record {', '.join(missing)}")
    encoder = create_backbone(
        settings["arch"], settings["moco_dim"], settings["bn_splits"], settings["mlp"],
        settings["stem"],
    )  # fmt: skip
    load_checkpoint(encoder, checkpoint, prefix="encoder_q.", saved=saved)
    encoder.set_train(False)
    return encoder, settings


def _split_features(network, split: CifarSplit, name: str, args, size: int, cache, logger):
    """``(features, loaded)`` of one split at ``size`` pixels, from the cache if it holds them."""
    info = dataset_info(args.dataset)

    def extract():
        dataset = create_eval_dataset(
            split, info.mean, info.std, args.batch_size, args.workers, size
        )
        return extract_features(network, dataset, args.batch_size, f"Features [{name}]")

    if cache is None:
        return extract(), False
    data = split_digest(split.images, split.labels)
    transform = "test" if split.images.shape[1] == size else f"test-{size}"
    key = cache.key(name, dataset=args.dataset, images=len(split), data=data, transform=transform)
    entry = f"{args.dataset}-{name}-{len(split)}"
    features, loaded = cache.get_or_compute(entry, key, extract)
    if loaded:
        logger.info("%s features of %d images loaded from %s", name, len(split), cache.path(entry))
    return features, loaded


def load_features(args: argparse.Namespace, logger: logging.Logger) -> Features:
    """Restores ``args.checkpoint``'s encoder_q and gets the features of both splits.

    ``args``: checkpoint, dataset, data_dir, train_subset, test_subset, batch_size, workers,
    no_cache, val_split, skip_bad_images. The splits are the bank (train) and the queries.
    """
    encoder, settings = restore_encoder(args.checkpoint)
    epoch = settings.get("epoch", 0)
    logger.info("%s: epoch %d, %s, moco-dim %d", args.checkpoint, epoch, settings["arch"],
                settings["moco_dim"])  # fmt: skip
    size = settings["image_size"]
    data = load_data(
        args.dataset, args.data_dir, args.train_subset, args.test_subset, image_size=size,
        val_split=args.val_split, skip_bad_images=args.skip_bad_images,
    )  # fmt: skip
    _, train, test = data
    if not data.evaluable:
        raise DatasetError(
            f"{args.data_dir} has no labelled train and val images to evaluate on: use class "
            "sub-folders and a val/ folder, or --val-split FRACTION"
        )
    folder = os.path.dirname(os.path.abspath(args.checkpoint))
    cache = None if args.no_cache else FeatureCache(folder, args.checkpoint)
    network = BackboneAndEmbedding(encoder)  # one cell for both splits: compiled once
    start = time.perf_counter()
    train_features, train_cached = _split_features(network, train, "train", args, size, cache,
                                                   logger)  # fmt: skip
    test_features, test_cached = _split_features(network, test, "test", args, size, cache, logger)
    seconds = time.perf_counter() - start
    cached = train_cached and test_cached
    return Features(epoch, train, test, train_features, test_features, cached, seconds)


def _report(prefix: str, ranked: np.ndarray, features: Features) -> dict:
    report = classification_report(ranked, features.test_features["labels"], features.test.classes)
    top = {f"{prefix}_top1": report["top1"], f"{prefix}_top5": report["top5"]}
    return {**top, "per_class": report["per_class"]}


def knn_results(features: Features, k: int, t: float) -> dict:
    """Weighted kNN (the training monitor's classifier) with the whole train split as bank."""
    bank, queries = features.train_features, features.test_features["embedding"]
    classes = features.train.num_classes
    ranked = knn_predict(queries, bank["embedding"], bank["labels"], classes, k, t)
    dim = bank["embedding"].shape[1]
    described = f"L2-normalised {dim}-d encoder output (the kNN monitor's), test transform"
    return {**_report("knn", ranked, features), "k": k, "t": t, "features": described}


def linear_results(features: Features, probe: LinearProbeConfig) -> dict:
    """Linear classifier on the cached backbone features (main_lincls.py's optimiser)."""
    train = features.train_features
    progress = Progress(probe.epochs, "Linear [epochs]", len(features.train))
    report = lambda epoch, lr, loss: progress.update(loss=loss, lr=lr)  # noqa: E731
    classes = features.train.num_classes
    classifier = train_linear_classifier(train["backbone"], train["labels"], classes, probe, report)
    progress.close()
    ranked = predict_ranked(classifier, features.test_features["backbone"])
    dim = train["backbone"].shape[1]
    described = f"{dim}-d backbone features before the fc, test transform, extracted once"
    linear = dataclasses.asdict(probe)
    return {**_report("linear", ranked, features), "linear": linear, "features": described}


def evaluate(args: argparse.Namespace, logger: logging.Logger) -> dict:
    """infer.py's evaluation: features (cached), then ``args.protocol``; the results to save."""
    start = time.perf_counter()
    features = load_features(args, logger)
    if args.protocol == "knn":
        results = knn_results(features, args.knn_k, args.knn_t)
    else:
        probe = LinearProbeConfig(
            epochs=args.linear_epochs,
            lr=args.linear_lr,
            batch_size=args.linear_batch_size,
            cos=args.linear_cos,
            schedule=tuple(args.linear_schedule),
            seed=args.seed,
        )
        results = linear_results(features, probe)
    return {"protocol": args.protocol, **results, "checkpoint": os.path.abspath(args.checkpoint),
            "epoch": features.epoch, "dataset": args.dataset,
            "num_classes": features.test.num_classes, "num_train_images": len(features.train),
            "num_test_images": len(features.test), "features_from_cache": features.from_cache,
            "seconds_features": round(features.seconds, 1),
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
