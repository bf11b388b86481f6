"""Converts MoCo checkpoints between the PyTorch CIFAR demo (.pth/.pt) and ours (.ckpt).

``python -m src.tools.convert_pytorch IN OUT [--bn-splits N] [--symmetric]``, the direction from
the extensions. Pass the demo run's bn_splits and symmetric: a state_dict does not show them."""

import argparse
import functools
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Optional

import mindspore as ms
import numpy as np

from ..models import ARCHS, MoCo
from ..models.split_bn import SCRATCH_PREFIX
from ..train.checkpoint import MODEL_KEYS, CheckpointError, checkpoint_settings, read_checkpoint
from ..train.step import create_optimizer
from . import ConversionError, import_torch, load_torch, run_tool, save_torch, write_atomically

KINDS = {".pth": "pth", ".pt": "pth", ".ckpt": "ckpt"}  # by extension
BN_TO_TORCH = dict(
    gamma="weight", beta="bias", moving_mean="running_mean", moving_variance="running_var"
)
NUM_BATCHES_TRACKED = "num_batches_tracked"
ENCODERS = ("encoder_q.", "encoder_k.")
QUEUE, QUEUE_PTR, MOMENTS = "queue", "queue_ptr", "moments."
# The demo's recipe, for what a state_dict does not reveal.
DEFAULT_BN_SPLITS, DEFAULT_LR, DEFAULT_MOMENTUM, DEFAULT_WEIGHT_DECAY = 8, 0.06, 0.9, 5e-4
STAGES = (3, 4, 5, 6)  # net.3 .. net.6 are layer1 .. layer4
IMAGE_SIZES = {"cifar": 32, "imagenet": 96}  # recorded for a .pth: CIFAR's or STL-10's
# The keyword-only parameters of both conversions recorded or checked; mlp is read off the tensors.
SETTINGS = ("arch", "moco_dim", "moco_k", "bn_splits", "symmetric", "epoch")
Schema = Mapping[str, tuple[int, ...]]
V3_FILE = "a MoCo v3 checkpoint: convert it with python -m src.tools.convert_mocov3"


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
    """Our model tensors as the demo's ``state_dict``, each BatchNorm's count exported as 0."""
    state = {}
    for name, value in params.items():
        state[torch_name(name)] = _layout(name, value, torch=True)
        if name.endswith(".moving_variance"):
            state[name[: -len("moving_variance")] + NUM_BATCHES_TRACKED] = np.zeros((), np.int64)
    return state


def torch_state_to_mindspore(state_dict: Mapping, schema: Schema, what="state_dict") -> dict:
    """The demo's ``state_dict`` (NumPy arrays) as our model tensors, checked against ``schema``."""
    names = {torch_name(name): name for name in schema if _is_model_tensor(name)}
    state = {k: v for k, v in state_dict.items() if not k.endswith("." + NUM_BATCHES_TRACKED)}
    shapes = {key: tuple(schema[name]) for key, name in names.items()}
    shapes.update({QUEUE: shapes[QUEUE][::-1]} if QUEUE in shapes else {})  # C x K there
    check_against_schema(state, shapes, what)
    return {name: _layout(name, state[key], torch=False) for key, name in names.items()}


def check_against_schema(tensors: Mapping[str, Any], schema: Schema, what: str) -> None:
    """Raises ConversionError listing every unexpected, missing and mismatched name."""
    shapes = {n: (np.shape(tensors[n]), tuple(schema[n])) for n in sorted(schema) if n in tensors}
    names = {
        "that map onto nothing in the model": sorted(set(tensors) - set(schema)),
        "of the model missing": sorted(set(schema) - set(tensors)),
        "with another shape": [f"{n} {a} vs {b}" for n, (a, b) in shapes.items() if a != b],
    }
    problems = [f"{len(v)} {label}: {', '.join(v)}" for label, v in names.items() if v]
    if problems:
        raise ConversionError(f"{what} does not fit the model: " + "; ".join(problems))


