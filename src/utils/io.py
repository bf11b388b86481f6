"""Files that are either whole or absent: atomic writes and JSON results."""

import glob
import json
import os
from pathlib import Path
from typing import Any, Callable


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[str], Any]) -> str:
    """Calls ``write(tmp)`` on a temporary file beside ``path``, flushes it and renames it, so a
    crash at any moment leaves ``path`` as it was. The temporary name keeps the extension (savers
    that append one leave it alone); temporary files of killed runs are removed first."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = os.path.join(directory, f".{os.path.basename(path)}.")
    ext = os.path.splitext(path)[1]
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
    text = json.dumps(content, indent=2) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
