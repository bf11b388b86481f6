"""Command-line and YAML configuration of MoCo training (the mindcv pattern).

A ``--config`` YAML file sets the argparse defaults, typed by the same parser; flags override it.
"""

import argparse
import dataclasses
import difflib
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Optional, TypeVar

import yaml

from .data.datasets import DATASETS
from .eval.features import EVAL_BATCH_SIZE
from .models.precision import AMP_LEVELS
from .models.registry import BACKBONES
from .models.resnet import STEMS
from .models.vit import VITS

T = TypeVar("T")
CONFIG_NAME = "config.yaml"  # the resolved options, as main.py saves them in its results folder
_DATASETS = list(DATASETS)
LARGE_IMAGE = 64  # from this --image-size up, --stem auto picks the ImageNet stem
_DEVICES = ["CPU", "GPU", "Ascend"]
_METHODS, _OPTIMIZERS = ["v1", "v3"], ["sgd", "lars", "adamw"]
# v3: no queue, its own loss, lr and augmentation
_V1_ONLY = ("moco_k", "symmetric", "mlp", "cos", "schedule", "aug_plus")
_V3_ONLY = ("moco_mlp_dim", "moco_m_cos", "warmup_epochs", "stop_grad_conv1")
_THEIRS = " (default: the training config's)"
# Group titles and (flags, type, default, help[, choices]); bool: --X/--no-X, list: nargs="*".
_OPTIONS: list[Any] = [
    "data",
    ("--dataset", str, "cifar10", "dataset to train on", _DATASETS),
    ("--data-dir", str, "./data", "folder holding the dataset (--dataset folder: the images)"),
    ("--download", bool, False, "download the dataset into --data-dir if missing"),
    ("--image-size", int, 0, "side of the training crops; 0: the dataset's (96 STL-10, else 32)"),
    ("--val-split", float, 0.0, "--dataset folder without val/: hold out this fraction per class"),
    ("--skip-bad-images", bool, False, "--dataset folder: skip unreadable images (with a count)"),
    ("--workers", int, 1, "data pipeline workers"),
    ("--train-subset", int, 0, "if > 0, train on only the first N training images"),
    ("--test-subset", int, 0, "if > 0, monitor kNN on only the first N test images"),
    "optimisation",
    ("-a --arch", str, "resnet18", "backbone name (a ViT needs --method v3)", sorted(BACKBONES)),
    ("--stem", str, "auto", f"auto: imagenet from --image-size {LARGE_IMAGE}", ["auto", *STEMS]),
    ("--lr --learning-rate", float, 0.06, "initial learning rate (0.06 for batch 512)"),
    ("--epochs", int, 200, "number of training epochs"),
    ("--schedule", int, [120, 160], "epochs at which lr drops 10x; ignored with --cos"),
    ("--cos", bool, False, "use the cosine lr schedule"),
    ("--batch_size --batch-size", int, 512, "mini-batch size"),
    ("--wd", float, 5e-4, "weight decay"),
    ("--max-steps", int, 0, "if > 0, stop each epoch after N steps"),
    "moco",
    ("--moco-dim", int, 128, "feature dimension"),
    ("--moco-k", int, 4096, "queue size; number of negative keys"),
    ("--moco-m", float, 0.99, "momentum of the key encoder update"),
    ("--moco-t", float, 0.1, "softmax temperature"),
    (
        "--method",
        str,
        "v1",
        "v1: MoCo v1/v2 (a queue; v2: --mlp --aug-plus); v3: MoCo v3",
        _METHODS,
    ),
    ("--bn-splits", int, 8, "BatchNorm groups per device (shuffle BN on one device)"),
    ("--symmetric", bool, False, "symmetric loss that backprops to both crops"),
    ("--mlp", bool, False, "MoCo v2: MLP projection head (512-512-moco_dim, ReLU)"),
    ("--aug-plus", bool, False, "MoCo v2 augmentation: crop scale (0.2, 1), blur from 64 px"),
    "moco v3",
    ("--moco-mlp-dim", int, 4096, "hidden width of the projector and predictor MLPs"),
    ("--moco-m-cos", bool, False, "raise the momentum from --moco-m to 1 on a half cosine"),
    ("--warmup-epochs", int, 0, "epochs of linear lr warm-up before the cosine decay"),
    ("--optimizer", str, "", "empty: sgd (v1), lars (v3 ResNet), adamw (v3 ViT)", _OPTIMIZERS),
    ("--stop-grad-conv1", bool, False, "ViT: a frozen random patch projection (the paper's)"),
    "knn monitor",
    ("--knn-k", int, 200, "k of the kNN monitor"),
    ("--knn-t", float, 0.1, "softmax temperature of the kNN monitor"),
    ("--knn-interval", int, 1, "epochs between kNN monitors; 0 disables"),
    ("--knn-bank-subset", int, 0, "if > 0, monitor with the first N train images as bank (quick)"),
    "run",
    ("--resume", str, "", "checkpoint to resume from; auto: the results folder's last, if any"),
    ("--results-dir", str, "", "output folder; empty means ./cache-<timestamp>-moco"),
    ("--device_target", str, "CPU", "MindSpore device", _DEVICES),
    ("--distribute", bool, False, "data-parallel on msrun's workers; --batch_size is global"),
    ("--amp-level", str, "O0", "O0 float32; O1 float16 convs/fc; O2 float16 but BN", AMP_LEVELS),
    ("--mode", int, 0, "0 = GRAPH, 1 = PYNATIVE", [0, 1]),
    ("--seed", int, 0, "random seed"),
]
_EVAL_OPTIONS: list[Any] = [  # None: set by resolve_evaluation_args
    ("--config", str, "", "training config; default: config.yaml beside the checkpoint"),
    ("--data-dir", str, None, "folder holding the dataset" + _THEIRS),
    ("--dataset", str, None, "dataset to evaluate on" + _THEIRS, _DATASETS),
    ("--device_target", str, None, "MindSpore device" + _THEIRS, _DEVICES),
    ("--mode", int, None, "0 = GRAPH, 1 = PYNATIVE" + _THEIRS, [0, 1]),
    ("--batch_size --batch-size", int, EVAL_BATCH_SIZE, "images per batch"),
    ("--workers", int, None, "data pipeline workers" + _THEIRS),
    ("--val-split", float, None, "--dataset folder: held-out fraction" + _THEIRS),
    ("--skip-bad-images", bool, None, "--dataset folder: skip unreadable images" + _THEIRS),
    ("--train-subset", int, 0, "if > 0, use first N train images (default: all, not the run's)"),
    ("--test-subset", int, 0, "if > 0, use only the first N test images (default: all)"),
]


