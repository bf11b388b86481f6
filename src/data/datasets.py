"""The registry of ``--dataset`` names: each one's reader, default image size and normalisation.
CIFAR keeps the PyTorch MoCo demo's statistics; STL-10 and folders of images use ImageNet's,
the usual choice for natural photographs without statistics of their own."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Callable

from . import cifar, stl10
from .folder import load_folder_splits
from .splits import DatasetError, ImageSplit, Splits
from .transforms import BLUR_MIN_SIZE, CROP_SCALE, CROP_SCALE_V2, Augmentation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: ``read(root, download=, image_size=, val_split=, skip_bad_images=)`` returns
    its Splits (a reader ignores the options it has no use for); its default ``--image-size``
    and normalisation, per RGB channel on the [0, 1] scale."""

    read: Callable[..., Splits]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


DATASETS: dict[str, DatasetInfo] = {
    # The demo's CIFAR-10 std is not the true pixel std; kept for comparable runs.
    "cifar10": DatasetInfo(
        partial(cifar.load_cifar_splits, "cifar10"),
        cifar.IMAGE_SIZE,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
    ),
    "cifar100": DatasetInfo(
        partial(cifar.load_cifar_splits, "cifar100"),
        cifar.IMAGE_SIZE,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
    "stl10": DatasetInfo(stl10.load_stl10_splits, stl10.IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD),
    "folder": DatasetInfo(load_folder_splits, 32, IMAGENET_MEAN, IMAGENET_STD),
}


def get_dataset(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a ``--dataset`` name; DatasetError for an unknown one."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    return DATASETS[name]


def create_augmentation(dataset: str, image_size: int, aug_plus: bool) -> Augmentation:
    """The train views of ``dataset`` at ``image_size``: MoCo v1's, or v2's with ``aug_plus``
    (crops of 20% of the image or more, and blur from ``BLUR_MIN_SIZE`` pixels up)."""
    info = get_dataset(dataset)
    crop_scale = CROP_SCALE_V2 if aug_plus else CROP_SCALE
    blur = aug_plus and image_size >= BLUR_MIN_SIZE
    return Augmentation(info.mean, info.std, image_size, crop_scale, blur)


def _cut(split: ImageSplit | None, size: int) -> ImageSplit | None:
    return split if split is None or not size else split.subset(size)


def load_data(
    name: str,
    data_dir: str | os.PathLike,
    *,
    download=False,
    image_size=0,
    val_split=0.0,
    skip_bad_images=False,
    train_subset=0,
    test_subset=0,
) -> Splits:
    """The :class:`Splits` of dataset ``name`` in ``data_dir``, images of a folder at
    ``image_size`` (0: the default). ``train_subset`` / ``test_subset`` > 0 keep the first N
    images of pretrain and bank / of queries (0: all)."""
    assert train_subset >= 0 and test_subset >= 0, "checked by src.config"
    info = get_dataset(name)
    splits = info.read(
        data_dir,
        download=download,
        image_size=image_size or info.image_size,
        val_split=val_split,
        skip_bad_images=skip_bad_images,
    )
    pretrain = _cut(splits.pretrain, train_subset)
    bank = pretrain if splits.bank is splits.pretrain else _cut(splits.bank, train_subset)
    return Splits(pretrain, bank, _cut(splits.queries, test_subset))
