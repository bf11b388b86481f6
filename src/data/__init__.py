"""CIFAR data layer: readers, transforms and MindSpore pipelines."""

from .cifar import (
    DATASETS,
    ChecksumError,
    CifarSplit,
    DatasetError,
    DatasetNotFoundError,
    DatasetSpec,
    DownloadError,
    UnsafePickleError,
    download_cifar,
    get_dataset_spec,
    load_cifar,
)
from .loaders import create_eval_dataset, create_train_dataset, epoch_order
from .transforms import test_transforms, train_transforms

__all__ = [
    "DATASETS",
    "ChecksumError",
    "CifarSplit",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DownloadError",
    "UnsafePickleError",
    "create_eval_dataset",
    "create_train_dataset",
    "download_cifar",
    "epoch_order",
    "get_dataset_spec",
    "load_cifar",
    "test_transforms",
    "train_transforms",
]
