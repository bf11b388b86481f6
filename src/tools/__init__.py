"""Command-line tools outside training (checkpoint conversion, export) and what they share."""

import argparse
from typing import Any, Callable

import mindspore as ms

from ..train.checkpoint import CheckpointError
from ..utils.device import set_device
from ..utils.io import atomic_write
from ..utils.progress import setup_logging


class ConversionError(ValueError):
    """A checkpoint cannot be converted: bad file, foreign or missing tensors, wrong shapes."""


def import_torch():
    """``torch``, imported on first use; ConversionError if it is not installed."""
    try:
        import torch
    except ImportError as err:
        raise ConversionError(
            "reading or writing .pth/.pt needs PyTorch, which is not installed: pip install torch"
        ) from err
    return torch


def write_atomically(path: str, write: Callable[[str], Any]) -> None:
    """``atomic_write(path, write)``, its failures raised as ConversionError."""
    try:
        atomic_write(path, write)
    except (OSError, RuntimeError, ValueError) as err:
        raise ConversionError(f"cannot write {path}: {err}") from err


def run_tool(parser: argparse.ArgumentParser, command: Callable[..., str], argv=None) -> int:
    """A tool's ``main``: runs ``command(args)`` on the CPU and logs the line it returns. Exit code
    0, or 2 after logging a ConversionError or CheckpointError as one line."""
    logger = setup_logging()
    set_device("CPU", ms.PYNATIVE_MODE)
    args = parser.parse_args(argv)
    try:
        logger.info("%s", command(args))
    except (ConversionError, CheckpointError) as err:
        logger.error("error: %s", err)
        return 2
    return 0
