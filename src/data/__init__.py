"""Data layer: readers (CIFAR, STL-10, image folders), transforms and MindSpore pipelines."""

from .cifar import (
    DATASETS,
    CifarSplit,
    DatasetError,
    DatasetSpec,
    Splits,
    download_cifar,
    get_dataset_spec,
    load_cifar,
)
from .datasets import DATASET_INFO, DatasetInfo, dataset_info, load_data
from .folder import load_folder_splits
from .loaders import create_eval_dataset, create_train_dataset, epoch_order
from .stl10 import download_stl10, load_stl10, load_stl10_splits
from .transforms import test_transforms, train_transforms

__all__ = [
    "DATASETS",
    "DATASET_INFO",
    "CifarSplit",
    "DatasetError",
    "DatasetInfo",
    "DatasetSpec",
    "Splits",
    "create_eval_dataset",
    "create_train_dataset",
    "dataset_info",
    "download_cifar",
    "download_stl10",
    "epoch_order",
    "get_dataset_spec",
    "load_cifar",
    "load_data",
    "load_folder_splits",
    "load_stl10",
    "load_stl10_splits",
    "test_transforms",
    "train_transforms",
]
