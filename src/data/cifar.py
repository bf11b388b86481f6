"""CIFAR-10 / CIFAR-100 readers for the official "python version" files.

The official files are Python-2 ``cPickle`` dicts (protocol 2). Unpickling runs
whatever the file asks for, so the reader uses a restricted unpickler that only
resolves the three numpy globals those files contain. Every problem (missing
folder, truncated file, bad checksum, unexpected content) is reported as a
:class:`DatasetError` whose message says what is wrong, which file, and what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

IMAGE_SIZE = 32
NUM_CHANNELS = 3
ROW_LENGTH = NUM_CHANNELS * IMAGE_SIZE * IMAGE_SIZE  # 3072 values per planar row
SPLITS = ("train", "test")
DOWNLOAD_TIMEOUT_SECONDS = 60.0
_CHUNK_BYTES = 1 << 20


class DatasetError(Exception):
    """Any problem with finding, fetching or reading a data set."""


class DatasetNotFoundError(DatasetError):
    """The data set folder or one of its files is missing."""


class ChecksumError(DatasetError):
    """A file's md5 differs from the published one."""


class DownloadError(DatasetError):
    """The archive could not be fetched."""


class UnsafePickleError(DatasetError):
    """A pickle asked for a global that the official files never contain."""


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, fetch, verify and read one CIFAR variant.

    Attributes:
        name: Registry key, e.g. ``"cifar10"``.
        display_name: Human name used in messages, e.g. ``"CIFAR-10"``.
        folder: Folder the archive extracts to, inside the data root.
        url: Official archive URL.
        archive_md5: md5 of the archive at ``url``.
        train_files: Files concatenated (in order) to form the train split.
        test_files: Files forming the test split.
        meta_file: File holding the class names.
        label_key: Key of the label list in each batch dict.
        class_names_key: Key of the class-name list in the meta dict.
        num_classes: Number of classes.
        mean: Per-channel normalisation mean on the [0, 1] scale (RGB).
        std: Per-channel normalisation std on the [0, 1] scale (RGB).
        file_md5: md5 of every extracted file, by file name.
    """

    name: str
    display_name: str
    folder: str
    url: str
    archive_md5: str
    train_files: Tuple[str, ...]
    test_files: Tuple[str, ...]
    meta_file: str
    label_key: str
    class_names_key: str
    num_classes: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    file_md5: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def archive_name(self) -> str:
        """File name of the official archive, e.g. ``cifar-10-python.tar.gz``."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def all_files(self) -> Tuple[str, ...]:
        """Every file the reader needs, meta file last."""
        return self.train_files + self.test_files + (self.meta_file,)

    def split_files(self, split: str) -> Tuple[str, ...]:
        """File names of ``split`` ('train' or 'test')."""
        if split not in SPLITS:
            raise DatasetError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
        return self.train_files if split == "train" else self.test_files


DATASETS: Dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        name="cifar10",
        display_name="CIFAR-10",
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
        file_md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
    "cifar100": DatasetSpec(
        name="cifar100",
        display_name="CIFAR-100",
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
        file_md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
}


def get_dataset_spec(name: str) -> DatasetSpec:
    """Looks up a data set by registry name.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.

    Returns:
        The matching :class:`DatasetSpec`.

    Raises:
        DatasetError: If the name is unknown.
    """
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DatasetError(
            f"Unknown dataset {name!r}: known datasets are {', '.join(sorted(DATASETS))}."
        ) from None


