"""Fetching a data set's archive (any urllib URL, e.g. ``file://``), checking its md5 and
extracting it safely and atomically: shared by CIFAR and STL-10."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from ..utils.progress import logger
from .splits import DatasetError

TIMEOUT = 60.0  # seconds without an answer before a download fails


@dataclass(frozen=True)
class Archive:
    """An archive's URL and md5, the folder it extracts to and the files that folder must hold."""

    url: str
    md5: str
    folder: str
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def bad_file(path: Path, problem: str) -> DatasetError:
    fix = f"delete {path.parent.name} and pass --download, or extract the archive again"
    return DatasetError(f"{path} {problem}: {fix}")


def require_folder(archive: Archive, root: str | os.PathLike, download: bool) -> Path:
    """The folder of ``archive`` in ``root``, fetched and extracted first if ``download``."""
    root = Path(root)
    if download:
        return download_archive(archive, root)
    if not (root / archive.folder).is_dir():
        hint = f"pass --download, or extract {archive.name} there"
        raise DatasetError(f"{archive.folder} not found in {root}: {hint}")
    return root / archive.folder


def download_archive(archive: Archive, root: str | os.PathLike) -> Path:
    """Fetches (or reuses) the archive in ``root``, checks and extracts it; returns its folder,
    at once if complete. A ``.part`` file and a staging folder leave nothing half done."""
    root = Path(root)
    folder, path = root / archive.folder, root / archive.name
    if all((folder / name).is_file() for name in archive.files):
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"cannot create {root} ({error}): pass a writable --data-dir") from None
    fetched = not path.is_file()
    if fetched:
        logger.info("downloading %s to %s", archive.url, path)
        partial = path.with_name(path.name + ".part")
        try:
            with urlopen(archive.url, timeout=TIMEOUT) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
            os.replace(partial, path)
        except (OSError, ValueError, http.client.HTTPException) as error:
            fix = f"fetch it another way and put {path.name} (md5 {archive.md5}) in {path.parent}"
            raise DatasetError(f"cannot download {archive.url} ({error}): {fix}") from None
        finally:
            partial.unlink(missing_ok=True)
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):  # 1 MiB at a time
            digest.update(chunk)
    if digest.hexdigest() != archive.md5:
        fix = f"it was not used, replace it with the official {path.name}"
        if fetched:
            path.unlink(missing_ok=True)
            fix = "it was deleted, pass --download to retry"
        raise DatasetError(f"{path} has md5 {digest.hexdigest()}, expected {archive.md5}: {fix}")
    # Extract to a staging folder, then move the checked folder in place. The data filter refuses
    # absolute or ../ paths, links leaving the folder and devices.
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
        if folder.exists():
            shutil.rmtree(folder)  # an incomplete earlier extraction
        os.replace(extracted, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
