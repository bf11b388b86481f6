"""Command-line and YAML configuration for MoCo training on CIFAR.

Follows the mindcv pattern: a YAML file given by ``--config`` is read first
and becomes the argparse defaults, flags on the command line override it, and
the resolved namespace is validated before any compute starts.

The flag names and defaults are those of the parameter table in the MoCo
CIFAR-10 demo notebook (facebookresearch/moco, ``colab/moco_cifar10_demo``),
plus a few options the MindSpore port needs (device, graph mode, subsets).

Example::

    args = parse_args(["--config", "configs/cifar10.yaml", "--epochs", "1"])
    save_config(args, os.path.join(args.results_dir, "config.yaml"))
"""

import argparse
import difflib
import os
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml

__all__ = [
    "ConfigError",
    "SUPPORTED_ARCHS",
    "create_parser",
    "parse_args",
    "validate_config",
    "load_config_file",
    "save_config",
    "default_results_dir",
]

SUPPORTED_ARCHS = ("resnet18",)

# The one argparse dest that names the YAML file itself; it is never a key
# inside a YAML file and is not written by save_config.
_CONFIG_DEST = "config"


class ConfigError(ValueError):
    """A configuration file or a combination of options is unusable."""


def _add_bool_flag(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    # BooleanOptionalAction also creates --no-FLAG, so a YAML recipe that sets
    # e.g. ``cos: true`` can still be switched off from the command line.
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=False, help=help_text)


def create_parser() -> argparse.ArgumentParser:
    """Builds the argument parser with every flag and its default.

    Returns:
        A parser whose defaults are the MoCo CIFAR demo table. YAML values are
        applied on top of these by ``parse_args``.
    """
    parser = argparse.ArgumentParser(
        description="Train MoCo on CIFAR-10/100 with MindSpore",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        # Prefix matching would let the --config pre-pass and the full parser
        # disagree on tokens such as "--co".
        allow_abbrev=False,
    )
    parser.add_argument("--config", type=str, default="",
                        help="YAML file whose keys set the defaults; command-line flags override it")

    group = parser.add_argument_group("data")
    group.add_argument("--dataset", type=str, default="cifar10", choices=["cifar10", "cifar100"],
                       help="dataset to train on")
    group.add_argument("--data-dir", type=str, default="./data", help="folder holding the dataset")
    _add_bool_flag(group, "--download", "download the dataset into --data-dir if missing")
    group.add_argument("--workers", type=int, default=1, help="data pipeline workers")
    group.add_argument("--train-subset", type=int, default=0,
                       help="if > 0, train on only the first N training images")
    group.add_argument("--test-subset", type=int, default=0,
                       help="if > 0, monitor kNN on only the first N test images")

    group = parser.add_argument_group("optimisation")
    group.add_argument("-a", "--arch", type=str, default="resnet18", help="backbone name")
    group.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=0.06,
                       help="initial learning rate (0.06 for batch 512)")
    group.add_argument("--epochs", type=int, default=200, help="number of training epochs")
    group.add_argument("--schedule", type=int, nargs="*", default=[120, 160],
                       help="epochs at which lr drops 10x; ignored with --cos")
    _add_bool_flag(group, "--cos", "use the cosine lr schedule")
    group.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=512,
                       help="mini-batch size")
    group.add_argument("--wd", type=float, default=5e-4, help="weight decay")
    group.add_argument("--max-steps", type=int, default=0,
                       help="if > 0, stop each epoch after N steps")

    group = parser.add_argument_group("moco")
    group.add_argument("--moco-dim", type=int, default=128, help="feature dimension")
    group.add_argument("--moco-k", type=int, default=4096, help="queue size; number of negative keys")
    group.add_argument("--moco-m", type=float, default=0.99, help="momentum of the key encoder update")
    group.add_argument("--moco-t", type=float, default=0.1, help="softmax temperature")
    group.add_argument("--bn-splits", type=int, default=8,
                       help="BatchNorm splits simulating multi-device BN; 1 is SyncBN-like")
    _add_bool_flag(group, "--symmetric", "symmetric loss that backprops to both crops")

    group = parser.add_argument_group("knn monitor")
    group.add_argument("--knn-k", type=int, default=200, help="k of the kNN monitor")
    group.add_argument("--knn-t", type=float, default=0.1, help="softmax temperature of the kNN monitor")
    group.add_argument("--knn-interval", type=int, default=1,
                       help="epochs between kNN monitors; 0 disables")

    group = parser.add_argument_group("run")
    group.add_argument("--resume", type=str, default="",
                       help="checkpoint to resume from; \"auto\": the results folder's last one, if any")
    group.add_argument("--results-dir", type=str, default="",
                       help="output folder; empty means ./cache-<timestamp>-moco")
    group.add_argument("--device_target", type=str, default="CPU", choices=["CPU", "GPU", "Ascend"],
                       help="MindSpore device")
    group.add_argument("--mode", type=int, default=0, choices=[0, 1], help="0 = GRAPH, 1 = PYNATIVE")
    group.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def _option_actions(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """Maps each settable dest to its action, skipping help and --config."""
    return {
        action.dest: action
        for action in parser._actions  # argparse offers no public accessor
        if action.option_strings and action.dest not in (argparse.SUPPRESS, "help", _CONFIG_DEST)
    }


def _is_bool_flag(action: argparse.Action) -> bool:
    return isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction))


