"""Deterministic fault injection for the crash-recovery tests; inert unless ``MOCO_FAULT`` is set.

``MOCO_FAULT`` names one point of a run:

- ``kill:step:E:S``: SIGKILL just before step S (1-based) of epoch E;
- ``kill:checkpoint:E``: SIGKILL while epoch E's checkpoint is half written
  (temporary file on disk, not yet renamed);
- ``kill:epoch-end:E``: SIGKILL right after epoch E's checkpoint is saved;
- ``nan:step:E:S``: feed NaN images to step S of epoch E, so the loss is NaN.
"""

import os
import signal

ENV_VAR = "MOCO_FAULT"


def requested(point: str) -> bool:
    """True if ``MOCO_FAULT`` names ``point``."""
    return os.environ.get(ENV_VAR) == point


def kill_if_requested(point: str) -> None:
    """Kills this process with SIGKILL (no cleanup, like a crash) if ``point`` is requested."""
    if requested(f"kill:{point}"):
        os.kill(os.getpid(), signal.SIGKILL)
