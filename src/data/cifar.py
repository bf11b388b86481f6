"""Reader and download of CIFAR-10/100 ("python version"): the Python-2 pickles are read by an
unpickler resolving only their numpy globals; every problem is a :class:`DatasetError` naming
the file and the fix."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.request import urlopen

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SIZE = 32
ROW_LENGTH = 3 * IMAGE_SIZE * IMAGE_SIZE  # one planar row: 1024 R, 1024 G, 1024 B values


class DatasetError(Exception):
    """Any problem finding, fetching or reading a data set; the message names file and fix."""


@dataclass(frozen=True)
class Archive:
    """A data set's archive: where to fetch it, its md5, the folder it extracts to (inside the
    data root) and the files that folder must hold."""

    url: str
    md5: str
    folder: str
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetSpec:
    """Where to find and fetch one CIFAR variant, how to read it, and its normalisation."""

    folder: str  # what the archive extracts to, inside the data root
    url: str
    archive_md5: str
    train_files: tuple[str, ...]  # concatenated in this order
    test_files: tuple[str, ...]
    meta_file: str  # holds the class names
    label_key: str
    class_names_key: str
    num_classes: int
    mean: tuple[float, float, float]  # per RGB channel, on the [0, 1] scale
    std: tuple[float, float, float]

    @property
    def archive_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files + (self.meta_file,)

    @property
    def archive(self) -> Archive:
        return Archive(self.url, self.archive_md5, self.folder, self.files)


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        class_names_key="label_names",
        num_classes=10,
        # The PyTorch MoCo CIFAR demo's values (its std is not the true pixel std).
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
    ),
    "cifar100": DatasetSpec(
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        class_names_key="fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


def get_dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``"cifar10"`` or ``"cifar100"``; DatasetError otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown dataset {name!r}: use {' or '.join(DATASETS)}") from None


@dataclass
class CifarSplit:
    """One split: uint8 (N, H, W, 3) RGB images (32x32 CIFAR, 96x96 STL-10), int labels
    indexing ``classes`` (-1: unlabeled)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, size: int) -> CifarSplit:
        return CifarSplit(self.images[:size], self.labels[:size], self.classes)


class Splits(NamedTuple):
    """The three roles of a dataset in MoCo: ``pretrain`` (what the encoder trains on), ``bank``
    (the labelled kNN memory bank / linear-probe train set) and ``queries`` (evaluated on; None
    if the dataset has no labelled held-out images). CIFAR: train, train, test."""

    pretrain: CifarSplit
    bank: CifarSplit
    queries: CifarSplit | None

    @property
    def evaluable(self) -> bool:
        """Whether a kNN or linear evaluation can run: labelled bank and queries."""
        return self.queries is not None and self.bank.num_classes > 0


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals of the official files, so no pickled code can run."""

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


def _bad_file(path: Path, problem: str) -> DatasetError:
    fix = f"delete {path.parent.name} and pass --download, or extract the archive again"
    return DatasetError(f"{path} {problem}: {fix}")


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _unpickle(path: Path, *keys: str) -> dict[str, Any]:
    """Reads one CIFAR pickle safely; checks it is a dict holding ``keys``."""
    try:
        with open(path, "rb") as handle:
            # latin1 keeps Python-2 byte strings (including array buffers) lossless.
            content = _CifarUnpickler(handle, encoding="latin1").load()
    except DatasetError as error:
        raise _bad_file(path, f"is unsafe: it {error}") from None
    except OSError as error:  # e.g. the file is missing
        raise _bad_file(path, f"cannot be read ({error.strerror or error})") from None
    except Exception as error:  # pickle raises many types on corrupt input
        raise _bad_file(path, f"is truncated or corrupt ({type(error).__name__})") from None
    if not isinstance(content, dict):
        raise _bad_file(path, f"holds a {type(content).__name__}, not a dict")
    content = {_text(key): value for key, value in content.items()}
    for key in keys:
        if key not in content:
            raise _bad_file(path, f"has no {key!r} entry")
    return content


def planar_rows_to_hwc(rows: np.ndarray) -> np.ndarray:
    """Converts planar CIFAR rows (N, 3072: R, G, B planes of 32x32) to uint8 (N, 32, 32, 3)."""
    planar = rows.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    return np.ascontiguousarray(planar.transpose(0, 2, 3, 1))


def _read_batch(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Reads and validates one batch file; returns (planar rows, int32 labels)."""
    key = spec.label_key
    content = _unpickle(path, "data", key)
    data = content["data"]
    ok = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (ROW_LENGTH,)
    if not ok:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _bad_file(path, f"has 'data' of {got}, not uint8 of shape (N, {ROW_LENGTH})")
    if len(data) == 0:
        raise _bad_file(path, "holds no images")
    try:
        labels = np.asarray(content[key])
    except (TypeError, ValueError):  # ragged lists
        labels = np.asarray(None)
    if labels.size and labels.dtype.kind not in "iu":
        raise _bad_file(path, f"has {key!r} that are not all integers")
    if labels.shape != (len(data),):
        raise _bad_file(path, f"has {len(data)} images but {key!r} of shape {labels.shape}")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= spec.num_classes:
        raise _bad_file(path, f"has {key!r} outside [0, {spec.num_classes}): [{low}, {high}]")
    return data, labels.astype(np.int32)


def load_cifar(name: str, root: str | os.PathLike, split="train", download=False) -> CifarSplit:
    """Split ``"train"`` or ``"test"`` of CIFAR-10/100 in ``root``; ``download`` fetches (or
    extracts) the archive if the folder is incomplete. DatasetError if missing, corrupt or unsafe.
    """
    spec = get_dataset_spec(name)
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}: use 'train' or 'test'")
    folder = require_folder(spec.archive, root, download)
    meta, key = folder / spec.meta_file, spec.class_names_key
    names = _unpickle(meta, key)[key]
    if not isinstance(names, (list, tuple)) or len(names) != spec.num_classes:
        got = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
        raise _bad_file(meta, f"has {got} class names in {key!r}, not {spec.num_classes}")
    files = spec.train_files if split == "train" else spec.test_files
    batches = [_read_batch(folder / file, spec) for file in files]
    rows = np.concatenate([data for data, _ in batches])
    labels = np.concatenate([batch_labels for _, batch_labels in batches])
    return CifarSplit(planar_rows_to_hwc(rows), labels, [str(_text(n)) for n in names])


def require_folder(archive: Archive, root: str | os.PathLike, download: bool) -> Path:
    """The folder of ``archive`` in ``root``: fetched and extracted first if ``download`` (a
    no-op when complete), else a DatasetError saying how to get it if it is missing."""
    root = Path(root)
    if download:
        download_archive(archive, root)
    elif not (root / archive.folder).is_dir():
        raise DatasetError(
            f"{archive.folder} not found in {root}: pass --download, "
            f"or extract {archive.name} there"
        )
    return root / archive.folder


def download_cifar(name: str, root: str | os.PathLike, url=None, md5=None, timeout=60.0) -> Path:
    """:func:`download_archive` of CIFAR-10/100 (``url`` and ``md5`` override the official ones)."""
    return download_archive(get_dataset_spec(name).archive, root, url, md5, timeout)


def _fetch(url: str, archive: Path, md5: str, timeout: float) -> None:
    """Downloads ``url`` to ``archive`` through a ``.part`` file, so no half archive remains."""
    logger.info("downloading %s to %s", url, archive)
    partial = archive.with_name(archive.name + ".part")
    try:
        with urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
        os.replace(partial, archive)
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise DatasetError(
            f"cannot download {url} ({error}): fetch it another way and put "
            f"{archive.name} (md5 {md5}) in {archive.parent}"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def _check_md5(archive: Path, md5: str, fetched: bool) -> None:
    """DatasetError if ``archive`` has another md5; a ``fetched`` one is then deleted."""
    digest = hashlib.md5()
    with open(archive, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):  # 1 MiB at a time
            digest.update(chunk)
    got = digest.hexdigest()
    if got != md5:
        fix = f"it was not used, replace it with the official {archive.name}"
        if fetched:
            archive.unlink(missing_ok=True)
            fix = "it was deleted, pass --download to retry"
        raise DatasetError(f"{archive} has md5 {got}, expected {md5}: {fix}")


def download_archive(
    archive: Archive, root: str | os.PathLike, url=None, md5=None, timeout=60.0
) -> Path:
    """Fetches (any urllib URL, e.g. ``file://``) or reuses the archive in ``root``, checks its
    md5 and extracts it safely and atomically. A no-op if the folder is complete; returns it.
    """
    url, md5, root = url or archive.url, md5 or archive.md5, Path(root)
    folder = root / archive.folder
    if all((folder / name).is_file() for name in archive.files):
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"cannot create {root} ({error}): pass a writable --data-dir") from None
    path = root / archive.name
    fetched = not path.is_file()
    if fetched:
        _fetch(url, path, md5, timeout)
    _check_md5(path, md5, fetched)
    _extract(path, archive)
    return folder


def _extract(path: Path, archive: Archive) -> None:
    """Extracts to a staging folder, then moves the checked folder in place. The data filter
    refuses absolute or ../ paths, links leaving the folder and devices."""
    root = path.parent
    if not hasattr(tarfile, "data_filter"):
        raise DatasetError(
            f"this Python cannot extract {path} safely (no tarfile data filter): "
            f"extract it by hand in {root}, or use Python >= 3.11.4"
        )
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(path, "r:*") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            detail = str(error).partition("\n")[0].rstrip(":")  # ReadError lists every method
            raise DatasetError(
                f"cannot extract {path} ({type(error).__name__}: {detail}): "
                f"delete it and pass --download again"
            ) from None
        extracted = staging / archive.folder
        missing = [name for name in archive.files if not (extracted / name).is_file()]
        if missing:
            raise DatasetError(
                f"{path} lacks {archive.folder}/{', '.join(missing)}: "
                f"replace it with the official {archive.name}"
            )
        target = root / archive.folder
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier extraction
        os.replace(extracted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