def _expected_type_name(action: argparse.Action) -> str:
    if _is_bool_flag(action):
        return "bool (true/false)"
    name = getattr(action.type, "__name__", "str")
    if action.nargs in ("*", "+"):
        return f"list of {name}"
    return name


def _convert_scalar(value: Any, converter: Callable[[str], Any]) -> Any:
    """Converts one YAML scalar with the parser's type, refusing lossy casts.

    Strings go through the converter just as a command-line token would, so
    ``wd: 5e-4`` (a string to PyYAML) still works. Non-strings must already
    be of a compatible type: ``int(1.5)`` would silently truncate.
    """
    if isinstance(value, str):
        return converter(value)
    if isinstance(value, bool):
        raise TypeError("bool is not a number or string")
    if converter is int and isinstance(value, int):
        return value
    if converter is float and isinstance(value, (int, float)):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not {converter.__name__}")


def _convert_yaml_value(action: argparse.Action, value: Any) -> Any:
    """Converts a YAML value exactly as the parser would treat that option."""
    if _is_bool_flag(action):
        if not isinstance(value, bool):
            raise TypeError("not a bool")
        return value
    converter = action.type or str
    if action.nargs in ("*", "+"):
        if not isinstance(value, list):
            raise TypeError("not a list")
        converted = [_convert_scalar(item, converter) for item in value]
    else:
        converted = _convert_scalar(value, converter)
    items = converted if isinstance(converted, list) else [converted]
    if action.choices is not None and any(item not in action.choices for item in items):
        # argparse never checks defaults against choices, so do it here.
        raise TypeError(f"not one of {list(action.choices)}")
    return converted


def _dest_for_key(key: str) -> str:
    return key.replace("-", "_")


def load_config_file(path: str) -> Dict[str, Any]:
    """Reads a YAML config file without interpreting its keys.

    Args:
        path: Path of the YAML file.

    Returns:
        The mapping stored in the file (empty for an empty file).

    Raises:
        ConfigError: If the file is missing, is not valid YAML or is not a
            mapping.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            content = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path!r} is not valid YAML: {error}") from error
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(
            f"config file {path!r} must be a mapping of option: value, got {type(content).__name__}")
    return content


def _yaml_to_defaults(parser: argparse.ArgumentParser, content: Dict[str, Any],
                      path: str) -> Dict[str, Any]:
    """Turns the YAML mapping into parser defaults, checking names and types."""
    actions = _option_actions(parser)
    defaults: Dict[str, Any] = {}
    spelled_as: Dict[str, str] = {}
    for key, value in content.items():
        key_text = str(key)
        dest = _dest_for_key(key_text)
        if dest not in actions:
            known = sorted(actions)
            close = difflib.get_close_matches(dest, known, n=3)
            if "-" in key_text:  # suggest in the spelling the file already uses
                close = [name.replace("_", "-") for name in close]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown key {key_text!r} in config file {path!r}{hint} "
                f"(known keys: {', '.join(known)})")
        if dest in spelled_as:
            raise ConfigError(
                f"config file {path!r} sets {dest} twice, as {spelled_as[dest]!r} and {key_text!r}")
        spelled_as[dest] = key_text
        action = actions[dest]
        try:
            defaults[dest] = _convert_yaml_value(action, value)
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"config file {path!r}: {key_text} = {value!r} is invalid, expected "
                f"{_expected_type_name(action)} ({error})") from error
    return defaults


def default_results_dir(now: Optional[datetime] = None) -> str:
    """Returns the demo's timestamped output folder, e.g. ./cache-2024-01-31-12-00-00-moco."""
    now = now or datetime.now()
    return "./cache-" + now.strftime("%Y-%m-%d-%H-%M-%S-moco")


