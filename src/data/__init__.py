"""Data layer: readers (CIFAR, STL-10, image folders), augmentations and MindSpore pipelines."""

from .datasets import DATASETS, create_augmentation, get_dataset, load_data
from .loaders import create_eval_dataset, create_linear_dataset, create_train_dataset, epoch_order
from .splits import DatasetError, ImageSplit, Splits

__all__ = [
    "DATASETS",
    "DatasetError",
    "ImageSplit",
    "Splits",
    "create_augmentation",
    "create_eval_dataset",
    "create_linear_dataset",
    "create_train_dataset",
    "epoch_order",
    "get_dataset",
    "load_data",
]
