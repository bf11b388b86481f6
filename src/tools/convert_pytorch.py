"""Converts checkpoints between the PyTorch MoCo CIFAR demo (.pth/.pt) and ours (.ckpt).

``python -m src.tools.convert_pytorch IN OUT``: the direction follows the extensions.
Encoder tensors keep their names, except BatchNorm's ``weight``/``bias``/``running_mean``/
``running_var``, ours ``gamma``/``beta``/``moving_mean``/``moving_variance``; the queue is
C x K there, K x C here; ``queue_ptr`` int64 there, int32 here; ``num_batches_tracked`` is
exported as 0 and ignored on import. encoder_q's SGD momentum buffers, lr and momentum are
our ``nn.Momentum`` state. Names and shapes are checked against our model. A state_dict does
not show ``bn_splits`` and ``symmetric``: pass the demo run's (``main.py --resume`` checks them).
"""

import argparse
import functools
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Callable, Optional

import mindspore as ms
import numpy as np

from ..models.resnet import ARCHS
from ..models.split_bn import SCRATCH_PREFIX
from ..train.checkpoint import MODEL_KEYS, CheckpointError, checkpoint_settings, read_checkpoint
from ..utils.io import atomic_write

PTH_EXTENSIONS, CKPT_EXTENSIONS = (".pth", ".pt"), (".ckpt",)
BN_TO_TORCH = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
NUM_BATCHES_TRACKED = "num_batches_tracked"
ENCODERS = ("encoder_q.", "encoder_k.")
QUEUE, QUEUE_PTR = "queue", "queue_ptr"
MOMENTS = "moments."
LEARNING_RATE, MOMENTUM, GLOBAL_STEP = "learning_rate", "momentum", "global_step"
# The demo's recipe, for what a state_dict does not reveal.
DEFAULT_BN_SPLITS, DEFAULT_LR, DEFAULT_MOMENTUM, DEFAULT_WEIGHT_DECAY = 8, 0.06, 0.9, 5e-4
STAGES = (3, 4, 5, 6)  # net.3 .. net.6 are layer1 .. layer4

Schema = Mapping[str, tuple[int, ...]]


class ConversionError(ValueError):
    """A checkpoint cannot be converted: bad file, foreign or missing tensors, wrong shapes."""


# --------------------------------------------------------------------------- model tensors


def torch_name(name: str) -> str:
    """The demo's ``state_dict`` key of one of our names (only BatchNorm leaves differ)."""
    module, _, leaf = name.rpartition(".")
    return f"{module}.{BN_TO_TORCH[leaf]}" if leaf in BN_TO_TORCH else name


def _is_model_tensor(name: str) -> bool:
    return (name.startswith(ENCODERS) or name in (QUEUE, QUEUE_PTR)) and SCRATCH_PREFIX not in name


def _layout(name: str, value: Any, torch: bool) -> np.ndarray:
    """The queue is C x K and the pointer int64 in the demo, K x C and int32 here."""
    value = np.asarray(value)
    if name == QUEUE:
        return np.ascontiguousarray(value.T)
    return value.astype(np.int64 if torch else np.int32) if name == QUEUE_PTR else value


