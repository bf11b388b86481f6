"""What infer.py and visualize.py share: a checkpoint's query encoder, its features of both
splits (cached), and the kNN and linear-probe reports."""

import argparse
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from mindspore import nn

from ..data import create_eval_dataset, get_dataset_spec, load_splits
from ..data.cifar import CifarSplit
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

FEATURE_ARRAYS = ("backbone", "embedding", "labels")


@dataclass
class Features:
    """A checkpoint's features of the train split (kNN bank) and the test split."""

    epoch: int
    train: CifarSplit
    test: CifarSplit
    train_features: dict[str, np.ndarray]
    test_features: dict[str, np.ndarray]
    from_cache: bool
    seconds: float


def restore_encoder(checkpoint: str) -> tuple[nn.Cell, dict]:
    """``encoder_q`` of a checkpoint, in eval mode, built from the settings the file records.

    Returns the encoder and those settings (epoch, arch, moco_dim, ...).
    """
    saved = read_checkpoint(checkpoint)
    settings = checkpoint_settings(saved)
    missing = [key for key in ("arch", "moco_dim", "bn_splits") if key not in settings]
    if missing:
        raise CheckpointError(
            f"checkpoint {checkpoint} does not record {', '.join(missing)}: "
            f"not written by main.py or the converter"
        )
    encoder = create_backbone(settings["arch"], settings["moco_dim"], settings["bn_splits"])
    load_checkpoint(encoder, checkpoint, prefix="encoder_q.", saved=saved)
    encoder.set_train(False)
    return encoder, settings


def _split_features(network, split: CifarSplit, name: str, args, cache, logger):
    """Features of one split, from the cache if it holds them for this checkpoint."""
    spec = get_dataset_spec(args.dataset)

    def extract():
        dataset = create_eval_dataset(split, spec.mean, spec.std, args.batch_size, args.workers)
        return extract_features(network, dataset, args.batch_size, f"Features [{name}]")

    start = time.perf_counter()
    if cache is None:
        return extract(), False
    key = cache.key(
        name,
        dataset=args.dataset,
        images=len(split),
        data=split_digest(split.images, split.labels),
        arrays=list(FEATURE_ARRAYS),
        transform="test",
    )
    result = cache.get_or_compute(f"{args.dataset}-{name}-{len(split)}", key, extract)
    how = (
        f"loaded from {result.path}"
        if result.loaded
        else (f"extracted in {time.perf_counter() - start:.0f}s")
    )
    logger.info("%s features of %d images %s", name, len(split), how)
    if result.save_error:
        logger.warning("warning: could not cache the features: %s", result.save_error)
    return result.arrays, result.loaded


def load_features(args: argparse.Namespace, logger: logging.Logger) -> Features:
    """Restores ``args.checkpoint``'s encoder_q and gets the features of both splits.

    ``args``: checkpoint, dataset, data_dir, train_subset, test_subset, batch_size, workers,
    no_cache. The cache lives beside the checkpoint.
    """
    encoder, settings = restore_encoder(args.checkpoint)
    logger.info(
        "%s: epoch %d, %s, moco-dim %d",
        args.checkpoint,
        settings.get("epoch", 0),
        settings["arch"],
        settings["moco_dim"],
    )
    train, test = load_splits(args.dataset, args.data_dir, args.train_subset, args.test_subset)
    results_dir = os.path.dirname(os.path.abspath(args.checkpoint))
    cache = None if args.no_cache else FeatureCache(results_dir, args.checkpoint)
    network = BackboneAndEmbedding(encoder)  # one cell for both splits: compiled once
    start = time.perf_counter()
    train_features, train_cached = _split_features(network, train, "train", args, cache, logger)
    test_features, test_cached = _split_features(network, test, "test", args, cache, logger)
    return Features(
        settings.get("epoch", 0),
        train,
        test,
        train_features,
        test_features,
        train_cached and test_cached,
        time.perf_counter() - start,
    )


def knn_results(features: Features, k: int, t: float) -> dict:
    """Weighted kNN (the training monitor's classifier) over the whole train split."""
    bank = features.train_features
    ranked = knn_predict(
        features.test_features["embedding"],
        bank["embedding"],
        bank["labels"],
        features.train.num_classes,
        k,
        t,
    )
    report = classification_report(ranked, features.test_features["labels"], features.test.classes)
    return {
        "knn_top1": report["top1"],
        "knn_top5": report["top5"],
        "per_class": report["per_class"],
        "k": k,
        "t": t,
        "features": f"L2-normalised {bank['embedding'].shape[1]}-d encoder output (the kNN "
        f"monitor's), test transform",
    }


def linear_results(features: Features, probe: LinearProbeConfig) -> dict:
    """Linear classifier on the cached backbone features (main_lincls.py's optimiser)."""
    train = features.train_features
    progress = Progress(probe.epochs, "Linear [epochs]", len(features.train))
    classifier = train_linear_classifier(
        train["backbone"],
        train["labels"],
        features.train.num_classes,
        probe,
        on_epoch=lambda epoch, lr, loss: progress.update(loss=loss, lr=lr),
    )
    progress.close()
    ranked = predict_ranked(classifier, features.test_features["backbone"])
    report = classification_report(ranked, features.test_features["labels"], features.test.classes)
    return {
        "linear_top1": report["top1"],
        "linear_top5": report["top5"],
        "per_class": report["per_class"],
        "linear": {
            "epochs": probe.epochs,
            "lr": probe.lr,
            "momentum": probe.momentum,
            "weight_decay": probe.weight_decay,
            "batch_size": probe.batch_size,
            "schedule": "cosine" if probe.cos else list(probe.schedule),
            "seed": probe.seed,
        },
        "features": f"{train['backbone'].shape[1]}-d backbone features before the fc, test "
        f"transform (no augmentation), extracted once",
    }


def evaluate(args: argparse.Namespace, logger: logging.Logger) -> dict:
    """infer.py's evaluation: features (cached), then ``args.protocol``; the results to save."""
    start = time.perf_counter()
    features = load_features(args, logger)
    classify_start = time.perf_counter()
    if args.protocol == "knn":
        results = knn_results(features, args.knn_k, args.knn_t)
    else:
        results = linear_results(
            features,
            LinearProbeConfig(
                epochs=args.linear_epochs,
                lr=args.linear_lr,
                batch_size=args.linear_batch_size,
                cos=args.linear_cos,
                schedule=tuple(args.linear_schedule),
                seed=args.seed,
            ),
        )
    return {
        "protocol": args.protocol,
        **results,
        "checkpoint": os.path.abspath(args.checkpoint),
        "epoch": features.epoch,
        "dataset": args.dataset,
        "num_classes": features.test.num_classes,
        "num_train_images": len(features.train),
        "num_test_images": len(features.test),
        "features_from_cache": features.from_cache,
        "seconds_features": round(features.seconds, 1),
        "seconds_classifier": round(time.perf_counter() - classify_start, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }
