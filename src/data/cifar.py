"""Reader of CIFAR-10/100 ("python version"). The Python-2 pickles are read by an unpickler that
resolves only their numpy globals, so no pickled code can run."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .archive import Archive, bad_file, require_folder
from .splits import DatasetError, ImageSplit, Splits

IMAGE_SIZE = 32
ROW_LENGTH = 3 * IMAGE_SIZE * IMAGE_SIZE  # one planar row: 1024 R, 1024 G, 1024 B values


@dataclass(frozen=True)
class CifarFiles:
    """One CIFAR variant's archive, its files (batches concatenated in order) and dict keys."""

    url: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str  # holds the class names
    label_key: str
    class_names_key: str
    num_classes: int

    @property
    def archive(self) -> Archive:
        files = self.train_files + self.test_files + (self.meta_file,)
        return Archive(self.url, self.md5, self.folder, files)


CIFAR: dict[str, CifarFiles] = {
    "cifar10": CifarFiles(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        class_names_key="label_names",
        num_classes=10,
    ),
    "cifar100": CifarFiles(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        class_names_key="fine_label_names",
        num_classes=100,
    ),
}


class _CifarUnpickler(pickle.Unpickler):
    ALLOWED = {  # numpy's ndarray reduce layout
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),  # numpy 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DatasetError(f"asks for {module}.{name}, which no official CIFAR file does")
        return super().find_class(module, name)


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _unpickle(path: Path, *keys: str) -> dict[str, Any]:
    """One CIFAR pickle, read safely: a dict holding ``keys``."""
    try:
        with open(path, "rb") as handle:
            # latin1 keeps Python-2 byte strings (including array buffers) lossless.
            content = _CifarUnpickler(handle, encoding="latin1").load()
    except DatasetError as error:
        raise bad_file(path, f"is unsafe: it {error}") from None
    except OSError as error:  # e.g. the file is missing
        raise bad_file(path, f"cannot be read ({error.strerror or error})") from None
    except Exception as error:  # pickle raises many types on corrupt input
        raise bad_file(path, f"is truncated or corrupt ({type(error).__name__})") from None
    if not isinstance(content, dict):
        raise bad_file(path, f"holds a {type(content).__name__}, not a dict")
    content = {_text(key): value for key, value in content.items()}
    for key in keys:
        if key not in content:
            raise bad_file(path, f"has no {key!r} entry")
    return content


def planar_rows_to_hwc(rows: np.ndarray) -> np.ndarray:
    """Planar CIFAR rows (N, 3072: R, G, B planes of 32x32) as uint8 (N, 32, 32, 3)."""
    planar = rows.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    return np.ascontiguousarray(planar.transpose(0, 2, 3, 1))


def _read_batch(path: Path, files: CifarFiles) -> tuple[np.ndarray, np.ndarray]:
    """One checked batch file: (planar rows, int32 labels)."""
    key = files.label_key
    content = _unpickle(path, "data", key)
    data = content["data"]
    ok = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (ROW_LENGTH,)
    if not ok:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise bad_file(path, f"has 'data' of {got}, not uint8 of shape (N, {ROW_LENGTH})")
    if len(data) == 0:
        raise bad_file(path, "holds no images")
    try:
        labels = np.asarray(content[key])
    except (TypeError, ValueError):  # ragged lists
        labels = np.asarray(None)
    if labels.size and labels.dtype.kind not in "iu":
        raise bad_file(path, f"has {key!r} that are not all integers")
    if labels.shape != (len(data),):
        raise bad_file(path, f"has {len(data)} images but {key!r} of shape {labels.shape}")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= files.num_classes:
        raise bad_file(path, f"has {key!r} outside [0, {files.num_classes}): [{low}, {high}]")
    return data, labels.astype(np.int32)


def load_cifar(name: str, root: str | os.PathLike, split="train", download=False) -> ImageSplit:
    """Split ``"train"`` or ``"test"`` of ``"cifar10"`` or ``"cifar100"`` in ``root``."""
    files = CIFAR[name]
    folder = require_folder(files.archive, root, download)
    meta, key = folder / files.meta_file, files.class_names_key
    names = _unpickle(meta, key)[key]
    if not isinstance(names, (list, tuple)) or len(names) != files.num_classes:
        got = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
        raise bad_file(meta, f"has {got} class names in {key!r}, not {files.num_classes}")
    batch_files = {"train": files.train_files, "test": files.test_files}[split]
    rows, labels = zip(*(_read_batch(folder / file, files) for file in batch_files))
    classes = [str(_text(name)) for name in names]
    return ImageSplit(planar_rows_to_hwc(np.concatenate(rows)), np.concatenate(labels), classes)


def load_cifar_splits(name: str, root: str | os.PathLike, download=False, **_) -> Splits:
    """(pretrain, bank, queries) = (train, train, test); downloads once, if asked."""
    train = load_cifar(name, root, "train", download)
    return Splits(train, train, load_cifar(name, root, "test"))
