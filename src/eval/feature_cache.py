"""On-disk cache of a checkpoint's features, so a second evaluation skips the forward passes.

The kNN, the linear probe and the retrieval figure read the same arrays. Each entry is one
``.npz`` beside the checkpoint holding the arrays and the key they were computed for (the
checkpoint's size and mtime, the data, which arrays); an entry whose key differs, or that
cannot be read, is recomputed and overwritten.

Example::

    cache = FeatureCache(results_dir, checkpoint_path)
    key = cache.key("train", dataset="cifar10", data_digest=split_digest(train))
    result = cache.get_or_compute("cifar10-train", key, compute_train_features)
    result.arrays["embedding"], result.loaded
"""

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..utils.io import atomic_write

# Bumped whenever what is stored, or how it is computed, changes.
CACHE_FORMAT = 1
_KEY_FIELD = "__cache_key__"


def split_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """Short digest of a split's images and labels.

    Keys the cache on the data actually read, so a different ``--data-dir`` or
    subset never reuses features of other images.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


@dataclass
class CachedArrays:
    """Arrays returned by :meth:`FeatureCache.get_or_compute`.

    Attributes:
        arrays: Name to array.
        loaded: True if read from the cache, False if computed.
        path: The cache file.
        save_error: Why a computed result could not be written, if it could not.
    """

    arrays: dict[str, np.ndarray]
    loaded: bool
    path: str
    save_error: Optional[str] = None


class FeatureCache:
    """Feature files of one checkpoint, kept in a folder (normally its results folder).

    Args:
        directory: Folder of the cache files.
        checkpoint_path: The checkpoint whose features are cached; its file
            name is part of every cache file name, its size and modification
            time part of every key.
    """

    def __init__(self, directory: str, checkpoint_path: str):
        self.directory = directory
        self.checkpoint_path = checkpoint_path
        self.checkpoint_stem = os.path.splitext(os.path.basename(checkpoint_path))[0]

    def path(self, name: str) -> str:
        """File of the entry ``name``, e.g. ``features-model_last-cifar10-train.npz``."""
        return os.path.join(self.directory, f"features-{self.checkpoint_stem}-{name}.npz")

    def key(self, split: str, **details: Any) -> dict[str, Any]:
        """Key of a split's features: the checkpoint's identity plus ``details``.

        Args:
            split: ``"train"`` or ``"test"``.
            **details: Anything else the features depend on (JSON-serialisable),
                e.g. data set name, number of images, data digest, array names.

        Returns:
            A dict to pass to :meth:`get_or_compute`.
        """
        stat = os.stat(self.checkpoint_path)
        return {
            "format": CACHE_FORMAT,
            "checkpoint_size": stat.st_size,
            "checkpoint_mtime_ns": stat.st_mtime_ns,
            "split": split,
            **details,
        }

    def load(self, name: str, key: dict[str, Any]) -> Optional[dict[str, np.ndarray]]:
        """Returns the arrays stored under ``name`` if their key equals ``key``, else None."""
        path = self.path(name)
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                if _KEY_FIELD not in stored.files or str(stored[_KEY_FIELD]) != _encode(key):
                    return None
                return {field: stored[field] for field in stored.files if field != _KEY_FIELD}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            return None  # truncated or foreign file: recompute and overwrite it

    def save(self, name: str, key: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
        """Writes ``arrays`` under ``name``, atomically (temporary file, then rename).

        Raises:
            OSError: If the folder is not writable.
        """
        os.makedirs(self.directory, exist_ok=True)
        return atomic_write(
            self.path(name),
            lambda tmp: np.savez(tmp, **arrays, **{_KEY_FIELD: np.array(_encode(key))}),
        )

    def get_or_compute(
        self, name: str, key: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
    ) -> CachedArrays:
        """Loads the entry ``name`` if its key matches, else computes and stores it.

        A cache that cannot be written does not fail the evaluation: the
        computed arrays are returned with ``save_error`` set.

        Args:
            name: Entry name, unique per split and data set.
            key: From :meth:`key`.
            compute: Called on a miss; returns name to array.

        Returns:
            The arrays and where they came from.
        """
        arrays = self.load(name, key)
        if arrays is not None:
            return CachedArrays(arrays, loaded=True, path=self.path(name))
        arrays = compute()
        try:
            return CachedArrays(arrays, loaded=False, path=self.save(name, key, arrays))
        except OSError as err:
            return CachedArrays(arrays, loaded=False, path=self.path(name), save_error=str(err))


def _encode(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)
