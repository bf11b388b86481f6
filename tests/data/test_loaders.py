"""Tests of src.data.loaders: two-view train batches, their determinism, eval batches."""

import numpy as np
import pytest

from src.data import (
    CifarSplit,
    DatasetError,
    create_eval_dataset,
    create_train_dataset,
    epoch_order,
    get_dataset_spec,
    load_cifar,
    test_transforms,
)
from src.data.loaders import augmentation_seed, two_view_dataset, view_decisions
from src.data.transforms import CROP_SCALE_V2, JITTER, crop, finish_views, resize

CIFAR10 = get_dataset_spec("cifar10")
MEAN = np.array(CIFAR10.mean, dtype=np.float32)
STD = np.array(CIFAR10.std, dtype=np.float32)


def batches(dataset, columns):
    return [
        tuple(row[c] for c in columns)
        for row in dataset.create_dict_iterator(num_epochs=1, output_numpy=True)
    ]


def train_batches(split: CifarSplit, seed: int, epoch: int, batch_size: int = 16) -> np.ndarray:
    dataset = create_train_dataset(split, CIFAR10.mean, CIFAR10.std, batch_size, seed, epoch)
    return np.stack([np.stack(pair) for pair in batches(dataset, ("im_1", "im_2"))])


def tiny_split(n: int = 48, seed: int = 0) -> CifarSplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.int32)
    return CifarSplit(images=images, labels=labels, classes=[str(i) for i in range(10)])


def test_train_batches_shape_count_and_distinct_views():
    split = tiny_split(48)
    dataset = create_train_dataset(split, CIFAR10.mean, CIFAR10.std, batch_size=20, seed=0, epoch=0)
    assert dataset.get_dataset_size() == 2
    out = batches(dataset, ("im_1", "im_2"))
    assert len(out) == 48 // 20
    for im_1, im_2 in out:
        assert im_1.shape == im_2.shape == (20, 3, 32, 32)
        assert im_1.dtype == im_2.dtype == np.float32
        assert all(not np.array_equal(a, b) for a, b in zip(im_1, im_2, strict=True))


def test_train_batches_are_a_pure_function_of_seed_and_epoch():
    split = tiny_split(48)
    first = train_batches(split, 3, 1)
    later_dataset = create_train_dataset(split, CIFAR10.mean, CIFAR10.std, 16, 3, 1)
    create_eval_dataset(split, CIFAR10.mean, CIFAR10.std, 16)  # sets no seed: harmless
    again = np.stack([np.stack(pair) for pair in batches(later_dataset, ("im_1", "im_2"))])
    assert np.array_equal(first, again)
    assert not np.array_equal(first, train_batches(split, 3, 2))
    assert not np.array_equal(first, train_batches(split, 4, 1))


def test_views_are_the_drawn_crops_flips_and_greys():
    split = tiny_split(48)
    dataset = create_train_dataset(split, CIFAR10.mean, CIFAR10.std, 48, seed=2, epoch=3)
    ((im_1, im_2),) = batches(dataset, ("im_1", "im_2"))
    views = np.stack([im_1, im_2], axis=1).reshape(96, 3, 32, 32)  # view i: image i // 2
    order = epoch_order(48, 2, 3)
    boxes, decisions = view_decisions(96, 32, 32, 2, 3)
    plain = np.stack([resize()(crop(split.images[order[i // 2]], boxes[i])) for i in range(96)])
    unjittered = decisions[:, JITTER] == 0
    expected = finish_views(plain, plain, decisions * unjittered[:, None], MEAN, STD)
    assert 0 < unjittered.sum() < 96
    np.testing.assert_array_equal(views[unjittered], expected[unjittered])
    jittered = zip(views[~unjittered], expected[~unjittered], strict=True)
    assert all(not np.array_equal(view, plain_view) for view, plain_view in jittered)


def test_views_pair_up_with_the_epoch_order():
    split = tiny_split(30)
    order = epoch_order(30, seed=5, epoch=2)
    assert sorted(order) == list(range(30)) and np.array_equal(order, epoch_order(30, 5, 2))
    dataset = two_view_dataset(split.images, order, test_transforms(CIFAR10.mean, CIFAR10.std), 8)
    out = batches(dataset, ("im_1", "im_2"))
    im_1, im_2 = np.concatenate([a for a, _ in out]), np.concatenate([b for _, b in out])
    assert len(im_1) == 24
    expected = ((split.images[order[:24]] / np.float32(255) - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(im_1, expected, atol=1e-5)
    np.testing.assert_array_equal(im_1, im_2)


def test_augmentation_seed_differs_by_epoch_and_avoids_mindspore_unset_value():
    seeds = {augmentation_seed(0, epoch) for epoch in range(200)}
    assert len(seeds) == 200 and 5489 not in seeds
    assert all(0 <= seed < 2**32 for seed in seeds)


@pytest.mark.parametrize(
    "batch_size, seed, epoch, message",
    [
        (49, 0, 0, "batch_size 49 is larger than the training split"),
        (0, 0, 0, "batch_size must be a positive integer, got 0"),
        (True, 0, 0, "batch_size must be a positive integer, got True"),
        (16, -1, 0, "seed must be a non-negative integer, got -1"),
        (16, 0, 1.5, "epoch must be a non-negative integer, got 1.5"),
    ],
)
def test_bad_train_arguments(batch_size, seed, epoch, message):
    with pytest.raises(DatasetError, match=message):
        create_train_dataset(tiny_split(48), CIFAR10.mean, CIFAR10.std, batch_size, seed, epoch)


def test_eval_dataset_returns_every_image_in_order(tiny_cifar100):
    split = load_cifar("cifar100", tiny_cifar100, "test")
    spec = get_dataset_spec("cifar100")
    dataset = create_eval_dataset(split, spec.mean, spec.std, batch_size=10)
    out = batches(dataset, ("image", "label"))
    assert [len(labels) for _, labels in out] == [10, 10, 10, 2]
    images = np.concatenate([image for image, _ in out])
    labels = np.concatenate([label for _, label in out])
    assert images.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, split.labels)
    mean, std = np.array(spec.mean), np.array(spec.std)
    expected = ((split.images / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(images, expected, atol=1e-5)


def test_eval_dataset_rejects_a_bad_batch_size():
    with pytest.raises(DatasetError, match="batch_size must be a positive integer"):
        create_eval_dataset(tiny_split(8), CIFAR10.mean, CIFAR10.std, 0)


def test_aug_plus_crop_scale_reaches_the_views():
    """MoCo v2's crops cover at least ~20% of the image (rounded sides), the v1 crops down to 8%."""
    v1, _ = view_decisions(4000, 32, 32, 0, 1)
    v2, _ = view_decisions(4000, 32, 32, 0, 1, CROP_SCALE_V2)
    area = {name: boxes[:, 2] * boxes[:, 3] / 1024 for name, boxes in (("v1", v1), ("v2", v2))}
    assert area["v2"].min() > 0.17 and (area["v1"] < 0.17).mean() > 0.05
