"""Deterministic faults for the crash-recovery tests, installed as a ``fit`` callback.

``MOCO_FAULT`` names one point of a run:

- ``kill:step:E:S``: SIGKILL just before step S (1-based) of epoch E;
- ``kill:checkpoint:E``: SIGKILL while epoch E's checkpoint is half written;
- ``kill:epoch-end:E``: SIGKILL right after epoch E's checkpoint is saved;
- ``nan:step:E:S`` / ``inf:step:E:S``: NaN / infinite images at step S of epoch E.

A suffix ``@R`` limits the fault to the msrun worker of rank R (``RANK_ID``).
"""

import os
import signal

import numpy as np

from src.train.loop import Callback

ENV_VAR = "MOCO_FAULT"


def requested(point: str) -> bool:
    """True if ``MOCO_FAULT`` names ``point`` (for this worker's rank, if it names one)."""
    requested_point, _, rank = os.environ.get(ENV_VAR, "").partition("@")
    return requested_point == point and rank in ("", os.environ.get("RANK_ID", "0"))


def kill_if_requested(point: str) -> None:
    if requested(f"kill:{point}"):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a crash


class Faults(Callback):
    """The fault ``MOCO_FAULT`` names, at its point of the run."""

    def on_step_begin(self, epoch, step, images):
        kill_if_requested(f"step:{epoch}:{step}")
        for value, name in ((np.nan, "nan"), (np.inf, "inf")):
            if requested(f"{name}:step:{epoch}:{step}"):
                images = (images[0] * value, *images[1:])
        return images

    def on_checkpoint_written(self, epoch, tmp_path):
        kill_if_requested(f"checkpoint:{epoch}")

    def on_epoch_end(self, epoch):
        kill_if_requested(f"epoch-end:{epoch}")
