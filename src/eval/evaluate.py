"""What infer.py and visualize.py share: a checkpoint's query encoder, the features of its bank
and queries (cached beside the checkpoint), and the kNN and linear-probe results."""

import dataclasses
import functools
import os
import time
from dataclasses import dataclass

import numpy as np
from mindspore import nn

from ..data import (
    DatasetError,
    ImageSplit,
    Splits,
    create_eval_dataset,
    create_linear_dataset,
    get_dataset,
    load_data,
)
from ..models import create_encoder, with_projector
from ..train.checkpoint import (
    CheckpointError,
    checkpoint_settings,
    load_checkpoint,
    read_checkpoint,
)
from ..utils.progress import Progress, logger
from .feature_cache import FeatureCache, split_digest
from .features import EVAL_BATCH_SIZE, BackboneAndEmbedding, extract_features
from .knn import knn_predict
from .lincls import (
    FrozenBackboneClassifier,
    LinearTrainStep,
    classifier_path,
    file_digest,
    rank_classes,
    train_linear,
)
from .linear_probe import LinearProbeConfig, predict_ranked, train_linear_classifier
from .metrics import classification_report


@dataclass(frozen=True)
class EvalData:
    """Which images a checkpoint is evaluated on, and how they are read."""

    dataset: str
    data_dir: str
    val_split: float = 0.0
    skip_bad_images: bool = False
    train_subset: int = 0  # > 0: the first N bank images
    test_subset: int = 0  # > 0: the first N queries
    batch_size: int = EVAL_BATCH_SIZE
    workers: int = 1
    use_cache: bool = True


@dataclass
class Features:
    """A checkpoint's features (``backbone``, ``embedding``, ``labels``) of bank and queries."""

    epoch: int
    bank: ImageSplit
    queries: ImageSplit
    bank_features: dict[str, np.ndarray]
    query_features: dict[str, np.ndarray]
    from_cache: bool
    seconds: float


def restore_encoder(checkpoint: str) -> tuple[nn.Cell, dict]:
    """``encoder_q`` (v3: ``base_encoder``) of a checkpoint in eval mode, built from the settings
    the file records; returns it and those settings (epoch, arch, moco_dim, ...)."""
    saved = read_checkpoint(checkpoint)
    settings = checkpoint_settings(saved)
    missing = [key for key in ("arch", "moco_dim", "bn_splits") if key not in settings]
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint} does not record {', '.join(missing)}")
    keys = ("arch", "moco_dim", "bn_splits", "mlp", "stem")
    encoder = create_encoder(*(settings[key] for key in keys), image_size=settings["image_size"])
    prefix = "encoder_q."
    if settings["method"] == "v3":  # the base encoder, its projector in place of the head
        encoder = with_projector(encoder, settings["moco_mlp_dim"], settings["moco_dim"])
        prefix = "base_encoder."
    load_checkpoint(encoder, checkpoint, prefix=prefix, saved=saved)
    encoder.set_train(False)
    return encoder, settings


def _split_features(network, split: ImageSplit, name: str, data: EvalData, size: int, cache):
    """``(features, loaded)`` of one split at ``size`` pixels, from the cache if it holds them."""
    info = get_dataset(data.dataset)

    def extract():
        dataset = create_eval_dataset(
            split, info.mean, info.std, data.batch_size, data.workers, size
        )
        return extract_features(network, dataset, data.batch_size, f"Features [{name}]")

    if cache is None:
        return extract(), False
    digest = split_digest(split.images, split.labels)
    transform = "test" if split.images.shape[1] == size else f"test-{size}"
    key = cache.key(name, dataset=data.dataset, images=len(split), data=digest, transform=transform)
    entry = f"{data.dataset}-{name}-{len(split)}"
    features, loaded = cache.get_or_compute(entry, key, extract)
    if loaded:
        logger.info("%s features of %d images loaded from %s", name, len(split), cache.path(entry))
    return features, loaded


def _restore(checkpoint: str, data: EvalData) -> tuple[nn.Cell, dict, Splits]:
    """``checkpoint``'s encoder_q, its settings, and the labelled splits to evaluate it on."""
    encoder, settings = restore_encoder(checkpoint)
    epoch, size = settings.get("epoch", 0), settings["image_size"]
    logger.info(
        "%s: epoch %d, %s, moco-dim %d", checkpoint, epoch, settings["arch"], settings["moco_dim"]
    )
    splits = load_data(
        data.dataset,
        data.data_dir,
        image_size=size,
        val_split=data.val_split,
        skip_bad_images=data.skip_bad_images,
        train_subset=data.train_subset,
        test_subset=data.test_subset,
    )
    if not splits.evaluable:
        raise DatasetError(
            f"{data.data_dir} has no labelled train and val images to evaluate on: use class "
            "sub-folders and a val/ folder, or --val-split FRACTION"
        )
    return encoder, settings, splits


