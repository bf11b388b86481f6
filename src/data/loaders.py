"""``mindspore.dataset`` pipelines for MoCo pre-training and evaluation. The train pipeline is a
pure function of ``(seed, epoch)``: NumPy draws the order and every view's decisions, MindSpore's
global dataset seed (derived from the same pair) the colour jitter, its only random op."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mindspore.dataset as ds
import numpy as np
from mindspore.dataset.transforms import Duplicate

from . import transforms
from .splits import ImageSplit

# std::mt19937's default seed: MindSpore takes it for "no seed set" and then seeds its random
# ops nondeterministically, so it must never be used as a real seed.
_MINDSPORE_UNSET_SEED = 5489
_AUGMENTATION_STREAM = 1  # distinguishes the augmentation seed from the order seed
_DECISION_STREAM = 2  # and the views' decisions
_BLUR_STREAM = 3  # and their blur (its own stream: the other draws stay those without blur)
_SOLARIZE_STREAM = 4  # and MoCo v3's solarization (likewise)


def epoch_order(num_images: int, seed: int, epoch: int) -> np.ndarray:
    """The image order of one training epoch, a pure function of the arguments."""
    return np.random.default_rng([seed, epoch]).permutation(num_images)


def view_decisions(
    num_views: int,
    height: int,
    width: int,
    seed: int,
    epoch: int,
    crop_scale: Sequence[float] = transforms.CROP_SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop boxes (num_views, 4) and decisions (num_views, 3) of one epoch's views (two per
    image, in the epoch's order), a pure function of the arguments."""
    rng = np.random.default_rng([seed, epoch, _DECISION_STREAM])
    boxes = transforms.sample_crop_boxes(rng, num_views, height, width, crop_scale)
    return boxes, transforms.sample_view_decisions(rng, num_views)


def view_blur(
    num_views: int,
    seed: int,
    epoch: int,
    prob: Sequence[float] = (transforms.BLUR_PROB, transforms.BLUR_PROB),
) -> np.ndarray:
    """Blur sigmas (0: none) of one epoch's views, float32 (num_views,), with p ``prob`` of view 1
    and 2 (rows 2i, 2i + 1), a pure function."""
    rng = np.random.default_rng([seed, epoch, _BLUR_STREAM])
    return transforms.sample_blur(rng, num_views, prob)


def view_solarize(num_views: int, seed: int, epoch: int, prob: Sequence[float]) -> np.ndarray:
    """Solarization decisions of one epoch's views, bool (num_views,), with p ``prob`` of view 1
    and 2 (rows 2i, 2i + 1), a pure function."""
    rng = np.random.default_rng([seed, epoch, _SOLARIZE_STREAM])
    return transforms.sample_solarize(rng, num_views, prob)


def augmentation_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """MindSpore's dataset seed of one epoch (and device): a uint32, never "unset"."""
    sequence = np.random.SeedSequence([seed, epoch, _AUGMENTATION_STREAM] + [rank] * (rank > 0))
    derived = int(sequence.generate_state(1, dtype=np.uint32)[0])
    return derived + 1 if derived == _MINDSPORE_UNSET_SEED else derived


class _Source:
    """Random access to ``length`` rows for GeneratorDataset: row ``i`` is ``row(i)``."""

    def __init__(self, length: int, row: Callable[[int], tuple]):
        self._length, self._row = length, row

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple:
        return self._row(index)


def _dataset(length: int, row: Callable[[int], tuple], columns: Sequence[str]) -> ds.Dataset:
    # In-process and unshuffled: the order is decided by the source alone.
    return ds.GeneratorDataset(
        _Source(length, row),
        column_names=list(columns),
        shuffle=False,
        num_parallel_workers=1,
        python_multiprocessing=False,
    )


