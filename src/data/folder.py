"""Reader of a folder of images: an ImageFolder (label = rank of the sorted class sub-folder name)
or, for training only, a flat folder (labels -1). Pillow decodes (as fast as ``vision.Decode`` on
CPU, 3x on large JPEGs); images are resized on the shorter side and centre-cropped, so as not to
distort their aspect ratio."""

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
VAL_SPLIT_SEED = 0  # val_split holds out the same images in every run and in infer.py


def _visible(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if not path.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]


def decode_image(path: Path, image_size: int, skip_bad=False) -> np.ndarray | None:
    """uint8 (S, S, 3) RGB; None for a file Pillow cannot decode if ``skip_bad``."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale
            rgb = image.convert("RGB")
    except Exception as error:  # Pillow raises many types on corrupt input
        if skip_bad:
            return None
        problem = f"{path} is not a readable image ({type(error).__name__}: {error})"
        raise DatasetError(f"{problem}: fix or delete it") from None
    return np.asarray(ImageOps.fit(rgb, (image_size, image_size), Image.BICUBIC))


def _read_split(folder: Path, image_size: int, skip_bad: bool) -> tuple[ImageSplit, list[Path]]:
    """An ImageFolder or a flat folder, decoded in threads (Pillow releases the GIL); returns the
    split and the files skipped as unreadable."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder: pass --data-dir PATH of images")
    classes = [path.name for path in _visible(folder) if path.is_dir()]
    files, labels = [], []
    for label, name in enumerate(classes):
        found = _image_files(folder / name)
        if not found:
            raise DatasetError(f"class folder {folder / name} holds no images: fill or remove it")
        files += found
        labels += [label] * len(found)
    if not classes:  # a flat folder
        files = _image_files(folder)
        labels = [-1] * len(files)
        if not files:
            raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda path: decode_image(path, image_size, skip_bad), files))
    kept = [i for i, array in enumerate(arrays) if array is not None]
    if not kept:
        raise DatasetError(f"no image of {folder} is readable")
    skipped = [files[i] for i, array in enumerate(arrays) if array is None]
    images = np.stack([arrays[i] for i in kept])
    return ImageSplit(images, np.array(labels, np.int64)[kept], classes), skipped


def load_folder_splits(
    root: str | os.PathLike, image_size=32, val_split=0.0, skip_bad_images=False, **_
) -> Splits:
    """(train, train, val) of ``root``: its ``train/`` and ``val/``, or ``root`` with ``val_split``
    of each class held out (val None without either), unreadable images left out if asked."""
    assert 0 <= val_split < 1 and image_size >= 1, "checked by src.config"
    root = Path(root)
    layout = (root / "train").is_dir() or (root / "val").is_dir()
    train_dir, val_dir = (root / "train", root / "val") if layout else (root, None)
    train, skipped = _read_split(train_dir, image_size, skip_bad_images)
    has_val_dir = val_dir is not None and val_dir.is_dir()
    if has_val_dir and val_split:
        raise DatasetError(f"{val_dir} exists: pass val_split 0, or remove it to use val_split")
    if (has_val_dir or val_split) and train.num_classes < 2:
        raise DatasetError(
            f"{train_dir} has {train.num_classes} classes; a validation split needs >= 2 class "
            f"sub-folders (label = sorted folder name)"
        )
    val = None
    if val_split:  # round(val_split * n) random images of each class to val
        rng = np.random.default_rng(VAL_SPLIT_SEED)
        in_val = np.zeros(len(train), bool)
        for label in range(train.num_classes):
            members = rng.permutation(np.flatnonzero(train.labels == label))
            in_val[members[: round(val_split * len(members))]] = True
        if in_val.all() or not in_val.any():
            raise DatasetError(f"val_split {val_split} of {len(train)} images leaves a split empty")
        images, labels, classes = train.images, train.labels, train.classes
        train, val = (ImageSplit(images[m], labels[m], classes) for m in (~in_val, in_val))
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