@dataclass
class CifarSplit:
    """One split of a CIFAR data set held in memory.

    Attributes:
        images: uint8 array of shape (N, 32, 32, 3), HWC, RGB.
        labels: int32 array of shape (N,); other integer dtypes are converted.
        classes: Class names; ``labels`` index into this list.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: List[str]

    def __post_init__(self) -> None:
        # Checked here too so that hand-built splits (tests, subsets) fail early.
        expected_tail = (IMAGE_SIZE, IMAGE_SIZE, NUM_CHANNELS)
        if not isinstance(self.images, np.ndarray) or self.images.ndim != 4:
            raise DatasetError(
                f"CifarSplit images must be a uint8 array of shape (N, 32, 32, 3); "
                f"got {getattr(self.images, 'shape', type(self.images).__name__)}."
            )
        if self.images.dtype != np.uint8 or self.images.shape[1:] != expected_tail:
            raise DatasetError(
                f"CifarSplit images must be uint8 of shape (N, 32, 32, 3); "
                f"got {self.images.dtype} {self.images.shape}."
            )
        labels = np.asarray(self.labels)
        self.classes = list(self.classes)
        if labels.dtype.kind not in "iu":
            raise DatasetError(f"CifarSplit labels must be integers; got {labels.dtype}.")
        if labels.shape != (len(self.images),):
            raise DatasetError(
                f"CifarSplit has {len(self.images)} images but labels of shape {labels.shape}."
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise DatasetError(
                f"CifarSplit labels must lie in [0, {len(self.classes)}); "
                f"got [{labels.min()}, {labels.max()}]."
            )
        self.labels = labels.astype(np.int32, copy=False)

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``classes``)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, size: int) -> "CifarSplit":
        """The first ``size`` images (all of them if ``size`` is larger)."""
        return CifarSplit(self.images[:size], self.labels[:size], self.classes)


# --------------------------------------------------------------------------- safe unpickling

_ALLOWED_GLOBALS = frozenset(
    {
        # The only globals in the official files: the numpy ndarray reduce layout.
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),  # numpy >= 2 name of the same function
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals of the official files.

    Plain containers (dict, list, str, int) need no globals, so nothing else is
    allowed: a pickle naming ``os.system`` or similar is refused before anything runs.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: official CIFAR files only "
                f"contain numpy arrays, lists, strings and ints"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> Dict[str, Any]:
    """Reads one CIFAR pickle safely and returns it with ``str`` keys."""
    try:
        with open(path, "rb") as handle:
            # latin1 keeps Python-2 byte strings (including array buffers) lossless.
            content = _CifarUnpickler(handle, encoding="latin1").load()
    except UnsafePickleError as error:
        raise UnsafePickleError(
            f"{path}: {error}. The file is not an official CIFAR file; delete it and "
            f"download the data set again."
        ) from None
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"{path} is missing: the data set folder is incomplete. Delete the folder and "
            f"download or extract the archive again."
        ) from None
    except OSError as error:
        raise DatasetError(f"Cannot read {path}: {error}.") from None
    except Exception as error:  # pickle raises many types on corrupt input
        raise DatasetError(
            f"{path} is truncated or corrupt ({type(error).__name__}: {error}). "
            f"Delete it and download or extract the archive again."
        ) from None
    if not isinstance(content, dict):
        raise DatasetError(
            f"{path} holds a {type(content).__name__}, not the dict of a CIFAR file."
        )
    return {_as_text(key): value for key, value in content.items()}


def _as_text(value: Any) -> Any:
    """Decodes byte strings (from ``encoding='bytes'`` style files) to ``str``."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def _require_key(content: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in content:
        raise DatasetError(
            f"{path} has no {key!r} entry (found: {', '.join(sorted(map(str, content)))}); "
            f"it is not a valid CIFAR file."
        )
    return content[key]


# --------------------------------------------------------------------------- reading