def load_features(checkpoint: str, data: EvalData) -> Features:
    """Restores ``checkpoint``'s encoder_q and gets the features of the bank and the queries."""
    encoder, settings, splits = _restore(checkpoint, data)
    epoch, size = settings.get("epoch", 0), settings["image_size"]
    folder = os.path.dirname(os.path.abspath(checkpoint))
    cache = FeatureCache(folder, checkpoint) if data.use_cache else None
    network = BackboneAndEmbedding(encoder)  # one cell for both splits: compiled once
    start = time.perf_counter()
    bank, bank_cached = _split_features(network, splits.bank, "bank", data, size, cache)
    queries, queries_cached = _split_features(network, splits.queries, "queries", data, size, cache)
    seconds = time.perf_counter() - start
    cached = bank_cached and queries_cached
    return Features(epoch, splits.bank, splits.queries, bank, queries, cached, seconds)


def _report(prefix: str, ranked: np.ndarray, queries: ImageSplit) -> dict:
    report = classification_report(ranked, queries.labels, queries.classes)
    top = {f"{prefix}_top1": report["top1"], f"{prefix}_top5": report["top5"]}
    return {**top, "per_class": report["per_class"]}


def knn_results(features: Features, k: int, t: float) -> dict:
    """Weighted kNN (the training monitor's classifier) with the whole bank."""
    bank, queries = features.bank_features, features.query_features["embedding"]
    classes = features.bank.num_classes
    ranked = knn_predict(queries, bank["embedding"], bank["labels"], classes, k, t)
    dim = bank["embedding"].shape[1]
    described = f"L2-normalised {dim}-d encoder output (the kNN monitor's), test transform"
    return {**_report("knn", ranked, features.queries), "k": k, "t": t, "features": described}


def cached_linear_results(features: Features, probe: LinearProbeConfig) -> dict:
    """Linear classifier on the cached backbone features (main_lincls.py's optimiser)."""
    bank = features.bank_features
    progress = Progress(probe.epochs, "Linear [epochs]", len(features.bank))
    classes = features.bank.num_classes
    report = lambda epoch, lr, loss: progress.update(loss=loss, lr=lr)  # noqa: E731
    classifier = train_linear_classifier(bank["backbone"], bank["labels"], classes, probe, report)
    progress.close()
    ranked = predict_ranked(classifier, features.query_features["backbone"])
    dim = bank["backbone"].shape[1]
    described = f"{dim}-d backbone features before the fc, test transform, extracted once"
    linear = dataclasses.asdict(probe)
    return {**_report("linear", ranked, features.queries), "linear": linear, "features": described}


def linear_results(
    checkpoint: str, data: EvalData, probe: LinearProbeConfig, results_dir: str, resume: str = ""
) -> dict:
    """MoCo's linear protocol (lincls.py) on ``checkpoint``'s frozen backbone; the classifier is
    saved in ``results_dir`` after each epoch; ``resume``: a classifier checkpoint to go on from."""
    encoder, settings, splits = _restore(checkpoint, data)
    bank, queries, size = splits.bank, splits.queries, settings["image_size"]
    info = get_dataset(data.dataset)
    classifier = FrozenBackboneClassifier(encoder, bank.num_classes, probe.init_std, probe.seed)
    recorded = {f"linear_{key}": value for key, value in dataclasses.asdict(probe).items()}
    recorded.update(pretrained=file_digest(checkpoint), dataset=data.dataset, image_size=size)
    recorded.update(train_images=len(bank), linear_schedule=",".join(map(str, probe.schedule)))
    epoch_data = functools.partial(
        create_linear_dataset,
        bank,
        info.mean,
        info.std,
        probe.batch_size,
        probe.seed,
        image_size=size,
        workers=data.workers,
    )
    start = time.perf_counter()
    path = classifier_path(results_dir)
    first = train_linear(
        LinearTrainStep(classifier, probe), epoch_data, probe, path, recorded, resume or None
    )
    test = create_eval_dataset(queries, info.mean, info.std, data.batch_size, data.workers, size)
    ranked = rank_classes(classifier, test)
    described = (
        f"{encoder.feature_dim}-d backbone features of a RandomResizedCrop + flip of every "
        "training image each epoch (main_lincls.py); test transform for the test images"
    )
    return {
        **_report("linear", ranked, queries),
        "linear": dataclasses.asdict(probe),
        "features": described,
        "classifier_checkpoint": path,
        "resumed_at_epoch": first if first > 1 else None,
        "epoch": settings.get("epoch", 0),
        "num_classes": queries.num_classes,
        "num_train_images": len(bank),
        "num_test_images": len(queries),
        "seconds_training": round(time.perf_counter() - start, 1),
    }
