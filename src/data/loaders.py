"""``mindspore.dataset`` pipelines for MoCo pre-training and evaluation.

The train pipeline is rebuilt every epoch and is a pure function of ``(seed, epoch)``: numpy
decides the image order, MindSpore's global dataset seed (derived from the same pair) the
augmentations.
"""

from __future__ import annotations

from collections.abc import Sequence

import mindspore.dataset as ds
import numpy as np

from .cifar import CifarSplit, DatasetError
from .transforms import test_transforms, train_transforms

TRAIN_COLUMNS = ("im_1", "im_2")
EVAL_COLUMNS = ("image", "label")
# std::mt19937's default seed: MindSpore takes it for "no seed set" and then seeds its random
# ops nondeterministically, so it must never be used as a real seed.
_MINDSPORE_UNSET_SEED = 5489
_AUGMENTATION_STREAM = 1  # distinguishes the augmentation seed from the order seed


def epoch_order(num_images: int, seed: int, epoch: int) -> np.ndarray:
    """The image order of one training epoch: a permutation, a pure function of the arguments."""
    return np.random.default_rng([seed, epoch]).permutation(num_images)


def augmentation_seed(seed: int, epoch: int) -> int:
    """MindSpore's dataset seed of one epoch: a uint32, other for every epoch, never "unset"."""
    sequence = np.random.SeedSequence([seed, epoch, _AUGMENTATION_STREAM])
    derived = int(sequence.generate_state(1, dtype=np.uint32)[0])
    return derived + 1 if derived == _MINDSPORE_UNSET_SEED else derived


class _RepeatedImages:
    """Random-access source yielding ``images[order[k]]`` twice in a row for each k."""

    def __init__(self, images: np.ndarray, order: np.ndarray):
        self._images = images
        self._order = order

    def __len__(self) -> int:
        return 2 * len(self._order)

    def __getitem__(self, index: int) -> tuple[np.ndarray]:
        return (self._images[self._order[index // 2]],)


class _LabelledImages:
    """Random-access source yielding ``(image, label)`` in split order."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self._images = images
        self._labels = labels

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        return self._images[index], np.int32(self._labels[index])


def _split_interleaved_views(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Splits a batch of rows (view 1, view 2, view 1, ...) into the two views."""
    return np.ascontiguousarray(rows[0::2]), np.ascontiguousarray(rows[1::2])


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_batch_size(batch_size: int) -> None:
    if not _is_int(batch_size) or batch_size < 1:
        raise DatasetError(f"batch_size must be a positive integer, got {batch_size!r}")


def _source(source: object, column_names: Sequence[str]) -> ds.GeneratorDataset:
    # In-process and unshuffled: the order is decided by the source alone.
    return ds.GeneratorDataset(
        source,
        column_names=list(column_names),
        shuffle=False,
        num_parallel_workers=1,
        python_multiprocessing=False,
    )


def two_view_dataset(
    images: np.ndarray,
    order: np.ndarray,
    view_transforms: list,
    batch_size: int,
    workers: int = 1,
) -> ds.Dataset:
    """Columns ``im_1``, ``im_2``: row b of batch i is ``images[order[i * batch_size + b]]``.

    Each view goes through ``view_transforms`` independently; the incomplete last batch is
    dropped. ``workers`` is the ``num_parallel_workers`` of the transform map.
    """
    # MindSpore seeds every random op from the global seed when the iterator is built, so two
    # maps of the same ops would draw the same parameters and give two equal views. Instead each
    # image is emitted twice in a row and ONE map transforms the stream: the copies consume
    # consecutive random draws. A batch of 2 * batch_size rows is then split into even/odd rows.
    dataset = _source(_RepeatedImages(images, order), ["image"])
    dataset = dataset.map(view_transforms, input_columns=["image"], num_parallel_workers=workers)
    dataset = dataset.batch(2 * batch_size, drop_remainder=True)
    return dataset.map(
        _split_interleaved_views, input_columns=["image"], output_columns=list(TRAIN_COLUMNS)
    )


def create_train_dataset(
    split: CifarSplit,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    seed: int,
    epoch: int,
    workers: int = 1,
) -> ds.Dataset:
    """One epoch of MoCo training batches: columns ``im_1``, ``im_2``, float32 (B, 3, 32, 32).

    A pure function of ``(seed, epoch)``, with ``len(split) // batch_size`` batches. Sets
    MindSpore's global dataset seed (reseeding ``random`` and ``numpy.random`` too), read when
    the iterator is created: iterate the dataset once, before anything else sets a seed.
    Determinism is checked with ``workers=1``; other values give other augmentations.
    """
    _check_batch_size(batch_size)
    for value, what in ((seed, "seed"), (epoch, "epoch")):
        if not _is_int(value) or value < 0:
            raise DatasetError(f"{what} must be a non-negative integer, got {value!r}")
    if batch_size > len(split):
        raise DatasetError(
            f"batch_size {batch_size} is larger than the training split "
            f"({len(split)} images): use a batch size <= {len(split)}"
        )
    order = epoch_order(len(split), seed, epoch)
    ds.config.set_seed(augmentation_seed(seed, epoch))
    return two_view_dataset(split.images, order, train_transforms(mean, std), batch_size, workers)


def create_eval_dataset(
    split: CifarSplit,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    workers: int = 1,
) -> ds.Dataset:
    """Every image of ``split`` once, in order: ``image`` float32 (B, 3, 32, 32), ``label`` int32.

    The last batch may be smaller. Raises DatasetError if ``batch_size`` is not positive.
    """
    _check_batch_size(batch_size)
    dataset = _source(_LabelledImages(split.images, split.labels), EVAL_COLUMNS)
    dataset = dataset.map(
        test_transforms(mean, std), input_columns=["image"], num_parallel_workers=workers
    )
    return dataset.batch(batch_size, drop_remainder=False)
