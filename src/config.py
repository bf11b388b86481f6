"""Command-line and YAML configuration of MoCo training on CIFAR (the mindcv pattern).

A YAML file given by ``--config`` sets the argparse defaults; command-line flags override it.
Each YAML entry becomes flag tokens (``cos: false`` -> ``--no-cos``) parsed by the same parser,
so YAML and command line are typed alike. ``parse_args`` then validates the result.
"""

import argparse
import difflib
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Optional

import yaml

from .eval.features import EVAL_BATCH_SIZE
from .models.resnet import ARCHS

CONFIG_NAME = "config.yaml"  # the resolved options, as main.py saves them in its results folder
_DATASETS = ["cifar10", "cifar100"]
_DEVICES = ["CPU", "GPU", "Ascend"]


class ConfigError(ValueError):
    """A configuration file or a combination of options is unusable."""


def _build_parser(
    exit_on_error: bool = True,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.Action]]:
    """The training parser, and its options (all but --help and --config) by dest."""
    parser = argparse.ArgumentParser(
        description="Train MoCo on CIFAR-10/100 with MindSpore",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        exit_on_error=exit_on_error,
    )
    parser.add_argument(
        "--config",
        type=str,
        default="",
        help="YAML file whose keys set the defaults; command-line flags override it",
    )
    options: dict[str, argparse.Action] = {}
    switch = {"action": argparse.BooleanOptionalAction, "default": False}  # --X and --no-X

    def group(title: str) -> Callable[..., None]:  # add_argument of a new group, recording
        container = parser.add_argument_group(title)

        def add(*flags: str, **kwargs: Any) -> None:
            action = container.add_argument(*flags, **kwargs)
            options[action.dest] = action

        return add

    add = group("data")
    add("--dataset", type=str, default="cifar10", choices=_DATASETS, help="dataset to train on")
    add("--data-dir", type=str, default="./data", help="folder holding the dataset")
    add("--download", **switch, help="download the dataset into --data-dir if missing")
    add("--workers", type=int, default=1, help="data pipeline workers")
    add(
        "--train-subset",
        type=int,
        default=0,
        help="if > 0, train on only the first N training images",
    )
    add(
        "--test-subset",
        type=int,
        default=0,
        help="if > 0, monitor kNN on only the first N test images",
    )
    add = group("optimisation")
    add("-a", "--arch", type=str, default="resnet18", choices=sorted(ARCHS), help="backbone name")
    add(
        "--lr",
        "--learning-rate",
        dest="lr",
        type=float,
        default=0.06,
        help="initial learning rate (0.06 for batch 512)",
    )
    add("--epochs", type=int, default=200, help="number of training epochs")
    add(
        "--schedule",
        type=int,
        nargs="*",
        default=[120, 160],
        help="epochs at which lr drops 10x; ignored with --cos",
    )
    add("--cos", **switch, help="use the cosine lr schedule")
    add(
        "--batch_size",
        "--batch-size",
        dest="batch_size",
        type=int,
        default=512,
        help="mini-batch size",
    )
    add("--wd", type=float, default=5e-4, help="weight decay")
    add("--max-steps", type=int, default=0, help="if > 0, stop each epoch after N steps")
    add = group("moco")
    add("--moco-dim", type=int, default=128, help="feature dimension")
    add("--moco-k", type=int, default=4096, help="queue size; number of negative keys")
    add("--moco-m", type=float, default=0.99, help="momentum of the key encoder update")
    add("--moco-t", type=float, default=0.1, help="softmax temperature")
    add(
        "--bn-splits",
        type=int,
        default=8,
        help="BatchNorm splits simulating multi-device BN; 1 is SyncBN-like",
    )
    add("--symmetric", **switch, help="symmetric loss that backprops to both crops")
    add = group("knn monitor")
    add("--knn-k", type=int, default=200, help="k of the kNN monitor")
    add("--knn-t", type=float, default=0.1, help="softmax temperature of the kNN monitor")
    add("--knn-interval", type=int, default=1, help="epochs between kNN monitors; 0 disables")
    add = group("run")
    add(
        "--resume",
        type=str,
        default="",
        help='checkpoint to resume from; "auto": the results folder\'s last one, if any',
    )
    add(
        "--results-dir",
        type=str,
        default="",
        help="output folder; empty means ./cache-<timestamp>-moco",
    )
    add("--device_target", type=str, default="CPU", choices=_DEVICES, help="MindSpore device")
    add("--mode", type=int, default=0, choices=[0, 1], help="0 = GRAPH, 1 = PYNATIVE")
    add("--seed", type=int, default=0, help="random seed")
    return parser, options


def create_parser() -> argparse.ArgumentParser:
    """The training parser: every flag with the MoCo CIFAR demo's default."""
    return _build_parser()[0]