def _check_divisible(errors: List[str], args: argparse.Namespace) -> None:
    if args.moco_k > 0 and args.batch_size > 0:
        keys_per_step = 2 * args.batch_size if args.symmetric else args.batch_size
        if args.moco_k % keys_per_step != 0:
            suggestion = max(1, round(args.moco_k / keys_per_step)) * keys_per_step
            what = (f"2 * batch_size = {keys_per_step} (--symmetric enqueues both crops' keys)"
                    if args.symmetric else f"batch_size {keys_per_step}")
            errors.append(
                f"moco-k {args.moco_k} is not a multiple of {what}: the queue must be filled "
                f"by whole batches; use e.g. --moco-k {suggestion}")
    if args.batch_size > 0 and args.bn_splits > 0 and args.batch_size % args.bn_splits != 0:
        errors.append(
            f"batch_size {args.batch_size} is not a multiple of bn-splits {args.bn_splits}: "
            f"SplitBatchNorm needs equal splits; use a bn-splits that divides the batch, e.g. "
            f"--bn-splits {_largest_divisor_at_most(args.batch_size, args.bn_splits)}")


def _largest_divisor_at_most(number: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if number % d == 0)


def validate_config(args: argparse.Namespace,
                    supported_archs: Sequence[str] = SUPPORTED_ARCHS) -> None:
    """Checks that the options can run before any compute starts.

    Every problem found is reported in one error, one per line.

    Args:
        args: A namespace as produced by ``parse_args``.
        supported_archs: Backbone names accepted for ``arch`` (pass the model
            registry's names once it has more than one).

    Raises:
        ConfigError: Listing each invalid value and how to fix it.
    """
    errors: List[str] = []
    for dest in ("batch_size", "epochs", "moco_k", "moco_dim", "bn_splits", "knn_k", "workers"):
        value = getattr(args, dest)
        if value <= 0:
            errors.append(f"{dest.replace('_', '-')} must be positive, got {value}")
    for dest in ("knn_interval", "train_subset", "test_subset", "max_steps"):
        value = getattr(args, dest)
        if value < 0:
            errors.append(f"{dest.replace('_', '-')} must be >= 0 (0 disables it), got {value}")
    if not 0.0 <= args.moco_m < 1.0:
        errors.append(f"moco-m must be in [0, 1), got {args.moco_m}: 1 would freeze the key encoder")
    if args.moco_t <= 0:
        errors.append(f"moco-t must be positive, got {args.moco_t}")
    if args.knn_t <= 0:
        errors.append(f"knn-t must be positive, got {args.knn_t}")
    if args.lr <= 0:
        errors.append(f"lr must be positive, got {args.lr}")
    if args.wd < 0:
        errors.append(f"wd must be >= 0, got {args.wd}")
    milestones = list(args.schedule)
    if any(m <= 0 for m in milestones) or any(a >= b for a, b in zip(milestones, milestones[1:])):
        errors.append(
            f"schedule milestones must be positive and strictly increasing, got {milestones}; "
            f"e.g. --schedule 120 160")
    _check_divisible(errors, args)
    if 0 < args.train_subset < args.batch_size:
        # Training drops the last incomplete batch, so no step would run.
        errors.append(
            f"train-subset {args.train_subset} is smaller than batch_size {args.batch_size}: "
            f"no full batch to train on; raise --train-subset or lower --batch_size")
    if args.arch not in supported_archs:
        errors.append(f"arch {args.arch!r} is not supported; choose one of {list(supported_archs)}")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))


def parse_args(argv: Optional[Sequence[str]] = None,
               supported_archs: Sequence[str] = SUPPORTED_ARCHS) -> argparse.Namespace:
    """Parses YAML config plus command line, fills derived values and validates.

    Args:
        argv: Command-line tokens; ``None`` reads ``sys.argv[1:]``.
        supported_archs: Passed on to ``validate_config``.

    Returns:
        The resolved namespace. An empty ``results_dir`` becomes the folder
        of the ``--resume`` checkpoint, or else ``default_results_dir()``.

    Raises:
        ConfigError: For a bad config file or an invalid combination.
        SystemExit: For malformed command-line flags (argparse behaviour).
    """
    pre_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre_parser.add_argument("--config", type=str, default="")
    known, _ = pre_parser.parse_known_args(argv)

    parser = create_parser()
    if known.config:
        content = load_config_file(known.config)
        parser.set_defaults(**_yaml_to_defaults(parser, content, known.config))
    args = parser.parse_args(argv)
    if not args.results_dir:
        resuming = args.resume and args.resume != "auto"
        args.results_dir = os.path.dirname(args.resume) if resuming else default_results_dir()
    validate_config(args, supported_archs)
    return args


def save_config(args: argparse.Namespace, path: str) -> None:
    """Writes the resolved options as YAML that ``--config`` reads back.

    Keys are argparse dests (underscores), in parser order; ``config`` itself
    is left out because it names the file rather than an option.

    Args:
        args: The namespace to save.
        path: Destination file; its folder must exist.
    """
    values = {}
    for dest in _option_actions(create_parser()):
        value = getattr(args, dest)
        values[dest] = list(value) if isinstance(value, tuple) else value
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(values, handle, sort_keys=False, default_flow_style=None)
