"""Unsupervised MoCo training on CIFAR-10/100 with a kNN monitor.

    python main.py --config configs/cifar10.yaml --device_target GPU
"""
import csv
import os
import sys

import mindspore as ms

from src.config import ConfigError, parse_args, save_config
from src.data import DatasetError, create_eval_dataset, create_train_dataset, get_dataset_spec, load_cifar
from src.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from src.eval.features import knn_monitor
from src.train.schedule import learning_rate
from src.train.step import MoCoTrainStep, create_optimizer, set_learning_rate
from src.train.loop import NonFiniteLossError, train_one_epoch
from src.models import create_moco
from src.utils import faults
from src.utils.device import set_device
from src.utils.progress import setup_logging

LOG_FIELDS = ("epoch", "lr", "loss", "knn_top1", "seconds")
CHECKPOINT_NAME = "model_last.ckpt"
EVAL_BATCH_SIZE = 256


def prepare_results_dir(args):
    """Creates the results folder, fails early if it is not writable, saves the config."""
    probe = os.path.join(args.results_dir, ".write_test")
    try:
        os.makedirs(args.results_dir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"results folder {args.results_dir} is not writable: {err}") from err
    save_config(args, os.path.join(args.results_dir, "config.yaml"))


def resolve_resume(args):
    """Turns ``--resume auto`` into the results folder's last checkpoint, if any."""
    if args.resume != "auto":
        return args.resume
    path = os.path.join(args.results_dir, CHECKPOINT_NAME)
    return path if os.path.isfile(path) else ""


def restart_log(path, start_epoch):
    """Keeps the log rows of finished epochs (those before ``start_epoch``) only."""
    rows = []
    if start_epoch > 0 and os.path.isfile(path):
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["epoch"]) < start_epoch]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def append_log(path, **row):
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, LOG_FIELDS).writerow(row)


def load_data(args):
    spec = get_dataset_spec(args.dataset)
    train = load_cifar(args.dataset, args.data_dir, "train", download=args.download)
    test = load_cifar(args.dataset, args.data_dir, "test")
    if args.train_subset:
        train = train.subset(args.train_subset)
    if args.test_subset:
        test = test.subset(args.test_subset)
    if len(train) < args.batch_size:
        raise ConfigError(f"batch_size {args.batch_size} is larger than the training set "
                          f"({len(train)} images)")
    return spec, train, test


def train(args, logger):
    ms.set_seed(args.seed)
    spec, train_split, test_split = load_data(args)
    logger.info("%s: %d train / %d test images, %d classes", args.dataset, len(train_split),
                len(test_split), train_split.num_classes)

    model = create_moco(args)
    optimizer = create_optimizer(model, args.lr, args.wd)
    train_step = MoCoTrainStep(model, optimizer)
    log_path = os.path.join(args.results_dir, "log.csv")
    checkpoint_path = os.path.join(args.results_dir, CHECKPOINT_NAME)

    start_epoch = 1
    resume = resolve_resume(args)
    if resume:
        start_epoch = load_checkpoint(train_step, resume, args) + 1
        logger.info("resumed from %s: continuing at epoch %d", resume, start_epoch)
    restart_log(log_path, start_epoch)

    def monitor():
        bank = create_eval_dataset(train_split, spec.mean, spec.std, EVAL_BATCH_SIZE, args.workers)
        test = create_eval_dataset(test_split, spec.mean, spec.std, EVAL_BATCH_SIZE, args.workers)
        acc = knn_monitor(model.encoder_q, bank, test, train_split.num_classes, args.knn_k, args.knn_t,
                          EVAL_BATCH_SIZE)
        return acc["top1"]

    if start_epoch == 1 and args.knn_interval:
        top1 = monitor()
        logger.info("epoch 0 (initialisation): kNN top-1 %.2f%%", top1)
        append_log(log_path, epoch=0, lr="", loss="", knn_top1=f"{top1:.2f}", seconds="")

    for epoch in range(start_epoch, args.epochs + 1):
        lr = learning_rate(epoch, args.lr, args.epochs, args.cos, args.schedule)
        set_learning_rate(optimizer, lr)
        dataset = create_train_dataset(train_split, spec.mean, spec.std, args.batch_size, args.seed,
                                       epoch, args.workers)
        loss, seconds = train_one_epoch(train_step, dataset, epoch, args.epochs, lr, args.seed,
                                        args.batch_size, args.max_steps)
        top1 = ""
        if args.knn_interval and (epoch % args.knn_interval == 0 or epoch == args.epochs):
            top1 = f"{monitor():.2f}"
        logger.info("epoch %d/%d lr %.5f loss %.4f kNN top-1 %s%% (%.0fs)", epoch, args.epochs, lr,
                    loss, top1 or "-", seconds)
        # Log first, then checkpoint: a resume drops log rows the checkpoint does not cover.
        append_log(log_path, epoch=epoch, lr=f"{lr:.6g}", loss=f"{loss:.6f}", knn_top1=top1,
                   seconds=f"{seconds:.1f}")
        save_checkpoint(train_step, checkpoint_path, epoch, args)
        faults.kill_if_requested(f"epoch-end:{epoch}")
    logger.info("done: results in %s", args.results_dir)


def main(argv=None):
    logger = setup_logging()
    try:
        args = parse_args(argv)
        if args.resume and args.resume != "auto" and not os.path.isfile(args.resume):
            raise CheckpointError(f"--resume: checkpoint not found: {args.resume}")
        args.data_dir = os.path.abspath(args.data_dir)  # the saved config must work from anywhere
        set_device(args.device_target, args.mode)
        prepare_results_dir(args)
        setup_logging(os.path.join(args.results_dir, "train.log"))
        train(args, logger)
    except NonFiniteLossError as err:
        logger.error("error: %s; stopped, the last good checkpoint (if any) is kept", err)
        return 3
    except (ConfigError, DatasetError, CheckpointError) as err:
        logger.error("error: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