def create_train_dataset(
    split: ImageSplit,
    augmentation: transforms.Augmentation,
    batch_size: int,
    seed: int,
    epoch: int,
    workers: int = 1,
    rank: int = 0,
    world: int = 1,
) -> ds.Dataset:
    """One epoch: ``len(split) // batch_size`` batches of ``im_1``, ``im_2``, float32 (B, 3, S, S);
    on ``world`` devices this one's B / world rows of each (the same views as on one device). Sets
    MindSpore's global dataset seed, read when the iterator is created: iterate before anything
    else sets one. Deterministic for a fixed ``workers``."""
    assert 0 < batch_size <= len(split) and batch_size % world == 0, "checked by src.config"
    mean, std, blur = augmentation.mean, augmentation.std, augmentation.blur
    solarizes = any(augmentation.solarize_prob)  # MoCo v3's second view
    images, order = split.images, epoch_order(len(split), seed, epoch)
    num_views = 2 * len(order)
    boxes, decisions = view_decisions(
        num_views, *images.shape[1:3], seed, epoch, augmentation.crop_scale
    )
    sigma = np.zeros(num_views, np.float32)
    if blur:
        sigma = view_blur(num_views, seed, epoch, augmentation.blur_prob)
    solarized = np.zeros(num_views, bool)
    if solarizes:
        solarized = view_solarize(num_views, seed, epoch, augmentation.solarize_prob)
    # This device's rows rank * n to (rank + 1) * n of every full global batch of the order.
    n, steps = batch_size // world, len(order) // batch_size
    positions = np.arange(steps * batch_size).reshape(steps, world, n)[:, rank].reshape(-1)
    ds.config.set_seed(augmentation_seed(seed, epoch, rank))

    def row(i: int) -> tuple:  # view i % 2 of the device's image i // 2, cropped
        view = 2 * positions[i // 2] + i % 2
        image = transforms.crop(images[order[view // 2]], boxes[view])
        return image, decisions[view], sigma[view], solarized[view]

    def finish(plain, jittered, flags, sigmas, solar):  # rows: view 1, view 2, view 1, ...
        sigmas, solar = sigmas if blur else None, solar if solarizes else None
        views = transforms.finish_views(plain, jittered, flags, mean, std, sigmas, solar)
        return np.ascontiguousarray(views[0::2]), np.ascontiguousarray(views[1::2])

    # Both views of an image are consecutive rows, so the jitter draws different numbers for each.
    # It runs on every view (a copy keeps the plain one): its draws do not depend on the decisions.
    size, jitter = augmentation.image_size, [transforms.colour_jitter(augmentation.saturation)]
    columns = ["image", "jittered", "decisions", "sigma", "solarize"]
    return (
        _dataset(2 * len(positions), row, ["image", "decisions", "sigma", "solarize"])
        .map([transforms.resize(size)], input_columns=["image"], num_parallel_workers=workers)
        .map([Duplicate()], input_columns=["image"], output_columns=["image", "jittered"])
        .map(jitter, input_columns=["jittered"], num_parallel_workers=workers)
        .batch(2 * batch_size // world, drop_remainder=True)
        .map(finish, input_columns=columns, output_columns=["im_1", "im_2"])
    )


def create_eval_dataset(
    split: ImageSplit,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    workers=1,
    image_size: int | None = None,
) -> ds.Dataset:
    """Every image once, in order: ``image`` float32 (B, 3, S, S), ``label`` int32, the last batch
    maybe smaller; resized to S = ``image_size`` if given."""
    assert batch_size > 0, "checked by src.config"
    images, labels = split.images, split.labels
    ops = transforms.eval_transforms(mean, std)
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
        ops = [transforms.resize(image_size), *ops]
    rows = _dataset(len(images), lambda i: (images[i], np.int32(labels[i])), ["image", "label"])
    return rows.map(ops, input_columns=["image"], num_parallel_workers=workers).batch(batch_size)


def create_linear_dataset(
    split: ImageSplit, mean, std, batch_size: int, seed: int, epoch: int, image_size: int, workers=1
) -> ds.Dataset:
    """One epoch in a random order, each image a RandomResizedCrop (scale 0.08-1) to
    ``image_size`` flipped with p 0.5: ``image`` float32 (B, 3, S, S), ``label`` int32, the last
    batch maybe smaller. Order and crops are a pure function of ``(seed, epoch)``."""
    rng = np.random.default_rng([seed, epoch])
    images, order = split.images, rng.permutation(len(split))
    boxes = transforms.sample_crop_boxes(rng, len(order), *images.shape[1:3])
    decisions = np.zeros((len(order), 3), np.uint8)
    decisions[:, transforms.FLIP] = rng.random(len(order)) < transforms.FLIP_PROB

    def row(i):
        label = np.int32(split.labels[order[i]])
        return transforms.crop(images[order[i]], boxes[i]), decisions[i], label

    def finish(crops, flags, labels):  # flip and normalise: finish_views without the jitter
        return transforms.finish_views(crops, crops, flags, mean, std), labels

    columns, resize = ["image", "decisions", "label"], [transforms.resize(image_size)]
    return (
        _dataset(len(order), row, columns)
        .map(resize, input_columns=["image"], num_parallel_workers=workers)
        .batch(batch_size)
        .map(finish, input_columns=columns, output_columns=["image", "label"])
    )
