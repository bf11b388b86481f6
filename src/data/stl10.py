"""Reader of STL-10 (binary version), 96x96 images. ``train`` (5,000) and ``test`` (8,000) are
read into memory; the 2.7 GB ``unlabeled`` split (100,000) stays on disk as a read-only
``np.memmap``, its pages read when indexed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from .archive import Archive, bad_file, require_folder
from .splits import ImageSplit, Splits

IMAGE_SIZE = 96
IMAGE_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE  # R, G, B planes of 96x96, each one column-major
NUM_CLASSES = 10
CLASS_NAMES_FILE = "class_names.txt"
STL10 = Archive(
    url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
    md5="91f7769df0f17e558f3565bffb0c7dfb",
    folder="stl10_binary",
    files=(
        "train_X.bin",
        "train_y.bin",
        "test_X.bin",
        "test_y.bin",
        "unlabeled_X.bin",
        CLASS_NAMES_FILE,
    ),
)
T = TypeVar("T")


def stl10_to_hwc(raw: np.ndarray) -> np.ndarray:
    """Views raw STL-10 bytes (per image R, G, B planes, each column-major: rows run fastest)
    as (N, 96, 96, 3) images, without copying: (image, channel, col, row) -> (row, col, ch)."""
    return np.transpose(raw.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE), (0, 3, 2, 1))


def _read(path: Path, read: Callable[[Path], T]) -> T:
    """``read(path)``, with an OSError (e.g. a missing file) as a DatasetError naming it."""
    try:
        return read(path)
    except OSError as error:
        raise bad_file(path, f"cannot be read ({error.strerror or error})") from None


def _images(path: Path) -> np.memmap:
    """The images of an ``*_X.bin``, mapped read-only after checking its byte size."""
    size = _read(path, lambda p: p.stat().st_size)
    if size == 0 or size % IMAGE_BYTES:
        problem = f"has {size} bytes, not a positive multiple of {IMAGE_BYTES} (3 x 96 x 96)"
        raise bad_file(path, problem)
    return stl10_to_hwc(_read(path, lambda p: np.memmap(p, np.uint8, mode="r")))


def _labels(path: Path, images: str, count: int) -> np.ndarray:
    """The labels of a ``*_y.bin`` (uint8 1..10) as int64 0..9; one per image of ``images``."""
    labels = _read(path, lambda p: np.fromfile(p, np.uint8))
    if len(labels) != count:
        raise bad_file(path, f"has {len(labels)} labels for the {count} images of {images}")
    low, high = labels.min(), labels.max()  # count > 0: _images refuses empty files
    if low < 1 or high > NUM_CLASSES:
        raise bad_file(path, f"has labels outside 1..{NUM_CLASSES}: [{low}, {high}]")
    return labels.astype(np.int64) - 1


def _class_names(path: Path) -> list[str]:
    """The non-empty lines of ``class_names.txt``: exactly one name per class."""
    text = _read(path, lambda p: p.read_text(encoding="utf-8", errors="replace"))
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != NUM_CLASSES:
        raise bad_file(path, f"has {len(names)} class names (non-empty lines), not {NUM_CLASSES}")
    return names


def load_stl10(root: str | os.PathLike, split="train", download=False) -> ImageSplit:
    """Split ``"train"``, ``"test"`` (in memory, labels 0..9) or ``"unlabeled"`` (read-only
    memmap, labels -1) of STL-10 in ``root``; ``download`` fetches (or extracts) the archive if
    the folder is incomplete."""
    folder = require_folder(STL10, root, download)
    classes = _class_names(folder / CLASS_NAMES_FILE)
    images_file = f"{split}_X.bin"
    images = _images(folder / images_file)
    if split == "unlabeled":
        return ImageSplit(images, np.full(len(images), -1, np.int64), classes)
    labels = _labels(folder / f"{split}_y.bin", images_file, len(images))
    return ImageSplit(np.ascontiguousarray(images), labels, classes)


def load_stl10_splits(root: str | os.PathLike, download=False, **_) -> Splits:
    """(pretrain, bank, queries) = the unlabeled, train and test splits of :func:`load_stl10`."""
    pretrain = load_stl10(root, "unlabeled", download)  # downloads once, if asked
    return Splits(pretrain, load_stl10(root, "train"), load_stl10(root, "test"))