class ConfigError(ValueError):
    """A configuration file or a combination of options is unusable."""


def add_options(parser: argparse.ArgumentParser, rows: list[Any]) -> dict[str, argparse.Action]:
    """Adds the options of a table like ``_OPTIONS`` to ``parser``; their actions by dest."""
    options, group = {}, parser
    for row in rows:
        if isinstance(row, str):
            group = parser.add_argument_group(row)
            continue
        flags, kind, default, help_, *choices = row
        kwargs = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        if choices:
            kwargs["choices"] = choices[0]
        if isinstance(default, list):
            kwargs["nargs"], default = "*", list(default)
        action = group.add_argument(*flags.split(), default=default, help=help_, **kwargs)
        options[action.dest] = action
    return options


_ACTIONS = add_options(argparse.ArgumentParser(), _OPTIONS)  # the training flags' actions by dest


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, unless it is None or "" (the help then says what applies)."""

    def _get_help_string(self, action):
        empty = action.default is None or action.default == ""
        return action.help if empty else super()._get_help_string(action)


def script_parser(description: str) -> argparse.ArgumentParser:
    """The scripts' parser: no abbreviated flags, defaults shown in ``--help``."""
    return argparse.ArgumentParser(
        description=description, allow_abbrev=False, formatter_class=_Formatter
    )


def create_parser() -> argparse.ArgumentParser:
    """The training parser: every flag with the MoCo CIFAR demo's default."""
    parser = script_parser("Train MoCo on CIFAR-10/100, STL-10 or a folder of images")
    parser.add_argument("--config", default="", help="YAML file of defaults; flags override it")
    add_options(parser, _OPTIONS)
    return parser


def add_evaluation_arguments(parser: argparse.ArgumentParser, modes=None) -> None:
    """The flags of infer.py and visualize.py; ``--checkpoint`` is required unless in ``modes``."""
    (modes or parser).add_argument(
        "--checkpoint",
        default="",
        required=modes is None,
        help="checkpoint written by main.py (e.g. RESULTS/model_last.ckpt)",
    )
    add_options(parser, _EVAL_OPTIONS)
    parser.add_argument("--no-cache", action="store_true", help="recompute features; no cache")


def check_ranges(
    args: argparse.Namespace, positive: str, non_negative="", more=(), title="invalid arguments"
) -> None:
    """ConfigError listing each named dest that is not > 0 (or not >= 0), then ``more``."""
    errors = [
        f"{dest.replace('_', '-')} must be {'positive' if strict else '>= 0'}, got {value}"
        for names, strict in ((positive, True), (non_negative, False))
        for dest in names.split()
        if (value := getattr(args, dest)) < 0 or strict and value == 0
    ]
    if errors := errors + list(more):
        raise ConfigError(f"{title}:\n  " + "\n  ".join(errors))


