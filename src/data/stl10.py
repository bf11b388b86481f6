"""Reader of STL-10 (binary version), 96x96 images. ``train`` (5,000) and ``test`` (8,000) are
read into memory; the 2.7 GB ``unlabeled`` split (100,000) stays on disk as a read-only memmap."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .archive import Archive, bad_file, require_folder
from .splits import ImageSplit, Splits

IMAGE_SIZE = 96
IMAGE_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE  # R, G, B planes of 96x96, each one column-major
NUM_CLASSES = 10
STL10 = Archive(
    url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
    md5="91f7769df0f17e558f3565bffb0c7dfb",
    folder="stl10_binary",
    files=tuple(
        "train_X.bin train_y.bin test_X.bin test_y.bin unlabeled_X.bin class_names.txt".split()
    ),
)


def _read(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, with an OSError (e.g. a missing file) as a DatasetError naming it."""
    try:
        return read(path)
    except OSError as error:
        raise bad_file(path, f"cannot be read ({error.strerror or error})") from None


def load_stl10(root: str | os.PathLike, split="train", download=False) -> ImageSplit:
    """Split ``"train"``, ``"test"`` (in memory, labels 0..9) or ``"unlabeled"`` (read-only
    memmap, labels -1) of STL-10 in ``root``."""
    folder = require_folder(STL10, root, download)
    path = folder / "class_names.txt"
    text = _read(path, lambda p: p.read_text(encoding="utf-8", errors="replace"))
    classes = [line.strip() for line in text.splitlines() if line.strip()]
    if len(classes) != NUM_CLASSES:
        problem = f"has {len(classes)} class names (non-empty lines), not {NUM_CLASSES}"
        raise bad_file(path, problem)
    path = folder / f"{split}_X.bin"
    size = _read(path, lambda p: p.stat().st_size)
    if size == 0 or size % IMAGE_BYTES:
        problem = f"has {size} bytes, not a positive multiple of {IMAGE_BYTES} (3 x 96 x 96)"
        raise bad_file(path, problem)
    raw = _read(path, lambda p: np.memmap(p, np.uint8, mode="r"))
    # Per image R, G, B planes, each column-major: (image, channel, col, row) -> (row, col, ch).
    images = np.transpose(raw.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE), (0, 3, 2, 1))
    if split == "unlabeled":
        return ImageSplit(images, np.full(len(images), -1, np.int64), classes)
    labels_path = folder / f"{split}_y.bin"
    labels = _read(labels_path, lambda p: np.fromfile(p, np.uint8))
    if len(labels) != len(images):
        problem = f"has {len(labels)} labels for the {len(images)} images of {path.name}"
        raise bad_file(labels_path, problem)
    low, high = labels.min(), labels.max()  # not empty: the images file is not
    if low < 1 or high > NUM_CLASSES:
        raise bad_file(labels_path, f"has labels outside 1..{NUM_CLASSES}: [{low}, {high}]")
    return ImageSplit(np.ascontiguousarray(images), labels.astype(np.int64) - 1, classes)


def load_stl10_splits(root: str | os.PathLike, download=False, **_) -> Splits:
    """(pretrain, bank, queries) = (unlabeled, train, test); downloads once, if asked."""
    pretrain = load_stl10(root, "unlabeled", download)
    return Splits(pretrain, load_stl10(root, "train"), load_stl10(root, "test"))
