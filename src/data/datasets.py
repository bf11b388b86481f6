"""The registry of ``--dataset`` names: how each is read into :class:`Splits`, its default image
size and its normalisation. CIFAR keeps the demo's statistics; STL-10 and folders of images use
ImageNet's, the usual choice for natural photographs without statistics of their own."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..utils.progress import logger
from .cifar import DATASETS, CifarSplit, DatasetError, Splits, load_cifar
from .folder import load_folder_splits
from .stl10 import load_stl10_splits

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VAL_SPLIT_SEED = 0  # --val-split holds out the same images in every run and in infer.py


@dataclass(frozen=True)
class DatasetInfo:
    """What a pipeline needs to know of a dataset: default ``--image-size`` and normalisation."""

    image_size: int
    mean: tuple[float, float, float]  # per RGB channel, on the [0, 1] scale
    std: tuple[float, float, float]


DATASET_INFO: dict[str, DatasetInfo] = {
    **{name: DatasetInfo(32, spec.mean, spec.std) for name, spec in DATASETS.items()},
    "stl10": DatasetInfo(96, IMAGENET_MEAN, IMAGENET_STD),
    "folder": DatasetInfo(32, IMAGENET_MEAN, IMAGENET_STD),
}


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a ``--dataset`` name; DatasetError for an unknown one."""
    if name not in DATASET_INFO:
        raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_INFO)}")
    return DATASET_INFO[name]


def _cut(split: CifarSplit | None, size: int) -> CifarSplit | None:
    return split if split is None or not size else split.subset(size)


def load_data(
    name: str,
    data_dir: str | os.PathLike,
    train_subset=0,
    test_subset=0,
    download=False,
    image_size=0,
    val_split=0.0,
    skip_bad_images=False,
) -> Splits:
    """(pretrain, bank, queries) of a dataset. CIFAR: train, train, test; STL-10: unlabeled,
    train, test; a folder: train, train, val (None without ``val/`` or ``val_split``), its
    images at ``image_size`` (0: the default). ``train_subset`` / ``test_subset`` > 0 keep the
    first N images of pretrain and bank / of queries."""
    if train_subset < 0 or test_subset < 0:
        raise DatasetError(f"subsets must be >= 0 (0 = all), got {train_subset}, {test_subset}")
    info = dataset_info(name)
    if name == "stl10":
        splits = load_stl10_splits(data_dir, download)
    elif name == "folder":
        size = image_size or info.image_size
        train, val, skipped = load_folder_splits(
            data_dir, size, val_split, VAL_SPLIT_SEED, skip_bad_images
        )
        if skipped:
            logger.warning(
                "skipped %d unreadable images (--skip-bad-images), e.g. %s", len(skipped),
                skipped[0],
            )  # fmt: skip
        splits = Splits(train, train, val)
    else:
        train = load_cifar(name, data_dir, "train", download=download)
        splits = Splits(train, train, load_cifar(name, data_dir, "test"))
    pretrain = _cut(splits.pretrain, train_subset)
    bank = pretrain if splits.bank is splits.pretrain else _cut(splits.bank, train_subset)
    return Splits(pretrain, bank, _cut(splits.queries, test_subset))