def resolve_evaluation_args(args: argparse.Namespace, more: Sequence[str] = ()) -> None:
    """Fills unset flags (and the dests ``more``) from ``--config``, else the checkpoint's
    config.yaml, else the training defaults; checks the shared ones."""
    beside = os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), CONFIG_NAME)
    path = args.config or beside
    training = load_config_file(path) if args.config or os.path.isfile(path) else {}
    training = {str(key).replace("-", "_"): value for key, value in training.items()}
    shared = "dataset data_dir device_target mode workers val_split skip_bad_images".split()
    for dest in (*shared, *more):
        if getattr(args, dest) is None:
            setattr(args, dest, training.get(dest, _ACTIONS[dest].default))
    check_ranges(args, "batch_size workers", "train_subset test_subset")


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
        raise ConfigError(f"config file {path!r} must be a mapping, got {type(content).__name__}")
    return content or {}


def _typed(action: argparse.Action, value: Any) -> Any:
    """A YAML value as its flag would parse it; TypeError or ValueError if it cannot."""
    kind, many = action.type or bool, action.nargs == "*"  # bool: a BooleanOptionalAction
    if isinstance(value, list) != many:
        raise TypeError("a list is needed" if many else "a list is not allowed")
    items = value if many else [value]
    if kind in (bool, str) and (bad := [v for v in items if not isinstance(v, kind)]):
        raise TypeError(f"{type(bad[0]).__name__} is not {kind.__name__}")  # argparse would take 42
    typed = items if kind is bool else [kind(str(item)) for item in items]
    if action.choices is not None and (bad := [v for v in typed if v not in action.choices]):
        raise ValueError(f"invalid choice: {bad[0]!r} (choose from {action.choices})")
    return typed if many else typed[0]


def _yaml_defaults(content: dict[str, Any], path: str) -> dict[str, Any]:
    """A ``--config`` file's entries typed as their flags; ConfigError: a line per bad entry."""
    values, keys, errors = {}, {}, []
    for key, value in content.items():
        key = str(key)
        action = _ACTIONS.get(dest := key.replace("-", "_"))
        if action is None:
            close = difflib.get_close_matches(dest, list(_ACTIONS))
            hint = ", ".join(name.replace("_", "-") if "-" in key else name for name in close)
            hint = f"; did you mean {hint}?" if close else ""
            errors.append(f"unknown key {key!r}{hint} (known keys: {', '.join(sorted(_ACTIONS))})")
        elif dest in keys:
            errors.append(f"sets {dest} twice, as {keys[dest]!r} and {key!r}")
        else:
            keys[dest] = key
            try:
                values[dest] = _typed(action, value)
            except (TypeError, ValueError) as error:
                kind = getattr(action.type, "__name__", "bool (true/false)")
                kind = "list of " + kind if action.nargs == "*" else kind
                errors.append(f"{key} = {value!r} is invalid, expected {kind} ({error})")
    if errors:
        raise ConfigError(f"invalid config file {path!r}:\n  " + "\n  ".join(errors))
    return values


def default_results_dir(now: Optional[datetime] = None) -> str:
    """The demo's timestamped output folder, e.g. ./cache-2024-01-31-12-00-00-moco."""
    return "./cache-" + (now or datetime.now()).strftime("%Y-%m-%d-%H-%M-%S-moco")


def _method_errors(args: argparse.Namespace, given: set[str]) -> list[str]:
    """Flags set for the other method (``given``: those set by the command line or the YAML);
    fills in v3's fixed settings (no queue, one BN split, symmetric) and the optimizer."""
    v3, vit = args.method == "v3", args.arch in VITS
    other = _V1_ONLY if v3 else _V3_ONLY
    errors = [f"--{dest.replace('_', '-')} is not used by --method {args.method}" for dest in other]
    errors = [error for dest, error in zip(other, errors) if dest in given]
    if v3 and "bn_splits" in given and args.bn_splits > 1:
        errors.append("--bn-splits > 1 is shuffle BN of --method v1; v3 has no queue to protect")
    if v3 and args.amp_level != "O0":
        errors.append("--method v3 runs in float32: --amp-level O0")
    if vit and not v3:
        errors.append(f"--arch {args.arch} is a ViT: it trains with --method v3")
    default = ("adamw" if vit else "lars") if v3 else "sgd"
    args.optimizer = args.optimizer or default
    if (args.optimizer == "sgd") == v3:
        errors.append(f"--optimizer {args.optimizer} is not one of --method {args.method}'s")
    if v3:
        args.moco_k, args.bn_splits, args.symmetric, args.mlp = 0, 1, True, False
    return errors


