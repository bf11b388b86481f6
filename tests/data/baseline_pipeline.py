"""The old train pipeline, kept as the baseline that ``AUGMENTATION_PIPELINE=baseline`` runs
tests/data/test_augmentations.py on: its MindSpore random ops draw the same numbers in lockstep
(flip, jitter and grayscale decisions coupled), so the distribution tests fail on it."""

import mindspore.dataset as ds
import mindspore.dataset.transforms as transforms
import mindspore.dataset.vision as vision
import numpy as np

from src.data import ImageSplit, epoch_order
from src.data.loaders import augmentation_seed
from src.data.transforms import (
    BRIGHTNESS,
    COLOR_JITTER_PROB,
    CONTRAST,
    CROP_RATIO,
    CROP_SCALE,
    CROP_SIZE,
    FLIP_PROB,
    GRAYSCALE_PROB,
    HUE,
    SATURATION,
    Augmentation,
    eval_transforms,
)


def baseline_train_transforms(augmentation: Augmentation) -> list:
    """The old per-view ops, one MindSpore random op per step."""
    crop = vision.RandomResizedCrop(
        CROP_SIZE, scale=CROP_SCALE, ratio=CROP_RATIO, interpolation=vision.Inter.BILINEAR
    )
    jitter = vision.RandomColorAdjust(BRIGHTNESS, CONTRAST, SATURATION, HUE)
    grey = [
        vision.ConvertColor(vision.ConvertMode.COLOR_RGB2GRAY),
        vision.ConvertColor(vision.ConvertMode.COLOR_GRAY2RGB),
    ]
    return [
        crop,
        vision.RandomHorizontalFlip(FLIP_PROB),
        transforms.RandomApply([jitter], prob=COLOR_JITTER_PROB),
        transforms.RandomApply(grey, prob=GRAYSCALE_PROB),
        *eval_transforms(augmentation.mean, augmentation.std),
    ]


class _EachImageTwice:
    """Row ``i``: image ``order[i // 2]``, so both views of an image are consecutive rows."""

    def __init__(self, images: np.ndarray, order: np.ndarray):
        self.images, self.order = images, order

    def __len__(self) -> int:
        return 2 * len(self.order)

    def __getitem__(self, index: int) -> tuple:
        return (self.images[self.order[index // 2]],)


def create_baseline_train_dataset(
    split: ImageSplit,
    augmentation: Augmentation,
    batch_size: int,
    seed: int,
    epoch: int,
    workers: int = 1,
) -> ds.Dataset:
    """``create_train_dataset`` as it was: same order and seed, the old augmentation. One map
    transforms the doubled stream (two maps would draw equal views); even rows are view 1."""
    order = epoch_order(len(split), seed, epoch)
    ds.config.set_seed(augmentation_seed(seed, epoch))
    source = _EachImageTwice(split.images, order)
    dataset = ds.GeneratorDataset(
        source, ["image"], shuffle=False, num_parallel_workers=1, python_multiprocessing=False
    )
    dataset = dataset.map(
        baseline_train_transforms(augmentation),
        input_columns=["image"],
        num_parallel_workers=workers,
    )
    dataset = dataset.batch(2 * batch_size, drop_remainder=True)
    return dataset.map(
        lambda rows: (np.ascontiguousarray(rows[0::2]), np.ascontiguousarray(rows[1::2])),
        input_columns=["image"],
        output_columns=["im_1", "im_2"],
    )
