"""Atomic checkpoints that hold everything needed to resume a run exactly."""

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from ..models.split_bn import SCRATCH_PREFIX
from ..utils.io import atomic_write
from .loss_scale import PREFIX as AMP_PREFIX

CHECKPOINT_NAME = "model_last.ckpt"
# Recorded in every checkpoint; a resume with other values would not fit the model.
MODEL_KEYS = ("arch", "moco_dim", "moco_k", "bn_splits", "symmetric", "mlp", "stem", "image_size")
V3_KEYS = ("method", "moco_mlp_dim", "stop_grad_conv1")  # recorded by MoCo v3 runs too
# What a checkpoint written before a key existed was trained with (no method: v1/v2).
_EARLIER_DEFAULTS = {"mlp": False, "stem": "cifar", "image_size": 32, "method": "v1"}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or from another model."""


def _state(cell):
    return {p.name: p for p in cell.get_parameters() if SCRATCH_PREFIX not in p.name}


def save_checkpoint(
    cell: nn.Cell,
    path: str,
    epoch: int,
    model: Mapping[str, Any],
    on_written: Optional[Callable[[str], None]] = None,
) -> None:
    """Writes every parameter of ``cell`` (model, queue, optimizer state), the epoch and the
    settings ``model`` atomically; ``on_written(tmp)`` runs before the rename."""
    meta = {"epoch": int(epoch), **model}
    params = [{"name": name, "data": p} for name, p in _state(cell).items()]
    assert not meta.keys() & _state(cell).keys(), "a setting named as a parameter would replace it"

    def write(tmp):
        ms.save_checkpoint(params, tmp, append_dict=meta)
        if on_written:
            on_written(tmp)

    try:
        atomic_write(path, write)
    except (OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"could not write checkpoint {path}: {err}; the previous one, if any, is unchanged"
        ) from err


def read_checkpoint(path: str) -> dict:
    """Reads a checkpoint file: ``{name: Parameter}`` plus its metadata entries."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return ms.load_checkpoint(path)
    except (RuntimeError, ValueError, OSError) as err:
        raise CheckpointError(
            f"cannot read checkpoint {path} (corrupt or not a MindSpore checkpoint): {err}"
        ) from err


def _scalar(value):
    if not hasattr(value, "asnumpy"):
        return value
    value = value.asnumpy()  # a float is stored as float32: 0.01, not 0.009999999776
    return float(str(value)) if value.dtype == np.float32 else value.item()


def checkpoint_settings(saved: dict, keys: Sequence[str] = MODEL_KEYS + V3_KEYS) -> dict:
    """The epoch and ``keys`` a read checkpoint records (older files: earlier defaults)."""
    recorded = {key: _scalar(saved[key]) for key in ("epoch", *keys) if key in saved}
    return {**{k: v for k, v in _EARLIER_DEFAULTS.items() if k in keys}, **recorded}


def _listed(names: list, more: str = " ...") -> str:
    return ", ".join(names[:5]) + (more if len(names) > 5 else "")


def load_checkpoint(
    cell: nn.Cell,
    path: str,
    model: Optional[Mapping[str, Any]] = None,
    prefix: str = "",
    saved: Optional[dict] = None,
) -> int:
    """Loads a checkpoint into ``cell`` after checking that it fits; returns its epoch.

    ``model``, if given, must hold the checkpoint's settings of its keys. ``prefix`` selects the
    entries to load, stripped (``"encoder_q."``: a bare backbone). ``saved``: the file, if read.
    """
    saved = read_checkpoint(path) if saved is None else saved
    settings = checkpoint_settings(saved, tuple(model or ()))
    for key in model or ():
        if key in settings and settings[key] != model[key]:
            raise CheckpointError(
                f"checkpoint {path} is from another model: it has {key}={settings[key]!r}, "
                f"this run has {key}={model[key]!r}"
            )
    expected = _state(cell)
    found = {name[len(prefix) :]: p for name, p in saved.items() if name.startswith(prefix)}
    # A run resumed in float16 from a float32 checkpoint starts a new loss scale.
    missing = sorted(n for n in set(expected) - set(found) if not n.startswith(AMP_PREFIX))
    shapes = {n: (tuple(found[n].shape), tuple(expected[n].shape)) for n in expected if n in found}
    mismatched = sorted(f"{n} {a} vs {b}" for n, (a, b) in shapes.items() if a != b)
    details = [f"missing: {_listed(missing)}"] if missing else []
    details += [f"shape mismatch: {_listed(mismatched, '')}"] if mismatched else []
    if details:
        raise CheckpointError(f"checkpoint {path} does not fit this model ({'; '.join(details)})")
    for name, param in expected.items():
        if name in found:
            param.set_data(found[name].data.astype(param.dtype))
    return int(settings.get("epoch", 0))