def validate_config(args: argparse.Namespace, given: Sequence[str] = ()) -> None:
    """Checks that the options can run; ConfigError lists each invalid value, one per line."""
    positive = "batch_size epochs moco_dim bn_splits knn_k workers moco_t knn_t lr moco_mlp_dim"
    positive += "" if args.method == "v3" else " moco_k"
    non_negative = "knn_interval knn_bank_subset train_subset test_subset max_steps wd image_size"
    non_negative += " warmup_epochs"
    errors = _method_errors(args, set(given))
    add, steps = errors.append, list(args.schedule)
    bs, k, bn = args.batch_size, args.moco_k, args.bn_splits
    if not 0.0 <= args.moco_m < 1.0:
        add(f"moco-m must be in [0, 1), got {args.moco_m}: 1 would freeze the key encoder")
    if any(m <= 0 for m in steps) or any(a >= b for a, b in zip(steps, steps[1:])):
        add(f"schedule milestones must be positive and strictly increasing, got {steps}")
    per_step = bs * (2 if args.symmetric else 1)  # --symmetric enqueues both crops' keys
    if k > 0 and per_step > 0 and k % per_step:
        what = f"2 * batch_size = {per_step}" if args.symmetric else f"batch_size {bs}"
        fit = f"--moco-k {max(1, round(k / per_step)) * per_step}"
        add(f"moco-k {k} is not a multiple of {what}: the queue takes whole batches, e.g. {fit}")
    if bs > 0 and bn > 0 and bs % bn:
        fit = f"e.g. --bn-splits {max(d for d in range(1, bn + 1) if bs % d == 0)}"
        add(f"batch_size {bs} is not a multiple of bn-splits {bn}: BN needs equal splits, {fit}")
    if args.warmup_epochs >= args.epochs > 0:
        add(f"warmup-epochs {args.warmup_epochs} leaves no epoch of the {args.epochs} to decay")
    if not 0 <= args.val_split < 1:
        add(f"val-split must be in [0, 1) (0: no hold-out), got {args.val_split}")
    if args.dataset != "folder" and (args.val_split or args.skip_bad_images):
        add("val-split and skip-bad-images apply to --dataset folder only")
    check_ranges(args, positive, non_negative, errors, "invalid configuration")


def validate_group(args: argparse.Namespace, world: int) -> None:
    """Checks that the global batch splits evenly over ``world`` devices and their BN splits."""
    if args.batch_size % (world * args.bn_splits):
        raise ConfigError(
            f"batch_size {args.batch_size} (the global batch) is not a multiple of {world} "
            f"devices x bn-splits {args.bn_splits}: each device needs equal BN splits"
        )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The ``--config`` YAML file, then the command line over it, validated; an empty
    ``results_dir`` becomes the ``--resume`` checkpoint's folder, else a new timestamped one."""
    pre_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # so -h shows YAML
    pre_parser.add_argument("--config", default="")
    path = pre_parser.parse_known_args(argv)[0].config
    parser, from_yaml = create_parser(), {}
    if path:
        parser.set_defaults(**(from_yaml := _yaml_defaults(load_config_file(path), path)))
    args = parser.parse_args(argv)
    flags = {arg.split("=")[0] for arg in (sys.argv[1:] if argv is None else argv)}
    given = {dest for dest, a in _ACTIONS.items() if flags & set(a.option_strings)}
    given |= {dest for dest, value in from_yaml.items() if value != _ACTIONS[dest].default}
    if not args.results_dir:
        resuming = args.resume and args.resume != "auto"
        args.results_dir = os.path.dirname(args.resume) if resuming else default_results_dir()
    args.image_size = args.image_size or DATASETS[args.dataset].image_size
    if args.stem == "auto":
        args.stem = "imagenet" if args.image_size >= LARGE_IMAGE else "cifar"
    validate_config(args, given)
    return args


def settings(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
    """The dataclass ``cls`` of ``src/`` from the flags of its field names, and ``values``."""
    names = {field.name for field in dataclasses.fields(cls)} - set(values)
    flags = {n: tuple(v) if isinstance(v := getattr(args, n), list) else v for n in names}
    return cls(**flags, **values)


def save_config(args: argparse.Namespace, path: str) -> None:
    """Writes the options (underscore keys, parser order, no ``config``; for v3 none of v1's) as
    ``--config`` YAML."""
    skip = (*_V1_ONLY, "bn_splits") if args.method == "v3" else ()
    values = {d: list(v) if isinstance(v := getattr(args, d), tuple) else v for d in _ACTIONS}
    values = {dest: value for dest, value in values.items() if dest not in skip}
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(values, handle, sort_keys=False, default_flow_style=None)