def mindspore_state_to_torch(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our model tensors (encoders, queue, pointer) as the demo's ``state_dict``, with a
    ``num_batches_tracked`` of 0 after each BatchNorm."""
    state = {}
    for name, value in params.items():
        state[torch_name(name)] = _layout(name, value, torch=True)
        if name.endswith(".moving_variance"):
            state[name[: -len("moving_variance")] + NUM_BATCHES_TRACKED] = np.zeros((), np.int64)
    return state


def torch_state_to_mindspore(
    state_dict: Mapping[str, Any], schema: Schema, what: str = "state_dict"
) -> dict[str, np.ndarray]:
    """The demo's ``state_dict`` (NumPy arrays) as the model tensors of ``schema``.

    ``num_batches_tracked`` is ignored; any other tensor that maps onto nothing, a missing one
    or another shape raises ConversionError, naming the demo's keys.
    """
    names = {torch_name(name): name for name in schema if _is_model_tensor(name)}
    state = {k: v for k, v in state_dict.items() if not k.endswith("." + NUM_BATCHES_TRACKED)}
    shapes = {key: tuple(schema[name]) for key, name in names.items()}
    shapes.update({QUEUE: shapes[QUEUE][::-1]} if QUEUE in shapes else {})  # C x K there
    check_against_schema(state, shapes, what)
    return {name: _layout(name, state[key], torch=False) for key, name in names.items()}


def mindspore_model_state(model: ms.nn.Cell) -> dict[str, np.ndarray]:
    """Copies of a MoCo cell's model tensors (encoders, queue, pointer; no split-BN scratch)."""
    return {p.name: p.asnumpy().copy() for p in model.get_parameters() if _is_model_tensor(p.name)}


def check_against_schema(tensors: Mapping[str, Any], schema: Schema, what: str) -> None:
    """Raises ConversionError unless ``tensors`` holds exactly ``schema``'s names and shapes;
    the message lists every unexpected, missing and mismatched name."""
    wrong = [
        f"{name} {np.shape(tensors[name])} vs {tuple(schema[name])}"
        for name in sorted(set(tensors) & set(schema))
        if np.shape(tensors[name]) != tuple(schema[name])
    ]
    problems = [
        f"{len(names)} {label}: {', '.join(names)}"
        for label, names in (
            ("that map onto nothing in the model", sorted(set(tensors) - set(schema))),
            ("of the model missing", sorted(set(schema) - set(tensors))),
            ("with another shape", wrong),
        )
        if names
    ]
    if problems:
        raise ConversionError(f"{what} does not fit the model: " + "; ".join(problems))


# --------------------------------------------------------------------------- optimizer


def torch_parameter_names(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(demo key, our name)`` of the learnable tensors among ``names``, in the demo's
    ``model.parameters()`` order (the index of its SGD state), which is ours."""
    return [
        (torch_name(name), name)
        for name in names
        if name.startswith(ENCODERS)
        and _is_model_tensor(name)
        and not name.endswith((".moving_mean", ".moving_variance"))
    ]


def torch_optimizer_to_mindspore(
    optimizer: Optional[Mapping],
    params: Sequence[tuple[str, str]],
    shapes: Schema,
    lr: Optional[float] = None,
    momentum: Optional[float] = None,
) -> dict[str, np.ndarray]:
    """The demo's SGD ``state_dict`` (NumPy buffers, or ``None``) as our ``nn.Momentum`` state.

    Both run ``v <- m v + g + wd w``: encoder_q's ``momentum_buffer``s become our moments (zeros
    where absent); ``params`` from :func:`torch_parameter_names`; ``lr``/``momentum`` (default
    the demo's) apply only without an optimizer."""
    buffers = {}
    if optimizer is not None:
        groups = optimizer.get("param_groups") or []
        group = groups[0] if len(groups) == 1 else {}
        indices = group.get("params", [])
        if group.get("nesterov") or group.get("dampening") or len(indices) != len(params):
            raise ConversionError(
                f"the optimizer is not the demo's: {len(groups)} parameter group(s), expected one "
                f"SGD group without nesterov and dampening over the {len(params)} encoder weights"
            )
        lr, momentum = group["lr"], group.get("momentum", 0.0)
        position = {index: pos for pos, index in enumerate(indices)}
        leftovers = []
        for index, state in (optimizer.get("state") or {}).items():
            key, name = params[position[index]] if index in position else ("no parameter", "")
            for field, buf in state.items():
                label = f"state[{index}].{field} ({key}"
                if field == "momentum_buffer" and buf is None:
                    continue
                if field != "momentum_buffer":
                    leftovers.append(label + ")")
                elif not name.startswith("encoder_q."):
                    leftovers.append(label + ": only encoder_q has an optimizer)")
                elif np.shape(buf) != tuple(shapes[name]):
                    leftovers.append(label + f": shape {np.shape(buf)} vs {tuple(shapes[name])})")
                else:
                    buffers[name] = np.asarray(buf, np.float32)
        if leftovers:
            raise ConversionError("optimizer state that maps onto nothing: " + "; ".join(leftovers))
    entries = {
        MOMENTS + name: buffers.get(name, np.zeros(shapes[name], np.float32))
        for _, name in params
        if name.startswith("encoder_q.")
    }
    entries[LEARNING_RATE] = np.asarray(DEFAULT_LR if lr is None else lr, np.float32)
    entries[MOMENTUM] = np.asarray(DEFAULT_MOMENTUM if momentum is None else momentum, np.float32)
    entries[GLOBAL_STEP] = np.zeros(1, np.int32)  # no counterpart; constant-lr Momentum ignores it
    return entries


def mindspore_optimizer_to_torch(
    entries: Mapping[str, Any], params: Sequence[tuple[str, str]], weight_decay: float
) -> dict[str, Any]:
    """Our moments, ``learning_rate`` and ``momentum`` as the state dict of the demo's
    ``SGD(model.parameters())`` (NumPy buffers); we do not store ``weight_decay``."""
    state = {
        index: {"momentum_buffer": np.asarray(entries[MOMENTS + name])}
        for index, (_, name) in enumerate(params)
        if MOMENTS + name in entries
    }
    # The Python float a float32 stands for: 0.06, not 0.05999999865889549.
    lr, momentum = (float(str(np.float32(entries[key]))) for key in (LEARNING_RATE, MOMENTUM))
    group = dict(lr=lr, momentum=momentum, dampening=0, weight_decay=float(weight_decay))
    group.update(nesterov=False, params=list(range(len(params))))
    return {"state": state, "param_groups": [group]}


# --------------------------------------------------------------------------- model


def infer_model_config(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``arch``, ``moco_dim`` and ``moco_k`` of a demo ``state_dict``, from the blocks per
    stage of encoder_q and the C x K queue."""
    if QUEUE not in state_dict or np.ndim(state_dict[QUEUE]) != 2:
        keys = ", ".join(sorted(state_dict)[:3])
        raise ConversionError(f"no 2-D 'queue' tensor: not a MoCo state_dict (keys {keys} ...)")
    dim, k = np.shape(state_dict[QUEUE])
    blocks = tuple(
        len({key.split(".")[3] for key in state_dict if key.startswith(f"encoder_q.net.{stage}.")})
        for stage in STAGES
    )
    arch = next((name for name, layers in ARCHS.items() if tuple(layers) == blocks), None)
    if arch is None:
        known = ", ".join(f"{name} {tuple(layers)}" for name, layers in ARCHS.items())
        raise ConversionError(
            f"encoder_q has {blocks} blocks per stage, which matches none of {known}"
        )
    return {"arch": arch, "moco_dim": int(dim), "moco_k": int(k)}


@functools.lru_cache(maxsize=2)
def model_schema(arch: str, moco_dim: int, moco_k: int) -> Schema:
    """``{name: shape}`` that ``save_checkpoint`` writes for a training step of such a model:
    the MoCo cell's tensors and the state of its ``create_optimizer`` (no split-BN scratch)."""
    from ..models import MoCo
    from ..train.step import create_optimizer

    # Names and shapes do not depend on bn_splits, except the scratch that checkpoints leave out.
    model = MoCo(dim=moco_dim, K=moco_k, arch=arch, bn_splits=1)
    optimizer = create_optimizer(model, DEFAULT_LR, DEFAULT_WEIGHT_DECAY)
    params = [p for cell in (model, optimizer) for p in cell.get_parameters()]
    return MappingProxyType(
        {p.name: tuple(p.shape) for p in params if SCRATCH_PREFIX not in p.name}
    )


def _check_config(found: Mapping[str, Any], given: Mapping[str, Any], source: str) -> None:
    clashes = [
        f"{key}={given[key]!r} but {source} has {found[key]!r}"
        for key in found
        if given.get(key) is not None and given[key] != found[key]
    ]
    if clashes:
        raise ConversionError("; ".join(clashes))


# --------------------------------------------------------------------------- files


def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise ConversionError(
            "reading or writing .pth/.pt files needs PyTorch, which is not installed: "
            "pip install torch (the CPU build is enough)"
        ) from err
    return torch


def _map_leaves(tree: Any, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(tree, Mapping):
        return {key: _map_leaves(value, leaf) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_leaves(value, leaf) for value in tree)
    return leaf(tree)


def _write(path: str, write: Callable[[str], Any]) -> None:
    try:
        atomic_write(path, write)
    except (OSError, RuntimeError, ValueError) as err:
        raise ConversionError(f"cannot write {path}: {err}") from err


def convert_pth_to_ckpt(
    in_path: str,
    out_path: str,
    arch: Optional[str] = None,
    moco_dim: Optional[int] = None,
    moco_k: Optional[int] = None,
    bn_splits: Optional[int] = None,
    symmetric: bool = False,
    epoch: Optional[int] = None,
    lr: Optional[float] = None,
    momentum: Optional[float] = None,
) -> dict[str, Any]:
    """Writes a demo checkpoint (``{'epoch', 'state_dict', 'optimizer'}`` or a bare state_dict)
    as our ``.ckpt``; returns the metadata written. ``arch``, ``moco_dim`` and ``moco_k`` are
    checked against the tensors; ``bn_splits`` (default 8) and ``symmetric`` are recorded;
    ``epoch`` overrides the file's; ``lr``/``momentum`` apply if it has no optimizer.
    """
    torch = _import_torch()
    try:
        checkpoint = torch.load(in_path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ConversionError(f"{in_path}: no such file") from err
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ConversionError(f"cannot read {in_path} as a PyTorch checkpoint: {err}") from err
    checkpoint = _map_leaves(
        checkpoint, lambda v: v.detach().numpy() if isinstance(v, torch.Tensor) else v
    )
    bare = not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint
    state_dict = checkpoint if bare else checkpoint["state_dict"]
    optimizer = None if bare else checkpoint.get("optimizer")
    for what, value in (("state_dict", state_dict), ("optimizer", optimizer)):
        if value is not None and not isinstance(value, Mapping):
            raise ConversionError(f"{in_path}: the {what} is a {type(value).__name__}, not a dict")

    config = infer_model_config(state_dict)
    _check_config(config, {"arch": arch, "moco_dim": moco_dim, "moco_k": moco_k}, in_path)
    schema = model_schema(config["arch"], config["moco_dim"], config["moco_k"])
    entries = torch_state_to_mindspore(state_dict, schema, in_path)
    params = torch_parameter_names(schema)
    entries.update(torch_optimizer_to_mindspore(optimizer, params, schema, lr, momentum))
    check_against_schema(entries, schema, in_path)

    config.update(bn_splits=DEFAULT_BN_SPLITS if bn_splits is None else int(bn_splits))
    config.update(symmetric=bool(symmetric))
    if epoch is None:
        epoch = 0 if bare else int(checkpoint.get("epoch", 0))
    meta = {"epoch": int(epoch), **{key: config[key] for key in MODEL_KEYS}}
    data = [
        {"name": name, "data": ms.Tensor(np.asarray(entries[name], order="C"))} for name in schema
    ]
    _write(out_path, lambda tmp: ms.save_checkpoint(data, tmp, append_dict=meta))
    return meta


def convert_ckpt_to_pth(
    in_path: str,
    out_path: str,
    arch: Optional[str] = None,
    moco_dim: Optional[int] = None,
    moco_k: Optional[int] = None,
    bn_splits: Optional[int] = None,
    symmetric: Optional[bool] = None,
    epoch: Optional[int] = None,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
) -> dict[str, Any]:
    """Writes our ``.ckpt`` as the demo's ``{'epoch', 'state_dict', 'optimizer'}``; returns
    its metadata. The model settings given are checked against the file; ``epoch`` overrides
    the stored one; ``weight_decay`` goes into the SGD group (we do not store it).
    """
    torch = _import_torch()
    try:
        saved = read_checkpoint(in_path)
    except CheckpointError as err:
        raise ConversionError(str(err)) from err
    found = checkpoint_settings(saved)
    values = {name: np.asarray(value) for name, value in saved.items() if name not in found}
    model_values = {name: value for name, value in values.items() if _is_model_tensor(name)}
    found.update(infer_model_config(mindspore_state_to_torch(model_values)))
    given = dict(zip(MODEL_KEYS, (arch, moco_dim, moco_k, bn_splits, symmetric)))
    _check_config({key: found[key] for key in MODEL_KEYS if key in found}, given, in_path)
    schema = model_schema(found["arch"], found["moco_dim"], found["moco_k"])
    check_against_schema(values, schema, in_path)

    meta = {"epoch": int(found.get("epoch", 0) if epoch is None else epoch)}
    meta.update({key: found.get(key, given[key]) for key in MODEL_KEYS})
    checkpoint = {
        "epoch": meta["epoch"],
        "state_dict": mindspore_state_to_torch(model_values),
        "optimizer": mindspore_optimizer_to_torch(
            values, torch_parameter_names(schema), weight_decay
        ),
    }
    checkpoint = _map_leaves(
        checkpoint, lambda v: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
    )
    _write(out_path, lambda tmp: torch.save(checkpoint, tmp))
    return meta


# --------------------------------------------------------------------------- command line


def _direction(in_path: str, out_path: str) -> str:
    ext_in, ext_out = (os.path.splitext(path)[1].lower() for path in (in_path, out_path))
    if ext_in in PTH_EXTENSIONS and ext_out in CKPT_EXTENSIONS:
        return "pth->ckpt"
    if ext_in in CKPT_EXTENSIONS and ext_out in PTH_EXTENSIONS:
        return "ckpt->pth"
    raise ConversionError(
        f"cannot tell the direction from the extensions {ext_in or '(none)'} -> "
        f"{ext_out or '(none)'}: use IN.pth/.pt OUT.ckpt (PyTorch demo -> MindSpore) or "
        "IN.ckpt OUT.pth/.pt (back)"
    )


def create_parser() -> argparse.ArgumentParser:
    """The converter's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m src.tools.convert_pytorch",
        description="Convert MoCo checkpoints between the PyTorch CIFAR demo (.pth/.pt) and "
        "moco-mindspore (.ckpt); the direction follows the extensions.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("input", help="checkpoint to read (.pth/.pt or .ckpt)")
    add("output", help="checkpoint to write (.ckpt or .pth/.pt)")
    add("-a", "--arch", help="checked against the tensors")
    add("--moco-dim", type=int, help="checked against the tensors")
    add("--moco-k", type=int, help="checked against the tensors")
    add("--bn-splits", type=int, help=f"split-BN groups of the run (default {DEFAULT_BN_SPLITS})")
    add("--symmetric", action=argparse.BooleanOptionalAction, help="the run's loss was symmetric")
    add("--epoch", type=int, help="override the stored epoch")
    add("--lr", type=float, help=f"lr if the .pth has no optimizer (default {DEFAULT_LR})")
    add("--momentum", type=float, help=f"the same for momentum (default {DEFAULT_MOMENTUM})")
    add("--wd", type=float, default=DEFAULT_WEIGHT_DECAY, help="weight decay of an exported SGD")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the converter; returns 0 on success, 2 on a conversion error."""
    from ..utils.device import set_device
    from ..utils.progress import setup_logging

    logger = setup_logging()
    set_device("CPU", ms.PYNATIVE_MODE)
    args = create_parser().parse_args(argv)
    common = {key: getattr(args, key) for key in ("arch", "moco_dim", "moco_k", "bn_splits")}
    common.update(epoch=args.epoch)
    try:
        direction = _direction(args.input, args.output)
        if direction == "pth->ckpt":
            kwargs = dict(symmetric=bool(args.symmetric), lr=args.lr, momentum=args.momentum)
            meta = convert_pth_to_ckpt(args.input, args.output, **kwargs, **common)
        else:
            kwargs = dict(symmetric=args.symmetric, weight_decay=args.wd)
            meta = convert_ckpt_to_pth(args.input, args.output, **kwargs, **common)
    except ConversionError as err:
        logger.error("error: %s", err)
        return 2
    summary = ", ".join(f"{key} {value}" for key, value in meta.items())
    logger.info("wrote %s (%s): %s", args.output, direction, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
