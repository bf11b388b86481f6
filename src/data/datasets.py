"""The registry of ``--dataset`` names. CIFAR keeps the PyTorch MoCo demo's normalisation; STL-10
and folders of images use ImageNet's, the usual choice for photographs without statistics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Callable

from . import cifar, stl10
from .folder import load_folder_splits
from .splits import DatasetError, ImageSplit, Splits
from .transforms import (
    BLUR_MIN_SIZE,
    BLUR_PROB_V3,
    CROP_SCALE,
    CROP_SCALE_V2,
    SATURATION_V3,
    SOLARIZE_PROB_V3,
    Augmentation,
)

IMAGENET = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # mean, std


@dataclass(frozen=True)
class DatasetInfo:
    """``read(root, download=, image_size=, val_split=, skip_bad_images=)`` gives the Splits (a
    reader ignores what it has no use for), the default ``--image-size`` and the normalisation."""

    read: Callable[..., Splits]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


DATASETS: dict[str, DatasetInfo] = {
    name: DatasetInfo(partial(cifar.load_cifar_splits, name), cifar.IMAGE_SIZE, mean, std)
    for name, mean, std in [
        # The demo's CIFAR-10 std is not the true pixel std; kept for comparable runs.
        ("cifar10", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        ("cifar100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    ]
}
DATASETS["stl10"] = DatasetInfo(stl10.load_stl10_splits, stl10.IMAGE_SIZE, *IMAGENET)
DATASETS["folder"] = DatasetInfo(load_folder_splits, 32, *IMAGENET)


def get_dataset(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    return DATASETS[name]


def create_augmentation(
    dataset: str, image_size: int, aug_plus: bool, method: str = "v1"
) -> Augmentation:
    """MoCo v1's train views, or v2's with ``aug_plus``: crops of 20% or more, blur from
    ``BLUR_MIN_SIZE`` pixels up; ``method`` v3: moco-v3's asymmetric pair (BYOL's), saturation
    0.2, blur p 1 / 0.1 (from ``BLUR_MIN_SIZE`` up), solarization p 0 / 0.2."""
    info = get_dataset(dataset)
    if method == "v3":
        assert not aug_plus, "checked by src.config"
        blur = image_size >= BLUR_MIN_SIZE
        v3 = dict(blur_prob=BLUR_PROB_V3, saturation=SATURATION_V3, solarize_prob=SOLARIZE_PROB_V3)
        return Augmentation(info.mean, info.std, image_size, CROP_SCALE, blur, **v3)
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
    """The Splits of ``name`` in ``data_dir``, a folder's images at ``image_size`` (0: default);
    ``train_subset`` / ``test_subset`` > 0 keep the first N of pretrain and bank / queries."""
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