def add_evaluation_arguments(
    parser: argparse.ArgumentParser, checkpoint_required: bool = True
) -> None:
    """Adds the flags of infer.py and visualize.py: checkpoint, data, how to run the encoder."""
    add, theirs = parser.add_argument, "(default: the training config's)"
    add(
        "--checkpoint",
        required=checkpoint_required,
        default="",
        help="checkpoint written by main.py (e.g. RESULTS/model_last.ckpt)",
    )
    add("--config", default="", help="training config (default: config.yaml beside the checkpoint)")
    add("--data-dir", default=None, help=f"folder holding the dataset {theirs}")
    add("--dataset", default=None, choices=_DATASETS, help=f"dataset to evaluate on {theirs}")
    add("--device_target", default=None, choices=_DEVICES, help=f"MindSpore device {theirs}")
    add("--mode", type=int, default=None, choices=[0, 1], help=f"0 = GRAPH, 1 = PYNATIVE {theirs}")
    add(
        "--batch_size",
        "--batch-size",
        dest="batch_size",
        type=int,
        default=EVAL_BATCH_SIZE,
        help="images per feature-extraction batch (default: %(default)s)",
    )
    add("--workers", type=int, default=None, help=f"data pipeline workers {theirs}")
    add(
        "--train-subset",
        type=int,
        default=0,
        help="if > 0, use only the first N training images "
        "(default: all, not the training run's monitor subset)",
    )
    add(
        "--test-subset",
        type=int,
        default=0,
        help="if > 0, use only the first N test images (default: all)",
    )
    add(
        "--no-cache",
        action="store_true",
        help="extract features again instead of reading or writing the cache",
    )


def resolve_evaluation_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fills the unset evaluation flags from the training run's config (``--config``, else
    config.yaml beside the checkpoint, if any), else main.py's defaults; checks the numbers."""
    path = args.config or os.path.join(
        os.path.dirname(os.path.abspath(args.checkpoint)), CONFIG_NAME
    )
    training = load_config_file(path) if args.config or os.path.isfile(path) else {}
    training = {str(key).replace("-", "_"): value for key, value in training.items()}
    defaults = vars(create_parser().parse_args([]))
    for dest in ("dataset", "data_dir", "device_target", "mode", "workers", "knn_k", "knn_t"):
        if hasattr(args, dest) and getattr(args, dest) is None:
            setattr(args, dest, training.get(dest, defaults[dest]))
    errors = [
        f"{dest} must be positive, got {value}"
        for dest in (
            "batch_size",
            "workers",
            "knn_k",
            "knn_t",
            "linear_epochs",
            "linear_lr",
            "linear_batch_size",
        )
        if (value := getattr(args, dest, 1)) <= 0
    ]
    errors += [
        f"{dest} must be >= 0, got {value}"
        for dest in ("train_subset", "test_subset")
        if (value := getattr(args, dest)) < 0
    ]
    if errors:
        raise ConfigError("invalid arguments:\n  " + "\n  ".join(errors))
    return args


def load_config_file(path: str) -> dict[str, Any]:
    """The mapping in a YAML file, keys unchecked; ConfigError if missing, bad or not a mapping."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        try:
            content = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path!r} is not valid YAML: {error}") from error
    if not isinstance(content, (dict, type(None))):  # None: an empty file
        raise ConfigError(
            f"config file {path!r} must be a mapping of option: value, got {type(content).__name__}"
        )
    return content or {}


def _tokens(action: argparse.Action, value: Any) -> list[str]:
    """The command-line tokens giving ``value`` to ``action``; TypeError for a wrong YAML shape."""
    if isinstance(action, argparse.BooleanOptionalAction) and isinstance(value, bool):
        return [action.option_strings[0 if value else 1]]  # --cos / --no-cos
    if isinstance(value, list) != (action.nargs == "*"):
        raise TypeError("a list is needed" if action.nargs == "*" else "a list is not allowed")
    if action.type is str and not isinstance(value, str):  # argparse would take 42 or null
        raise TypeError(f"{type(value).__name__} is not str")
    flag = action.option_strings[-1]  # "--flag=value": a value may start with "-"
    return [flag, *map(str, value)] if isinstance(value, list) else [f"{flag}={value}"]


def _yaml_defaults(content: dict[str, Any], path: str) -> dict[str, Any]:
    """Parses each YAML entry with the training parser; the typed values by dest."""
    parser, options = _build_parser(exit_on_error=False)
    values: dict[str, Any] = {}
    spelled_as: dict[str, str] = {}
    errors: list[str] = []
    for key, value in content.items():
        key = str(key)
        dest = key.replace("-", "_")
        action = options.get(dest)
        if action is None:
            close = difflib.get_close_matches(dest, list(options), n=3)
            close = [name.replace("_", "-") if "-" in key else name for name in close]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            errors.append(f"unknown key {key!r}{hint} (known keys: {', '.join(sorted(options))})")
        elif dest in spelled_as:
            errors.append(f"sets {dest} twice, as {spelled_as[dest]!r} and {key!r}")
        else:
            spelled_as[dest] = key
            try:
                namespace, extra = parser.parse_known_args(_tokens(action, value))
                values[dest] = getattr(namespace, dest)
                if extra or isinstance(value, list) and len(values[dest]) != len(value):
                    raise TypeError("a list item looks like a flag")
            except (argparse.ArgumentError, TypeError) as error:
                expected = (
                    "bool (true/false)"
                    if action.type is None
                    else ("list of " if action.nargs == "*" else "") + action.type.__name__
                )
                errors.append(f"{key} = {value!r} is invalid, expected {expected} ({error})")
    if errors:
        raise ConfigError(f"invalid config file {path!r}:\n  " + "\n  ".join(errors))
    return values


def default_results_dir(now: Optional[datetime] = None) -> str:
    """The demo's timestamped output folder, e.g. ./cache-2024-01-31-12-00-00-moco."""
    return "./cache-" + (now or datetime.now()).strftime("%Y-%m-%d-%H-%M-%S-moco")