def planar_rows_to_hwc(rows: np.ndarray) -> np.ndarray:
    """Converts channel-planar CIFAR rows to HWC images.

    Args:
        rows: uint8 array (N, 3072): 1024 R, then 1024 G, then 1024 B values,
            each plane 32x32 row-major.

    Returns:
        Contiguous uint8 array (N, 32, 32, 3).
    """
    planar = rows.reshape(-1, NUM_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    return np.ascontiguousarray(planar.transpose(0, 2, 3, 1))


def _read_batch(path: Path, label_key: str, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Reads and validates one batch file; returns (planar rows, int32 labels)."""
    content = _unpickle(path)
    data = _require_key(content, "data", path)
    labels = _require_key(content, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DatasetError(
            f"{path}: 'data' must be a uint8 array, got "
            f"{getattr(data, 'dtype', type(data).__name__)}."
        )
    if data.ndim != 2 or data.shape[1] != ROW_LENGTH:
        raise DatasetError(
            f"{path}: 'data' must have shape (N, {ROW_LENGTH}), got {data.shape}."
        )
    if len(data) == 0:
        raise DatasetError(f"{path} holds no images; official CIFAR batches are never empty.")
    try:
        label_array = np.asarray(labels)
    except (TypeError, ValueError):
        label_array = np.asarray(None)  # ragged: reported just below
    if label_array.size == 0:
        label_array = label_array.astype(np.int64)  # [] would otherwise be float64
    if label_array.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {label_key!r} must be a list of integers.")
    if label_array.shape != (len(data),):
        raise DatasetError(
            f"{path}: {len(data)} images but {label_key!r} has shape {label_array.shape}."
        )
    if len(label_array) and (label_array.min() < 0 or label_array.max() >= num_classes):
        raise DatasetError(
            f"{path}: labels must lie in [0, {num_classes}), found "
            f"[{label_array.min()}, {label_array.max()}]."
        )
    return data, label_array.astype(np.int32)


def _read_class_names(path: Path, key: str, num_classes: int) -> List[str]:
    names = _require_key(_unpickle(path), key, path)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        raise DatasetError(
            f"{path}: {key!r} must list {num_classes} class names, got "
            f"{len(names) if isinstance(names, (list, tuple)) else type(names).__name__}."
        )
    return [str(_as_text(name)) for name in names]


def file_md5(path: PathLike) -> str:
    """Returns the hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_files(folder: Path, spec: DatasetSpec, names: Sequence[str]) -> None:
    for name in names:
        expected = spec.file_md5.get(name)
        got = file_md5(folder / name)
        if expected is not None and got != expected:
            raise ChecksumError(
                f"{folder / name} has md5 {got}, expected {expected}. The file is damaged or "
                f"not the official one: delete {folder} and download the data set again."
            )


def _missing_data_message(spec: DatasetSpec, root: Path) -> str:
    folder = root / spec.folder
    return (
        f"{spec.display_name} not found: looked for the folder {folder} "
        f"(with {', '.join(spec.all_files)}). Pass --download to fetch it from {spec.url} "
        f"(md5 {spec.archive_md5}), or download that archive yourself and either extract it "
        f"in {root} so that {folder} exists, or put {spec.archive_name} in {root} and pass "
        f"--download to verify and extract it."
    )


def load_cifar(
    name: str,
    root: PathLike,
    split: str = "train",
    download: bool = False,
    verify: bool = False,
) -> CifarSplit:
    """Loads one split of CIFAR-10 or CIFAR-100 into memory.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: Folder that contains ``cifar-10-batches-py`` / ``cifar-100-python``.
        split: ``"train"`` or ``"test"``.
        download: Fetch (or extract an archive already in ``root``) if the folder
            is missing.
        verify: Also check the md5 of every file read (about a second per 180 MB).

    Returns:
        The split, with HWC uint8 images, int32 labels and class names from the
        meta file.

    Raises:
        DatasetError: If the files are missing, corrupt, unsafe or inconsistent.
    """
    spec = get_dataset_spec(name)
    files = spec.split_files(split)
    root = Path(root)
    folder = root / spec.folder
    if download:
        download_cifar(name, root)  # a no-op when the folder is complete
    elif not folder.is_dir():
        raise DatasetNotFoundError(_missing_data_message(spec, root))
    if verify:
        _verify_files(folder, spec, files + (spec.meta_file,))

    classes = _read_class_names(folder / spec.meta_file, spec.class_names_key, spec.num_classes)
    batches = [_read_batch(folder / file, spec.label_key, spec.num_classes) for file in files]
    rows = np.concatenate([data for data, _ in batches])
    labels = np.concatenate([batch_labels for _, batch_labels in batches])
    return CifarSplit(images=planar_rows_to_hwc(rows), labels=labels, classes=classes)


# --------------------------------------------------------------------------- download


def _manual_download_hint(spec: DatasetSpec, root: Path, url: str, md5: str) -> str:
    return (
        f"Download {url} (md5 {md5}) some other way and put {spec.archive_name} in {root}, "
        f"or extract it there so that {root / spec.folder} exists."
    )


def _fetch(url: str, target: Path, timeout: float) -> None:
    """Streams ``url`` to ``target`` through a temporary ``.part`` file."""
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                out.write(chunk)
                done += len(chunk)
                if total and done % (16 * _CHUNK_BYTES) < len(chunk):
                    logger.info("downloaded %.0f / %.0f MiB of %s", done / 2**20, total / 2**20, url)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _is_within(base: Path, member_name: str) -> bool:
    resolved = (base / member_name).resolve()
    return resolved == base.resolve() or base.resolve() in resolved.parents


def _safe_members(archive: tarfile.TarFile, folder: str, destination: Path) -> List[tarfile.TarInfo]:
    """Returns the regular files and folders of ``folder``; rejects anything unusual."""
    members = []
    for member in archive.getmembers():
        inside_folder = member.name == folder or member.name.startswith(folder + "/")
        if not inside_folder:
            continue  # e.g. nothing: the official archives hold only the folder
        if not (member.isfile() or member.isdir()) or not _is_within(destination, member.name):
            raise DatasetError(
                f"archive member {member.name!r} is a link, device or points outside the "
                f"target folder; refusing to extract"
            )
        members.append(member)
    return members


def _extract(archive_path: Path, spec: DatasetSpec, root: Path) -> None:
    """Extracts the data set folder of ``archive_path`` into ``root`` atomically."""
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(archive_path, "r:*") as archive:
                members = _safe_members(archive, spec.folder, staging)
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                archive.extractall(staging, members=members, **extra)
        except DatasetError as error:
            raise DatasetError(f"{archive_path}: {error}.") from None
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DatasetError(
                f"Cannot extract {archive_path} ({type(error).__name__}: {error}). Delete it "
                f"and download it again."
            ) from None
        missing = [name for name in spec.all_files if not (staging / spec.folder / name).is_file()]
        if missing:
            raise DatasetError(
                f"{archive_path} lacks {', '.join(missing)} under {spec.folder}/; it is not the "
                f"{spec.display_name} archive."
            )
        target = root / spec.folder
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier extraction
        os.replace(staging / spec.folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_cifar(
    name: str,
    root: PathLike,
    url: Optional[str] = None,
    md5: Optional[str] = None,
    timeout: float = DOWNLOAD_TIMEOUT_SECONDS,
) -> Path:
    """Fetches, verifies and extracts a CIFAR archive into ``root``.

    An archive already in ``root`` (e.g. ``cifar-10-python.tar.gz`` copied there
    by hand) is verified and used instead of the network. A complete extracted
    folder makes this a no-op.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: Folder to hold the archive and the extracted data set folder.
        url: Archive URL; defaults to the official one. Any ``urllib`` URL works,
            including ``file://`` (used by the tests).
        md5: Expected archive md5; defaults to the official archive's.
        timeout: Socket timeout in seconds.

    Returns:
        Path of the extracted data set folder.

    Raises:
        DatasetError: On network failure, md5 mismatch, or an unusable archive.
    """
    spec = get_dataset_spec(name)
    url = url or spec.url
    md5 = md5 or spec.archive_md5
    root = Path(root)
    folder = root / spec.folder
    if all((folder / file).is_file() for file in spec.all_files):
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"Cannot create data folder {root}: {error}.") from None

    archive = root / spec.archive_name
    fetched = not archive.is_file()
    if fetched:
        logger.info("downloading %s to %s", url, archive)
        try:
            _fetch(url, archive, timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            raise DownloadError(
                f"Cannot download {spec.display_name} from {url} ({error}). "
                + _manual_download_hint(spec, root, url, md5)
            ) from None

    got = file_md5(archive)
    if got != md5:
        if fetched:
            archive.unlink(missing_ok=True)
            action = "The downloaded file was deleted; try again."
        else:
            action = f"Delete or replace {archive}; it was not used."
        raise ChecksumError(
            f"{archive} has md5 {got}, expected {md5}. {action} "
            + _manual_download_hint(spec, root, url, md5)
        )
    _extract(archive, spec, root)
    return folder
