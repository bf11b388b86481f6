"""On-disk cache of a checkpoint's features (read by the kNN, linear probe and retrieval figure).

Each entry is one ``.npz`` of the arrays and the key they were computed for (the checkpoint's
size and mtime, the data, which arrays); an entry whose key differs, or unreadable, is recomputed.
"""

import hashlib
import json
import os
import zipfile
from typing import Any, Callable, Optional

import numpy as np

from ..utils.io import atomic_write
from ..utils.progress import logger

CACHE_FORMAT = 1  # bumped whenever what is stored, or how it is computed, changes
_KEY_FIELD = "__cache_key__"


def split_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """Digest of a split's images and labels: another data folder or subset is another key."""
    digest = hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


class FeatureCache:
    """Feature files of one checkpoint in ``directory``: ``features-<checkpoint>-<name>.npz``."""

    def __init__(self, directory: str, checkpoint_path: str):
        self.directory, self.checkpoint_path = directory, checkpoint_path
        self.checkpoint_stem = os.path.splitext(os.path.basename(checkpoint_path))[0]

    def path(self, name: str) -> str:
        return os.path.join(self.directory, f"features-{self.checkpoint_stem}-{name}.npz")

    def key(self, split: str, **details: Any) -> str:
        """The checkpoint's identity (size, mtime) plus what else the features depend on."""
        stat = os.stat(self.checkpoint_path)
        key = {"format": CACHE_FORMAT, "checkpoint_size": stat.st_size, "split": split}
        key = {**key, "checkpoint_mtime_ns": stat.st_mtime_ns, **details}
        return json.dumps(key, sort_keys=True)

    def load(self, name: str, key: str) -> Optional[dict[str, np.ndarray]]:
        """The arrays stored under ``name`` if stored for ``key``, else None."""
        try:
            with np.load(self.path(name), allow_pickle=False) as stored:
                if _KEY_FIELD not in stored.files or str(stored[_KEY_FIELD]) != key:
                    return None
                return {field: stored[field] for field in stored.files if field != _KEY_FIELD}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            return None  # missing, truncated or foreign: recompute and overwrite

    def save(self, name: str, key: str, arrays: dict[str, np.ndarray]) -> str:
        os.makedirs(self.directory, exist_ok=True)
        return atomic_write(self.path(name), lambda f: np.savez(f, **arrays, **{_KEY_FIELD: key}))

    def get_or_compute(
        self, name: str, key: str, compute: Callable[[], dict[str, np.ndarray]]
    ) -> tuple[dict[str, np.ndarray], bool]:
        """``(arrays, loaded)``: the entry if stored for ``key``, else computed and stored (a
        cache that cannot be written only warns: the evaluation goes on)."""
        arrays = self.load(name, key)
        if arrays is not None:
            return arrays, True
        arrays = compute()
        try:
            self.save(name, key, arrays)
        except OSError as err:
            logger.warning("warning: could not cache the features: %s", err)
        return arrays, False
