"""Files that are either whole or absent: atomic writes and JSON results."""

import glob
import json
import os
from typing import Any, Callable


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[str], Any]) -> str:
    """Calls ``write(tmp)`` on a temporary file beside ``path``, flushes it and renames it.

    A crash at any moment leaves ``path`` as it was. The temporary name keeps the extension
    (savers that append one leave it alone); temporary files of killed runs are removed first.
    """
    directory = os.path.dirname(os.path.abspath(path))
    name, ext = os.path.splitext(os.path.basename(path))
    prefix = os.path.join(directory, f".{name}{ext}.")
    for stale in glob.glob(glob.escape(prefix) + "*.tmp" + ext):
        os.remove(stale)
    tmp = f"{prefix}{os.getpid()}.tmp{ext}"
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json(path: str, content: Any) -> str:
    """Writes ``content`` as indented JSON, atomically; creates the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)
            handle.write("\n")

    return atomic_write(path, write)
