"""Evaluates a MoCo checkpoint on CIFAR: weighted kNN or linear probe on frozen features.

    python infer.py --checkpoint RESULTS/model_last.ckpt --data-dir ./data
    python infer.py --checkpoint RESULTS/model_last.ckpt --protocol linear

The model settings come from the ``config.yaml`` that main.py saved beside the
checkpoint. Features of the whole train split (the kNN memory bank, or the
linear classifier's training set) and of the whole test split are extracted
once with the test transform and cached in the results folder; later runs,
of either protocol and of visualize.py, read them back.
"""
import argparse
import json
import os
import sys
import time

from src.config import ConfigError
from src.data import DatasetError, create_eval_dataset, get_dataset_spec, load_cifar
from src.train.checkpoint import CheckpointError
from src.eval.feature_cache import FeatureCache, split_digest
from src.eval.features import BackboneAndEmbedding, extract_backbone_and_embedding
from src.eval.evaluate import load_training_config, restore_encoder
from src.eval.knn import knn_predict
from src.eval.linear_probe import LinearProbeConfig, predict_ranked, train_linear_classifier
from src.eval.metrics import classification_report
from src.utils.device import set_device
from src.utils.progress import Progress, setup_logging

FEATURE_ARRAYS = ("backbone", "embedding", "labels")
DEFAULT_EVAL_BATCH_SIZE = 256