def validate_config(args: argparse.Namespace) -> None:
    """Checks that the options can run; ConfigError lists each invalid value, one per line."""
    errors = [
        f"{dest.replace('_', '-')} must be positive, got {getattr(args, dest)}"
        for dest in (
            "batch_size",
            "epochs",
            "moco_k",
            "moco_dim",
            "bn_splits",
            "knn_k",
            "workers",
            "moco_t",
            "knn_t",
            "lr",
        )
        if getattr(args, dest) <= 0
    ]
    errors += [
        f"{dest.replace('_', '-')} must be >= 0 (0 disables it), got {getattr(args, dest)}"
        for dest in ("knn_interval", "train_subset", "test_subset", "max_steps")
        if getattr(args, dest) < 0
    ]
    if not 0.0 <= args.moco_m < 1.0:
        errors.append(
            f"moco-m must be in [0, 1), got {args.moco_m}: 1 would freeze the key encoder"
        )
    if args.wd < 0:
        errors.append(f"wd must be >= 0, got {args.wd}")
    steps = list(args.schedule)
    if any(m <= 0 for m in steps) or any(a >= b for a, b in zip(steps, steps[1:])):
        errors.append(
            f"schedule milestones must be positive and strictly increasing, got "
            f"{steps}; e.g. --schedule 120 160"
        )
    per_step = args.batch_size * (2 if args.symmetric else 1)  # keys enqueued per step
    if args.moco_k > 0 and per_step > 0 and args.moco_k % per_step:
        what = (
            f"2 * batch_size = {per_step} (--symmetric enqueues both crops' keys)"
            if args.symmetric
            else f"batch_size {per_step}"
        )
        errors.append(
            f"moco-k {args.moco_k} is not a multiple of {what}: the queue must be "
            f"filled by whole batches; use e.g. --moco-k "
            f"{max(1, round(args.moco_k / per_step)) * per_step}"
        )
    if args.batch_size > 0 and args.bn_splits > 0 and args.batch_size % args.bn_splits:
        divisor = max(d for d in range(1, args.bn_splits + 1) if args.batch_size % d == 0)
        errors.append(
            f"batch_size {args.batch_size} is not a multiple of bn-splits "
            f"{args.bn_splits}: SplitBatchNorm needs equal splits; use a bn-splits "
            f"that divides the batch, e.g. --bn-splits {divisor}"
        )
    if 0 < args.train_subset < args.batch_size:  # the last incomplete batch is dropped
        errors.append(
            f"train-subset {args.train_subset} is smaller than batch_size "
            f"{args.batch_size}: no full batch to train on; raise --train-subset or "
            f"lower --batch_size"
        )
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses the ``--config`` YAML file, then the command line over it, and validates.

    An empty ``results_dir`` becomes the ``--resume`` checkpoint's folder, or else
    ``default_results_dir()``. ConfigError for a bad file or combination; malformed
    command-line flags exit with usage (argparse behaviour).
    """
    pre_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # so -h shows YAML
    pre_parser.add_argument("--config", type=str, default="")
    path = pre_parser.parse_known_args(argv)[0].config
    parser = create_parser()
    if path:
        parser.set_defaults(**_yaml_defaults(load_config_file(path), path))
    args = parser.parse_args(argv)
    if not args.results_dir:
        resuming = args.resume and args.resume != "auto"
        args.results_dir = os.path.dirname(args.resume) if resuming else default_results_dir()
    validate_config(args)
    return args


def save_config(args: argparse.Namespace, path: str) -> None:
    """Writes the options (underscore keys, parser order, no ``config``) as ``--config`` YAML."""
    values = {
        dest: list(v) if isinstance(v := getattr(args, dest), tuple) else v
        for dest in _build_parser()[1]
    }
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(values, handle, sort_keys=False, default_flow_style=None)
