"""Atomic checkpoints that hold everything needed to resume a run exactly."""

import argparse
import os
from typing import Optional

import mindspore as ms
from mindspore import nn

from ..models.split_bn import SCRATCH_PREFIX
from ..utils import faults
from ..utils.io import atomic_write
from .loss_scale import PREFIX as AMP_PREFIX

CHECKPOINT_NAME = "model_last.ckpt"
# Recorded in every checkpoint; a resume with other values would not fit the model.
MODEL_KEYS = ("arch", "moco_dim", "moco_k", "bn_splits", "symmetric", "mlp", "stem", "image_size")
# What a checkpoint written before a key existed was trained with.
_EARLIER_DEFAULTS = {"mlp": False, "stem": "cifar", "image_size": 32}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or from another model."""


def _state(cell):
    return {p.name: p for p in cell.get_parameters() if SCRATCH_PREFIX not in p.name}


def save_checkpoint(cell: nn.Cell, path: str, epoch: int, args: argparse.Namespace) -> None:
    """Writes all parameters of ``cell`` (model, queue, optimizer state), the epoch and the
    model settings, atomically: ``path`` holds either the old or the new state."""
    meta = {"epoch": int(epoch), **{key: getattr(args, key) for key in MODEL_KEYS}}
    params = [{"name": name, "data": p} for name, p in _state(cell).items()]

    def write(tmp):
        ms.save_checkpoint(params, tmp, append_dict=meta)
        faults.kill_if_requested(f"checkpoint:{epoch}")

    try:
        atomic_write(path, write)
    except (OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"could not write checkpoint {path}: {err}; "
            "the previous checkpoint, if any, is unchanged"
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
    return value.asnumpy().item() if hasattr(value, "asnumpy") else value


def checkpoint_settings(saved: dict) -> dict:
    """The epoch and model settings (``MODEL_KEYS``) a read checkpoint records; keys added
    later have the value that older checkpoints were trained with."""
    recorded = {key: _scalar(saved[key]) for key in ("epoch", *MODEL_KEYS) if key in saved}
    return {**_EARLIER_DEFAULTS, **recorded}


def load_checkpoint(
    cell: nn.Cell,
    path: str,
    args: Optional[argparse.Namespace] = None,
    prefix: str = "",
    saved: Optional[dict] = None,
) -> int:
    """Loads a checkpoint into ``cell`` after checking that it fits; returns its epoch.

    ``args``, if given, must have the checkpoint's model settings. ``prefix`` selects the
    entries to load, stripped (``"encoder_q."`` restores a bare backbone). ``saved``: the
    file's content if already read.
    """
    saved = read_checkpoint(path) if saved is None else saved
    settings = checkpoint_settings(saved)
    for key in MODEL_KEYS:
        if args is not None and key in settings and settings[key] != getattr(args, key):
            raise CheckpointError(
                f"checkpoint {path} is from another model: it has {key}={settings[key]!r}, "
                f"the config has {key}={getattr(args, key)!r}"
            )
    expected = _state(cell)
    found = {name[len(prefix) :]: p for name, p in saved.items() if name.startswith(prefix)}
    # A run resumed in float16 from a float32 checkpoint starts a new loss scale.
    missing = sorted(n for n in set(expected) - set(found) if not n.startswith(AMP_PREFIX))
    mismatched = sorted(
        name
        for name in set(expected) & set(found)
        if tuple(expected[name].shape) != tuple(found[name].shape)
    )
    if missing or mismatched:
        details = []
        if missing:
            details.append(
                f"missing: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
            )
        if mismatched:
            details.append(
                "shape mismatch: "
                + ", ".join(
                    f"{n} {tuple(found[n].shape)} vs {tuple(expected[n].shape)}"
                    for n in mismatched[:5]
                )
            )
        raise CheckpointError(f"checkpoint {path} does not fit this model ({'; '.join(details)})")
    for name, param in expected.items():
        if name in found:
            param.set_data(found[name].data.astype(param.dtype))
    return int(settings.get("epoch", 0))
