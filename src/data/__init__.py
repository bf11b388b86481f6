"""CIFAR data layer: readers, transforms and MindSpore pipelines."""

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
from .loaders import create_eval_dataset, create_train_dataset, epoch_order
from .transforms import test_transforms, train_transforms

__all__ = [
    "DATASETS",
    "CifarSplit",
    "DatasetError",
    "DatasetSpec",
    "create_eval_dataset",
    "create_train_dataset",
    "download_cifar",
    "epoch_order",
    "get_dataset_spec",
    "load_cifar",
    "load_splits",
    "test_transforms",
    "train_transforms",
]