def torch_parameter_names(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(demo key, our name)`` of the learnable ``names``, in the demo's SGD index order (ours)."""
    statistics = (".moving_mean", ".moving_variance")
    learnable = [n for n in names if n.startswith(ENCODERS) and not n.endswith(statistics)]
    return [(torch_name(name), name) for name in learnable if SCRATCH_PREFIX not in name]


def torch_optimizer_to_mindspore(
    optimizer, params, shapes, lr=DEFAULT_LR, momentum=DEFAULT_MOMENTUM
) -> dict[str, np.ndarray]:
    """The demo's SGD state (NumPy buffers, or None) as our ``nn.Momentum`` state, both ``v <- m v
    + g + wd w``: zero moments where absent; ``lr``/``momentum`` apply only without an optimizer."""
    buffers = {n: np.zeros(shapes[n], np.float32) for _, n in params if n.startswith("encoder_q.")}
    leftovers = []
    if optimizer is not None:
        groups = optimizer.get("param_groups") or []
        group = groups[0] if len(groups) == 1 else {}
        indices = group.get("params", [])
        if group.get("nesterov") or group.get("dampening") or len(indices) != len(params):
            raise ConversionError(
                f"the optimizer is not the demo's: {len(groups)} parameter group(s), expected one "
                f"SGD group without nesterov or dampening over {len(params)} encoder weights"
            )
        lr, momentum = group["lr"], group.get("momentum", 0.0)
        for index, state in (optimizer.get("state") or {}).items():
            key, name = params[indices.index(index)] if index in indices else ("no parameter", "")
            for field, buf in state.items():
                label = f"state[{index}].{field} ({key}"
                if field != "momentum_buffer":
                    leftovers.append(label + ")")
                elif buf is None:
                    continue
                elif name not in buffers:
                    leftovers.append(label + ": only encoder_q has an optimizer)")
                elif np.shape(buf) != buffers[name].shape:
                    leftovers.append(label + f": shape {np.shape(buf)} vs {buffers[name].shape})")
                else:
                    buffers[name] = np.asarray(buf, np.float32)
    if leftovers:
        raise ConversionError("optimizer state that maps onto nothing: " + "; ".join(leftovers))
    entries = {MOMENTS + name: buf for name, buf in buffers.items()}
    entries.update(learning_rate=np.float32(lr), momentum=np.float32(momentum))
    return {**entries, "global_step": np.zeros(1, np.int32)}  # constant-lr Momentum ignores it


def mindspore_optimizer_to_torch(entries: Mapping, params: Sequence, weight_decay: float) -> dict:
    """Our moments, lr and momentum as the demo's SGD state dict (we do not store weight decay)."""
    moments = {index: entries.get(MOMENTS + name) for index, (_, name) in enumerate(params)}
    state = {i: {"momentum_buffer": np.asarray(m)} for i, m in moments.items() if m is not None}
    # The Python float a float32 stands for: 0.06, not 0.05999999865889549.
    lr, momentum = (float(str(np.float32(entries[key]))) for key in ("learning_rate", "momentum"))
    group = dict(lr=lr, momentum=momentum, dampening=0, weight_decay=float(weight_decay))
    group.update(nesterov=False, params=list(range(len(params))))
    return {"state": state, "param_groups": [group]}


def infer_model_config(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``arch``, ``moco_dim``, ``moco_k``, ``mlp`` (MoCo v2's head) and ``stem`` of a demo model."""
    if any("base_encoder." in key for key in state_dict):
        raise ConversionError(V3_FILE)
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
        raise ConversionError(f"encoder_q has {blocks} blocks per stage, none of {known}")
    mlp = "encoder_q.net.9.0.weight" in state_dict
    stem_size = np.shape(state_dict.get("encoder_q.net.0.weight", ()))[-1:]
    stem = "imagenet" if stem_size == (7,) else "cifar"
    return {"arch": arch, "moco_dim": int(dim), "moco_k": int(k), "mlp": mlp, "stem": stem}


@functools.lru_cache(maxsize=2)
def model_schema(arch: str, moco_dim: int, moco_k: int, mlp=False, stem="cifar") -> Schema:
    """``{name: shape}`` that ``save_checkpoint`` writes for a training step of such a model."""
    model = MoCo(dim=moco_dim, K=moco_k, arch=arch, bn_splits=1, mlp=mlp, stem=stem)
    optimizer = create_optimizer(model, DEFAULT_LR, DEFAULT_WEIGHT_DECAY)
    params = [p for cell in (model, optimizer) for p in cell.get_parameters()]
    return MappingProxyType({p.name: p.shape for p in params if SCRATCH_PREFIX not in p.name})


def _metadata(found: Mapping, given: Mapping, source: str, defaults=MappingProxyType({})):
    """The epoch and ``MODEL_KEYS`` to record: the ``SETTINGS`` ``given`` (not None), else as
    ``found`` in ``source``, else ``defaults``. ConversionError where one given is not as found."""
    given = {key: given[key] for key in SETTINGS if given[key] is not None}
    clashes = [k for k, v in given.items() if k != "epoch" and k in found and v != found[k]]
    if clashes:
        what = (f"{key}={given[key]!r} but {source} has {found[key]!r}" for key in clashes)
        raise ConversionError("; ".join(what))
    meta = {**defaults, **found, **given}
    return {"epoch": int(meta.get("epoch", 0)), **{key: meta.get(key) for key in MODEL_KEYS}}


def convert_pth_to_ckpt(
    in_path,
    out_path,
    *,
    arch=None,
    moco_dim=None,
    moco_k=None,
    bn_splits=None,
    symmetric=None,
    epoch=None,
    lr=DEFAULT_LR,
    momentum=DEFAULT_MOMENTUM,
) -> dict:
    """Writes a demo checkpoint (or a bare state_dict) as our ``.ckpt``; returns its metadata.
    arch, moco_dim, moco_k are checked; bn_splits (default 8) and symmetric are recorded."""
    given = dict(locals())  # the parameters, before any other name is bound
    checkpoint = load_torch(in_path)
    bare = not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint
    state_dict = checkpoint if bare else checkpoint["state_dict"]
    optimizer = None if bare else checkpoint.get("optimizer")
    for what, value in (("state_dict", state_dict), ("optimizer", optimizer)):
        if value is not None and not isinstance(value, Mapping):
            raise ConversionError(f"{in_path}: the {what} is a {type(value).__name__}, not a dict")
    config = infer_model_config(state_dict)
    found = dict(config, epoch=0 if bare else checkpoint.get("epoch", 0))
    found["image_size"] = IMAGE_SIZES[config["stem"]]
    meta = _metadata(found, given, in_path, {"bn_splits": DEFAULT_BN_SPLITS, "symmetric": False})
    schema = model_schema(**config)
    entries = torch_state_to_mindspore(state_dict, schema, in_path)
    params = torch_parameter_names(schema)
    entries.update(torch_optimizer_to_mindspore(optimizer, params, schema, lr, momentum))
    check_against_schema(entries, schema, in_path)
    data = [{"name": n, "data": ms.Tensor(np.asarray(entries[n], order="C"))} for n in schema]
    write_atomically(out_path, lambda tmp: ms.save_checkpoint(data, tmp, append_dict=meta))
    return meta


def convert_ckpt_to_pth(
    in_path,
    out_path,
    *,
    arch=None,
    moco_dim=None,
    moco_k=None,
    bn_splits=None,
    symmetric=None,
    epoch=None,
    weight_decay=DEFAULT_WEIGHT_DECAY,
) -> dict:
    """Writes our ``.ckpt`` as the demo's ``{'epoch', 'state_dict', 'optimizer'}``; returns its
    metadata. The settings given are checked; ``weight_decay`` goes into the SGD group."""
    given = dict(locals())  # the parameters, before any other name is bound
    import_torch()  # fails before any work without it
    try:
        saved = read_checkpoint(in_path)
    except CheckpointError as err:
        raise ConversionError(str(err)) from err
    found = checkpoint_settings(saved)
    if found["method"] == "v3":
        raise ConversionError(V3_FILE)
    values = {name: np.asarray(value) for name, value in saved.items() if name not in found}
    state = mindspore_state_to_torch({k: v for k, v in values.items() if _is_model_tensor(k)})
    config = infer_model_config(state)
    meta = _metadata({**found, **config}, given, in_path)
    schema = model_schema(**config)
    check_against_schema(values, schema, in_path)
    sgd = mindspore_optimizer_to_torch(values, torch_parameter_names(schema), weight_decay)
    save_torch(dict(epoch=meta["epoch"], state_dict=state, optimizer=sgd), out_path)
    return meta


def _convert(in_path, out_path, lr, momentum, wd, **settings) -> str:
    exts = [os.path.splitext(path)[1].lower() or "(none)" for path in (in_path, out_path)]
    direction = "->".join(KINDS.get(ext, "?") for ext in exts)
    if direction == "pth->ckpt":
        meta = convert_pth_to_ckpt(in_path, out_path, lr=lr, momentum=momentum, **settings)
    elif direction == "ckpt->pth":
        meta = convert_ckpt_to_pth(in_path, out_path, weight_decay=wd, **settings)
    else:
        raise ConversionError(
            f"cannot tell the direction from the extensions {' -> '.join(exts)}: "
            "use IN.pth/.pt OUT.ckpt or IN.ckpt OUT.pth/.pt"
        )
    summary = ", ".join(f"{key} {value}" for key, value in meta.items())
    return f"wrote {out_path} ({direction}): {summary}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.tools.convert_pytorch",
        description=__doc__.split("\n")[0] + " The direction follows the extensions.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("in_path", metavar="input", help="checkpoint to read (.pth/.pt or .ckpt)")
    add("out_path", metavar="output", help="checkpoint to write (.ckpt or .pth/.pt)")
    add("-a", "--arch", help="checked against the tensors")
    add("--moco-dim", type=int, help="checked against the tensors")
    add("--moco-k", type=int, help="checked against the tensors")
    add("--bn-splits", type=int, help=f"split-BN groups of the run (default {DEFAULT_BN_SPLITS})")
    add("--symmetric", action=argparse.BooleanOptionalAction, help="the run's loss was symmetric")
    add("--epoch", type=int, help="override the stored epoch")
    for flag, value in (("--lr", DEFAULT_LR), ("--momentum", DEFAULT_MOMENTUM)):
        add(flag, type=float, default=value, help="if the .pth has no optimizer: %(default)s")
    add("--wd", type=float, default=DEFAULT_WEIGHT_DECAY, help="weight decay of an exported SGD")
    return run_tool(_convert, **vars(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
