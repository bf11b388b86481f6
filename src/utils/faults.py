"""Deterministic fault injection for the crash-recovery tests; inert unless ``MOCO_FAULT`` is set.

``MOCO_FAULT`` names one point of a run:

- ``kill:step:E:S``: SIGKILL just before step S (1-based) of epoch E;
- ``kill:checkpoint:E``: SIGKILL while epoch E's checkpoint is half written
  (temporary file on disk, not yet renamed);
- ``kill:epoch-end:E``: SIGKILL right after epoch E's checkpoint is saved;
- ``nan:step:E:S``: feed NaN images to step S of epoch E, so the loss is NaN.

A suffix ``@R`` limits the fault to the msrun worker of rank R (``RANK_ID``), e.g.
``kill:step:2:1@1``.
"""

import os
import signal

ENV_VAR = "MOCO_FAULT"


def requested(point: str) -> bool:
    """True if ``MOCO_FAULT`` names ``point`` (for this worker's rank, if it names one)."""
    requested_point, _, rank = os.environ.get(ENV_VAR, "").partition("@")
    return requested_point == point and rank in ("", os.environ.get("RANK_ID", "0"))


def kill_if_requested(point: str) -> None:
    """Kills this process with SIGKILL (no cleanup, like a crash) if ``point`` is requested."""
    if requested(f"kill:{point}"):
        os.kill(os.getpid(), signal.SIGKILL)
