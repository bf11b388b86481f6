"""Unsupervised MoCo training (CIFAR-10/100, STL-10, a folder of images) with a kNN monitor.

python main.py --config configs/cifar10.yaml --device_target GPU
msrun --worker_num=8 --local_worker_num=8 --master_port=8118 --join=True main.py --distribute ...
"""

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence
from typing import Optional

import mindspore as ms

from src.config import CONFIG_NAME, ConfigError, parse_args, save_config, settings, validate_group
from src.data import DatasetError, create_augmentation, create_train_dataset, load_data
from src.eval.features import create_knn_monitor
from src.models import MoCo, MoCoV3, create_encoder
from src.train.checkpoint import CHECKPOINT_NAME, MODEL_KEYS, V3_KEYS, CheckpointError
from src.train.loop import Callback, NonFiniteLossError, TrainSettings, fit
from src.train.optimizer import create_v3_optimizer
from src.train.step import V3TrainStep, create_train_step
from src.utils.device import DeviceError, set_device
from src.utils.distributed import broadcast_text, init_distributed, is_scheduler
from src.utils.progress import setup_logging


def prepare_results_dir(args: argparse.Namespace) -> None:
    """Creates the results folder, fails early if it is not writable, saves the config."""
    probe = os.path.join(args.results_dir, ".write_test")
    try:
        os.makedirs(args.results_dir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"results folder {args.results_dir} is not writable: {err}") from err
    save_config(args, os.path.join(args.results_dir, CONFIG_NAME))


def resolve_resume(args: argparse.Namespace) -> str:
    """``--resume auto``: the results folder's last checkpoint, if any."""
    if args.resume != "auto":
        return args.resume
    path = os.path.join(args.results_dir, CHECKPOINT_NAME)
    return path if os.path.isfile(path) else ""


def create_model_and_step(args: argparse.Namespace, group) -> tuple:
    """MoCo v1/v2 with its SGD step, or MoCo v3 with LARS or AdamW."""
    if args.method == "v3":
        encoder = functools.partial(
            create_encoder,
            args.arch,
            args.moco_dim,
            stem=args.stem,
            image_size=args.image_size,
            stop_grad_conv1=args.stop_grad_conv1,
        )
        model = MoCoV3(
            encoder,
            args.moco_dim,
            args.moco_mlp_dim,
            args.moco_t,
            rank=group.rank,
            world=group.size,
        )
        optimizer = create_v3_optimizer(args.optimizer, model.trainable_params(), args.lr, args.wd)
        return model, V3TrainStep(model, optimizer)
    model = MoCo(
        dim=args.moco_dim,
        K=args.moco_k,
        m=args.moco_m,
        T=args.moco_t,
        arch=args.arch,
        bn_splits=args.bn_splits,
        symmetric=args.symmetric,
        seed=args.seed,
        group=group,
        mlp=args.mlp,
        stem=args.stem,
        amp_level=args.amp_level,
    )
    return model, create_train_step(model, args.lr, args.wd, args.amp_level)


def train(args: argparse.Namespace, group, callbacks: Sequence[Callback]) -> None:
    """Builds data, model, step and monitor from the resolved flags, and trains."""
    logger = logging.getLogger("moco")
    ms.set_seed(args.seed)
    data = load_data(
        args.dataset,
        args.data_dir,
        download=args.download,
        image_size=args.image_size,
        val_split=args.val_split,
        skip_bad_images=args.skip_bad_images,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
    )
    if len(data.pretrain) < args.batch_size:  # the last incomplete batch is dropped
        raise ConfigError(
            f"batch_size {args.batch_size} is larger than the training set "
            f"({len(data.pretrain)} images): no full batch"
        )
    model, train_step = create_model_and_step(args, group)
    monitor = create_knn_monitor(
        model.base_encoder if args.method == "v3" else model.encoder_q,
        data,
        args.dataset,
        args.knn_k,
        args.knn_t,
        args.knn_bank_subset,
        workers=args.workers,
        image_size=args.image_size,
        group=group,
    )
    described = monitor.describe() if monitor else "off (needs labelled train and val images)"
    logger.info(
        "%s: %d images to train on; kNN monitor: %s", args.dataset, len(data.pretrain), described
    )
    augmentation = create_augmentation(args.dataset, args.image_size, args.aug_plus, args.method)
    epoch_data = functools.partial(
        create_train_dataset,
        data.pretrain,
        augmentation,
        args.batch_size,
        args.seed,
        workers=args.workers,
        rank=group.rank,
        world=group.size,
    )
    run = settings(TrainSettings, args)
    keys = MODEL_KEYS + V3_KEYS if args.method == "v3" else MODEL_KEYS
    model_keys = {key: getattr(args, key) for key in keys}
    fit(train_step, epoch_data, run, model_keys, monitor, group, callbacks)


def main(argv: Optional[Sequence[str]] = None, callbacks: Sequence[Callback] = ()) -> int:
    logger = setup_logging()
    try:
        args = parse_args(argv)
        if args.resume not in ("", "auto") and not os.path.isfile(args.resume):
            raise CheckpointError(f"--resume: checkpoint not found: {args.resume}")
        args.data_dir = os.path.abspath(args.data_dir)  # the saved config must work from anywhere
        set_device(args.device_target, args.mode)
        group = init_distributed(args.distribute)
        if is_scheduler():
            return 0  # msrun's scheduler: init() served the workers until they finished
        validate_group(args, group.size)
        args.results_dir = broadcast_text(args.results_dir, group)  # one timestamped default
        if group.size > 1:
            n, pid = args.batch_size // group.size, os.getpid()
            logger.info(
                "rank %d of %d: pid %d, %d images of each step", group.rank, group.size, pid, n
            )
        if group.is_main:
            prepare_results_dir(args)
            setup_logging(os.path.join(args.results_dir, "train.log"))
        else:
            logger.setLevel(logging.WARNING)  # one console report: the main device's
        args.resume = resolve_resume(args)  # after saving the config: it keeps "auto"
        train(args, group, callbacks)
        logger.info("done: results in %s", args.results_dir)
    except NonFiniteLossError as err:
        logger.error("error: %s; stopped, the last good checkpoint (if any) is kept", err)
        return 3
    except (ConfigError, DatasetError, CheckpointError, DeviceError) as err:
        logger.error("error: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
