"""Reader of a folder of images (``--dataset folder``): an ImageFolder (label = rank of the
sorted class sub-folder name) or, for training only, a flat folder (labels -1, no classes); a
``val/`` sub-folder or a stratified ``val_split``. Pillow decodes (as fast as ``vision.Decode``
on CPU, 3x on large JPEGs); images are made RGB, resized on the shorter side and centre-cropped,
as a direct resize would distort their aspect ratio."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..utils.progress import logger
from .splits import DatasetError, ImageSplit, Splits

# Compared lower-case; any other file, and any name starting with a dot, is ignored.
IMAGE_EXTENSIONS = tuple(".bmp .gif .jpeg .jpg .pgm .png .ppm .tif .tiff .webp".split())
UNLABELED = -1
VAL_SPLIT_SEED = 0  # val_split holds out the same images in every run and in infer.py


def _visible(folder: Path) -> list[Path]:
    """The entries of ``folder`` whose name does not start with a dot, sorted by name."""
    return sorted(path for path in folder.iterdir() if not path.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]


def decode_image(path: Path, image_size: int, skip_bad=False) -> np.ndarray | None:
    """One image file as uint8 (S, S, 3) RGB, shorter side resized to S then centre-cropped.
    A file Pillow cannot decode is a DatasetError naming it, or None if ``skip_bad``."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale
            rgb = image.convert("RGB")
    except Exception as error:  # Pillow raises many types on corrupt input
        if skip_bad:
            return None
        problem = f"{type(error).__name__}: {error}"
        raise DatasetError(
            f"{path} is not a readable image ({problem}): fix or delete it"
        ) from None
    return np.asarray(ImageOps.fit(rgb, (image_size, image_size), Image.BICUBIC))


def _list_folder(folder: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """(image files, int64 labels, class names) of an ImageFolder or a flat unlabeled folder."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder: pass --data-dir PATH of images")
    classes = [path.name for path in _visible(folder) if path.is_dir()]
    if not classes:
        files = _image_files(folder)
        if not files:
            raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
        return files, np.full(len(files), UNLABELED, np.int64), []
    files, labels = [], []
    for label, name in enumerate(classes):
        found = _image_files(folder / name)
        if not found:
            raise DatasetError(f"class folder {folder / name} holds no images: fill or remove it")
        files += found
        labels += [label] * len(found)
    return files, np.array(labels, np.int64), classes


def _read_split(folder: Path, image_size: int, skip_bad: bool) -> tuple[ImageSplit, list[Path]]:
    """Decodes every image of ``folder`` (in threads: Pillow decodes without the GIL); returns
    the split and the files skipped as unreadable."""
    files, labels, classes = _list_folder(folder)
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda path: decode_image(path, image_size, skip_bad), files))
    kept = [i for i, array in enumerate(arrays) if array is not None]
    if not kept:
        raise DatasetError(f"no image of {folder} is readable")
    skipped = [files[i] for i, array in enumerate(arrays) if array is None]
    return ImageSplit(np.stack([arrays[i] for i in kept]), labels[kept], classes), skipped


def _take(split: ImageSplit, mask: np.ndarray) -> ImageSplit:
    return ImageSplit(split.images[mask], split.labels[mask], split.classes)


def _hold_out(split: ImageSplit, fraction: float) -> tuple[ImageSplit, ImageSplit]:
    """(train, val): ``round(fraction * n)`` random images of each class of ``split`` to val."""
    rng = np.random.default_rng(VAL_SPLIT_SEED)
    in_val = np.zeros(len(split), bool)
    for label in range(split.num_classes):
        members = rng.permutation(np.flatnonzero(split.labels == label))
        in_val[members[: round(fraction * len(members))]] = True
    if in_val.all() or not in_val.any():
        raise DatasetError(f"val_split {fraction} of {len(split)} images leaves a split empty")
    return _take(split, ~in_val), _take(split, in_val)


def load_folder_splits(
    root: str | os.PathLike,
    image_size=32,
    val_split=0.0,
    skip_bad_images=False,
    **_,
) -> Splits:
    """(train, train, val) of the image folder ``root``: ``train/`` and ``val/`` sub-folders, or
    ``root`` itself with ``val_split`` of each class held out (val None without either). With
    ``skip_bad_images``, unreadable images are logged and left out."""
    assert 0 <= val_split < 1 and image_size >= 1, "checked by src.config"
    root = Path(root)
    layout = (root / "train").is_dir() or (root / "val").is_dir()
    train_dir, val_dir = (root / "train", root / "val") if layout else (root, None)
    train, skipped = _read_split(train_dir, image_size, skip_bad_images)
    has_val_dir = val_dir is not None and val_dir.is_dir()
    if has_val_dir and val_split:
        raise DatasetError(f"{val_dir} exists: pass val_split 0, or remove it to use val_split")
    val = None
    if (has_val_dir or val_split) and train.num_classes < 2:
        raise DatasetError(
            f"{train_dir} has {train.num_classes} classes; a validation split needs >= 2 class "
            f"sub-folders (label = sorted folder name)"
        )
    if val_split:
        train, val = _hold_out(train, val_split)
    elif has_val_dir:
        val, bad = _read_split(val_dir, image_size, skip_bad_images)
        skipped += bad
        if val.classes != train.classes:
            raise DatasetError(f"{val_dir} has classes {val.classes}, not those of {train_dir}")
    if skipped:
        logger.warning(
            "skipped %d unreadable images (--skip-bad-images), e.g. %s", len(skipped), skipped[0]
        )
    return Splits(train, train, val)
