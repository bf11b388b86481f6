"""The trained query encoder of a ``main.py`` checkpoint, restored for evaluation.

A checkpoint alone does not say how to build the network (backbone, feature
dimension, split BN): ``main.py`` writes those settings to ``config.yaml`` in
the same results folder, and :func:`load_checkpoint` checks the two agree.

Example::

    args = load_training_config("results/model_last.ckpt")
    encoder, epoch = restore_encoder(args, "results/model_last.ckpt")
"""
import argparse
import os
from typing import Optional, Tuple

from mindspore import nn

from ..config import ConfigError, parse_args
from ..models import create_moco
from ..train.checkpoint import CheckpointError, load_checkpoint

__all__ = ["TRAINING_CONFIG_NAME", "training_config_path", "load_training_config",
           "restore_encoder"]

TRAINING_CONFIG_NAME = "config.yaml"


def training_config_path(checkpoint_path: str) -> str:
    """The ``config.yaml`` that ``main.py`` saved beside ``checkpoint_path``."""
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), TRAINING_CONFIG_NAME)


def load_training_config(checkpoint_path: str,
                         config_path: Optional[str] = None) -> argparse.Namespace:
    """Reads the training options of a checkpoint.

    The file goes through ``src.config.parse_args`` (which reads it with
    ``load_config_file``), so keys and types are checked exactly as when
    training, and options the file leaves out take main.py's defaults.

    Args:
        checkpoint_path: The checkpoint; must exist.
        config_path: The training config; default: ``config.yaml`` beside the
            checkpoint.

    Returns:
        The resolved training namespace (``main.py``'s flags).

    Raises:
        CheckpointError: If the checkpoint does not exist.
        ConfigError: If the config is missing or invalid.
    """
    if not os.path.isfile(checkpoint_path):
        raise CheckpointError(f"checkpoint not found: {checkpoint_path}")
    path = config_path or training_config_path(checkpoint_path)
    if not os.path.isfile(path):
        raise ConfigError(
            f"training config not found: {path}. The model settings (arch, moco-dim, bn-splits, "
            f"...) come from the config.yaml that main.py writes beside the checkpoint; pass "
            f"--config PATH if it is elsewhere")
    return parse_args(["--config", path])


def restore_encoder(args: argparse.Namespace, checkpoint_path: str) -> Tuple[nn.Cell, int]:
    """Builds MoCo as configured and loads the query encoder from a checkpoint.

    Only ``encoder_q.*`` is read (under the names the training step saved),
    so the key encoder, queue and optimizer state of the file are not needed.

    Args:
        args: Training options, e.g. from :func:`load_training_config`.
        checkpoint_path: A checkpoint written by ``main.py``.

    Returns:
        ``(encoder_q, epoch)``; the encoder is in eval mode.

    Raises:
        CheckpointError: If the file is unreadable or from another model.
    """
    model = create_moco(args)
    epoch = load_checkpoint(model.encoder_q, checkpoint_path, args)
    model.encoder_q.set_train(False)
    return model.encoder_q, epoch