def add_evaluation_arguments(parser, checkpoint_required=True):
    """Flags shared with visualize.py: which checkpoint, which data, how to run the encoder."""
    parser.add_argument("--checkpoint", required=checkpoint_required, default="",
                        help="checkpoint written by main.py (e.g. RESULTS/model_last.ckpt)")
    parser.add_argument("--config", default="",
                        help="training config (default: config.yaml beside the checkpoint)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the dataset (default: the training config's)")
    parser.add_argument("--dataset", default=None, choices=["cifar10", "cifar100"],
                        help="dataset to evaluate on (default: the training config's)")
    parser.add_argument("--device_target", default=None, choices=["CPU", "GPU", "Ascend"],
                        help="MindSpore device (default: the training config's)")
    parser.add_argument("--mode", type=int, default=None, choices=[0, 1],
                        help="0 = GRAPH, 1 = PYNATIVE (default: the training config's)")
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int,
                        default=DEFAULT_EVAL_BATCH_SIZE,
                        help="images per feature-extraction batch (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="data pipeline workers (default: the training config's)")
    parser.add_argument("--train-subset", type=int, default=0,
                        help="if > 0, use only the first N training images (default: all, not "
                             "the training run's monitor subset)")
    parser.add_argument("--test-subset", type=int, default=0,
                        help="if > 0, use only the first N test images (default: all)")
    parser.add_argument("--no-cache", action="store_true",
                        help="extract features again instead of reading or writing the cache")


def create_parser():
    parser = argparse.ArgumentParser(
        description="Evaluate a MoCo checkpoint: weighted kNN or linear probe on frozen features",
        allow_abbrev=False)
    add_evaluation_arguments(parser)
    parser.add_argument("--protocol", default="knn", choices=["knn", "linear"],
                        help="knn: weighted kNN on the normalised embedding; linear: linear "
                             "classifier on the 512-d backbone features (default: knn)")
    parser.add_argument("--knn-k", type=int, default=None,
                        help="neighbours (default: the config's)")
    parser.add_argument("--knn-t", type=float, default=None,
                        help="kNN softmax temperature (default: the config's)")
    parser.add_argument("--output-json", default="",
                        help="results file (default: eval_<protocol>.json beside the checkpoint)")
    group = parser.add_argument_group("linear protocol (main_lincls.py's settings)")
    group.add_argument("--linear-epochs", type=int, default=100, help="epochs (default: 100)")
    group.add_argument("--linear-lr", type=float, default=30.0,
                       help="initial learning rate (default: 30)")
    group.add_argument("--linear-batch-size", type=int, default=256,
                       help="features per step (default: 256)")
    group.add_argument("--linear-schedule", type=int, nargs="*", default=[60, 80],
                       help="0-based epochs where lr drops 10x, ignored with --linear-cos "
                            "(default: 60 80)")
    group.add_argument("--linear-cos", action="store_true", help="cosine schedule instead")
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the classifier init and order (default: 0)")
    return parser


def evaluation_config(cli):
    """The training config of the checkpoint with the evaluation flags applied.

    Raises:
        ConfigError, CheckpointError: For bad flags, a missing checkpoint or config.
    """
    errors = [f"{name} must be positive, got {getattr(cli, name)}"
              for name in ("batch_size", "knn_k", "knn_t", "workers", "linear_epochs",
                           "linear_lr", "linear_batch_size")
              if getattr(cli, name, None) is not None and getattr(cli, name) <= 0]
    errors += [f"{name} must be >= 0, got {getattr(cli, name)}"
               for name in ("train_subset", "test_subset") if getattr(cli, name) < 0]
    if errors:
        raise ConfigError("invalid arguments:\n  " + "\n  ".join(errors))
    config = load_training_config(cli.checkpoint, cli.config or None)
    for name in ("dataset", "data_dir", "device_target", "mode", "workers", "knn_k", "knn_t"):
        if getattr(cli, name, None) is not None:
            setattr(config, name, getattr(cli, name))
    # Whole splits unless asked: the training run's subsets only sped up its monitor.
    config.train_subset, config.test_subset = cli.train_subset, cli.test_subset
    return config


def load_splits(config):
    train = load_cifar(config.dataset, config.data_dir, "train")
    test = load_cifar(config.dataset, config.data_dir, "test")
    if config.train_subset:
        train = train.subset(config.train_subset)
    if config.test_subset:
        test = test.subset(config.test_subset)
    return train, test


def split_features(network, split, split_name, config, batch_size, cache, logger):
    """Backbone features, normalised embeddings and labels of a split, from the cache if valid."""
    spec = get_dataset_spec(config.dataset)

    def extract():
        dataset = create_eval_dataset(split, spec.mean, spec.std, batch_size, config.workers)
        backbone, embedding, labels = extract_backbone_and_embedding(
            network, dataset, batch_size, desc=f"Features [{split_name}]")
        return {"backbone": backbone, "embedding": embedding, "labels": labels}

    start = time.perf_counter()
    if cache is None:
        arrays = extract()
        logger.info("%s features of %d images extracted in %.0fs (cache off)", split_name,
                    len(split), time.perf_counter() - start)
        return arrays, False
    key = cache.key(split_name, dataset=config.dataset, images=len(split),
                    data=split_digest(split.images, split.labels), arrays=list(FEATURE_ARRAYS),
                    transform="test")
    result = cache.get_or_compute(f"{config.dataset}-{split_name}-{len(split)}", key, extract)
    if result.loaded:
        logger.info("%s features of %d images loaded from %s", split_name, len(split), result.path)
    else:
        logger.info("%s features of %d images extracted in %.0fs", split_name, len(split),
                    time.perf_counter() - start)
        if result.save_error:
            logger.warning("warning: could not cache the features: %s", result.save_error)
    return result.arrays, result.loaded


def load_frozen_features(cli, logger):
    """Everything the evaluations need: config, epoch, splits and their features.

    Returns:
        A namespace with ``config``, ``epoch``, ``train``/``test`` (CifarSplit),
        ``train_features``/``test_features`` (dicts of arrays), ``from_cache``
        and ``seconds`` (time to get the features).
    """
    config = evaluation_config(cli)
    set_device(config.device_target, config.mode)
    encoder, epoch = restore_encoder(config, cli.checkpoint)
    logger.info("%s: epoch %d, %s, moco-dim %d", cli.checkpoint, epoch, config.arch,
                config.moco_dim)
    train, test = load_splits(config)
    results_dir = os.path.dirname(os.path.abspath(cli.checkpoint))
    cache = None if cli.no_cache else FeatureCache(results_dir, cli.checkpoint)
    network = BackboneAndEmbedding(encoder)  # one cell for both splits: compiled once
    start = time.perf_counter()
    train_features, train_cached = split_features(network, train, "train", config, cli.batch_size,
                                                  cache, logger)
    test_features, test_cached = split_features(network, test, "test", config, cli.batch_size,
                                                cache, logger)
    return argparse.Namespace(config=config, epoch=epoch, train=train, test=test,
                              train_features=train_features, test_features=test_features,
                              from_cache=train_cached and test_cached,
                              seconds=time.perf_counter() - start, results_dir=results_dir)


def evaluate_knn(frozen):
    config = frozen.config
    ranked = knn_predict(frozen.test_features["embedding"], frozen.train_features["embedding"],
                         frozen.train_features["labels"], frozen.train.num_classes, config.knn_k,
                         config.knn_t)
    report = classification_report(ranked, frozen.test_features["labels"], frozen.test.classes)
    return {"knn_top1": report["top1"], "knn_top5": report["top5"],
            "per_class": report["per_class"],
            "k": config.knn_k, "t": config.knn_t,
            "features": f"L2-normalised {frozen.train_features['embedding'].shape[1]}-d encoder "
                        f"output (the kNN monitor's), test transform"}


def evaluate_linear(frozen, cli):
    probe = LinearProbeConfig(epochs=cli.linear_epochs, lr=cli.linear_lr,
                              batch_size=cli.linear_batch_size, cos=cli.linear_cos,
                              schedule=tuple(cli.linear_schedule), seed=cli.seed)
    progress = Progress(probe.epochs, "Linear [epochs]", len(frozen.train))

    def report_epoch(epoch, lr, loss):
        progress.update(loss=loss, lr=lr)

    classifier = train_linear_classifier(
        frozen.train_features["backbone"], frozen.train_features["labels"],
        frozen.train.num_classes, probe, on_epoch=report_epoch)
    progress.close()
    ranked = predict_ranked(classifier, frozen.test_features["backbone"])
    report = classification_report(ranked, frozen.test_features["labels"], frozen.test.classes)
    return {"linear_top1": report["top1"], "linear_top5": report["top5"],
            "per_class": report["per_class"],
            "linear": {"epochs": probe.epochs, "lr": probe.lr, "momentum": probe.momentum,
                       "weight_decay": probe.weight_decay, "batch_size": probe.batch_size,
                       "schedule": "cosine" if probe.cos else list(probe.schedule),
                       "seed": probe.seed},
            "features": f"{frozen.train_features['backbone'].shape[1]}-d backbone features before "
                        f"the fc, test transform (no augmentation), extracted once"}


def write_json(path, content):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)
            handle.write("\n")
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err}") from err


