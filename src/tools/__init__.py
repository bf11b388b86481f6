"""What ``python -m src.tools.convert_pytorch`` and ``python -m src.tools.export`` share: their
error, PyTorch files (torch imported only when needed), atomic writes and a tool's ``main``."""

from collections.abc import Mapping
from typing import Any, Callable

import mindspore as ms
import numpy as np

from ..train.checkpoint import CheckpointError
from ..utils.device import set_device
from ..utils.io import atomic_write
from ..utils.progress import setup_logging


class ConversionError(ValueError):
    """A checkpoint cannot be converted: bad file, foreign or missing tensors, wrong shapes."""


def import_torch():
    try:
        import torch
    except ImportError as err:
        raise ConversionError(
            "reading or writing .pth/.pt needs PyTorch, which is not installed: pip install torch"
        ) from err
    return torch


def write_atomically(path: str, write: Callable[[str], Any]) -> None:
    try:
        atomic_write(path, write)
    except (OSError, RuntimeError, ValueError) as err:
        raise ConversionError(f"cannot write {path}: {err}") from err


def _map_leaves(tree: Any, kind: type, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(tree, Mapping):
        return {key: _map_leaves(value, kind, leaf) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_leaves(value, kind, leaf) for value in tree)
    return leaf(tree) if isinstance(tree, kind) else tree


def load_torch(path: str) -> Any:
    """What ``torch.load`` reads from ``path`` (weights only), its tensors as NumPy arrays."""
    torch = import_torch()
    try:
        tree = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ConversionError(f"{path}: no such file") from err
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ConversionError(f"cannot read {path} as a PyTorch checkpoint: {err}") from err
    return _map_leaves(tree, torch.Tensor, lambda value: value.detach().numpy())


def save_torch(tree: Any, path: str) -> None:
    """``torch.save`` of ``tree``, atomically, its NumPy arrays as tensors."""
    torch = import_torch()
    tree = _map_leaves(tree, np.ndarray, torch.from_numpy)
    write_atomically(path, lambda tmp: torch.save(tree, tmp))


def run_tool(command: Callable[..., str], **options) -> int:
    """Runs ``command(**options)`` on the CPU and logs the line it returns: exit code 0, or 2 after
    logging a ConversionError or CheckpointError as one line."""
    logger = setup_logging()
    set_device("CPU", ms.PYNATIVE_MODE)
    try:
        logger.info("%s", command(**options))
    except (ConversionError, CheckpointError) as err:
        logger.error("error: %s", err)
        return 2
    return 0
