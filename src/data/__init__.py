"""Data layer: CIFAR and STL-10 readers, transforms and MindSpore pipelines."""

from .cifar import (
    DATASETS,
    CifarSplit,
    DatasetError,
    DatasetSpec,
    download_cifar,
    get_dataset_spec,
    load_cifar,
    load_splits,
)
from .folder import load_folder_splits
from .loaders import create_eval_dataset, create_train_dataset, epoch_order
from .stl10 import Stl10Splits, download_stl10, load_stl10, load_stl10_splits
from .transforms import test_transforms, train_transforms

__all__ = [
    "DATASETS",
    "CifarSplit",
    "DatasetError",
    "DatasetSpec",
    "Stl10Splits",
    "create_eval_dataset",
    "create_train_dataset",
    "download_cifar",
    "download_stl10",
    "epoch_order",
    "get_dataset_spec",
    "load_cifar",
    "load_folder_splits",
    "load_splits",
    "load_stl10",
    "load_stl10_splits",
    "test_transforms",
    "train_transforms",
]