def evaluate(cli, logger):
    start = time.perf_counter()
    frozen = load_frozen_features(cli, logger)
    classify_start = time.perf_counter()
    results = evaluate_knn(frozen) if cli.protocol == "knn" else evaluate_linear(frozen, cli)
    seconds_classifier = time.perf_counter() - classify_start
    results = {
        "protocol": cli.protocol, **results,
        "checkpoint": os.path.abspath(cli.checkpoint), "epoch": frozen.epoch,
        "dataset": frozen.config.dataset, "num_classes": frozen.test.num_classes,
        "num_train_images": len(frozen.train), "num_test_images": len(frozen.test),
        "features_from_cache": frozen.from_cache, "seconds_features": round(frozen.seconds, 1),
        "seconds_classifier": round(seconds_classifier, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }
    output = cli.output_json or os.path.join(frozen.results_dir, f"eval_{cli.protocol}.json")
    write_json(output, results)
    return results, output


def summary(results):
    if results["protocol"] == "knn":
        head = (f"kNN (k={results['k']}, t={results['t']}) top-1 {results['knn_top1']:.2f}% "
                f"top-5 {results['knn_top5']:.2f}%")
    else:
        head = f"linear top-1 {results['linear_top1']:.2f}% top-5 {results['linear_top5']:.2f}%"
    return (f"{head} on {results['num_test_images']} {results['dataset']} test images "
            f"(bank/train: {results['num_train_images']}), epoch {results['epoch']}, "
            f"{results['seconds']:.0f}s")


def main(argv=None):
    logger = setup_logging()
    cli = create_parser().parse_args(argv)
    try:
        results, output = evaluate(cli, logger)
    except (ConfigError, DatasetError, CheckpointError) as err:
        logger.error("error: %s", err)
        return 2
    print(summary(results))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
