"""Tests of src.data.loaders: two-view train batches, their determinism, eval batches."""

import hashlib

import numpy as np
import pytest

from src.data import (
    DATASETS,
    ImageSplit,
    create_augmentation,
    create_eval_dataset,
    create_train_dataset,
    epoch_order,
)
from src.data.cifar import load_cifar
from src.data.loaders import augmentation_seed, view_blur, view_decisions
from src.data.transforms import (
    BLUR_MIN_SIZE,
    CROP_SCALE,
    CROP_SCALE_V2,
    FLIP,
    JITTER,
    Augmentation,
    crop,
    finish_views,
    resize,
)

CIFAR10 = DATASETS["cifar10"]
MEAN = np.array(CIFAR10.mean, dtype=np.float32)
STD = np.array(CIFAR10.std, dtype=np.float32)
AUGMENTATION = Augmentation(CIFAR10.mean, CIFAR10.std)
EVAL = ("image", "label")


def batches(dataset, columns):
    return [
        tuple(row[c] for c in columns)
        for row in dataset.create_dict_iterator(num_epochs=1, output_numpy=True)
    ]


def train_batches(split: ImageSplit, seed: int, epoch: int, batch_size: int = 16) -> np.ndarray:
    dataset = create_train_dataset(split, AUGMENTATION, batch_size, seed, epoch)
    return np.stack([np.stack(pair) for pair in batches(dataset, ("im_1", "im_2"))])


def tiny_split(n: int = 48, seed: int = 0) -> ImageSplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.int32)
    return ImageSplit(images=images, labels=labels, classes=[str(i) for i in range(10)])


def test_train_batches_shape_count_and_distinct_views():
    split = tiny_split(48)
    dataset = create_train_dataset(split, AUGMENTATION, batch_size=20, seed=0, epoch=0)
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
    later_dataset = create_train_dataset(split, AUGMENTATION, 16, 3, 1)
    create_eval_dataset(split, CIFAR10.mean, CIFAR10.std, 16)  # sets no seed: harmless
    again = np.stack([np.stack(pair) for pair in batches(later_dataset, ("im_1", "im_2"))])
    assert np.array_equal(first, again)
    assert not np.array_equal(first, train_batches(split, 3, 2))
    assert not np.array_equal(first, train_batches(split, 4, 1))


def test_views_are_the_drawn_crops_flips_and_greys():
    split = tiny_split(48)
    dataset = create_train_dataset(split, AUGMENTATION, 48, seed=2, epoch=3)
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


def test_epoch_order_is_a_seeded_permutation():
    order = epoch_order(30, seed=5, epoch=2)
    assert sorted(order) == list(range(30)) and np.array_equal(order, epoch_order(30, 5, 2))
    assert not np.array_equal(order, epoch_order(30, 5, 3))


def test_augmentation_seed_differs_by_epoch_and_avoids_mindspore_unset_value():
    seeds = {augmentation_seed(0, epoch) for epoch in range(200)}
    assert len(seeds) == 200 and 5489 not in seeds
    assert all(0 <= seed < 2**32 for seed in seeds)


def test_eval_dataset_returns_every_image_in_order(tiny_cifar100):
    split = load_cifar("cifar100", tiny_cifar100, "test")
    spec = DATASETS["cifar100"]
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


def test_aug_plus_crop_scale_reaches_the_views():
    """MoCo v2's crops cover at least ~20% of the image (rounded sides), the v1 crops down to 8%."""
    v1, _ = view_decisions(4000, 32, 32, 0, 1)
    v2, _ = view_decisions(4000, 32, 32, 0, 1, CROP_SCALE_V2)
    area = {name: boxes[:, 2] * boxes[:, 3] / 1024 for name, boxes in (("v1", v1), ("v2", v2))}
    assert area["v2"].min() > 0.17 and (area["v1"] < 0.17).mean() > 0.05


def test_views_at_another_image_size_and_eval_resize():
    """96-pixel images (STL-10) train at --image-size 48: crops resized to 48; eval resizes the
    whole image to 48 as the train crops' resize does."""
    split = ImageSplit(tiny_split(16).images.repeat(3, 1).repeat(3, 2), np.zeros(16), ["0"])
    dataset = create_train_dataset(split, Augmentation(MEAN, STD, image_size=48), 8, 0, 1)
    assert batches(dataset, ("im_1",))[0][0].shape == (8, 3, 48, 48)
    (image, _), *_ = batches(
        create_eval_dataset(split, CIFAR10.mean, CIFAR10.std, 16, image_size=48), EVAL
    )
    resized = np.stack([resize(48)(view) for view in split.images])
    expected = ((resized / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_blur_changes_exactly_the_views_it_draws():
    """MoCo v2's blur: views with sigma 0 are those without it; from sigma 0.5 (a neighbour's
    weight 13%) a view is changed and smoother (below, a weight < 1e-4 may round away)."""
    split = ImageSplit(tiny_split(16).images.repeat(2, 1).repeat(2, 2), np.zeros(16), ["0"])

    def views(blur):
        augmentation = Augmentation(MEAN, STD, image_size=64, blur=blur)
        dataset = create_train_dataset(split, augmentation, 16, 5, 2)
        (im_1, im_2), *_ = batches(dataset, ("im_1", "im_2"))
        return np.stack([im_1, im_2], axis=1).reshape(32, 3, 64, 64)  # view order of the epoch

    plain, blurred = views(False), views(True)
    sigma = view_blur(32, 5, 2)
    unchanged = np.array([np.array_equal(a, b) for a, b in zip(plain, blurred)])
    assert unchanged[sigma == 0].all() and not unchanged[sigma > 0.5].any()
    roughness = lambda v: np.abs(np.diff(v, axis=-1)).mean(axis=(1, 2, 3))  # noqa: E731
    assert (roughness(blurred[sigma > 0.5]) < roughness(plain[sigma > 0.5])).all()


def test_blur_draws_are_moco_v2s():
    """p 0.5 (4 binomial standard deviations: +-0.0063 over 100,000 views), sigma uniform on
    [0.1, 2] (Kolmogorov-Smirnov D < 0.0061, the 1% critical value for 50,000 draws), and
    independent of the flip (2x2 chi-square < 6.63, the 1% critical value of 1 dof)."""
    n = 100_000
    sigma = view_blur(n, 0, 1)
    applied = sigma > 0
    assert abs(applied.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    drawn = np.sort(sigma[applied])
    uniform = (drawn - 0.1) / 1.9
    ks = np.max(np.abs(uniform - np.arange(1, len(drawn) + 1) / len(drawn)))
    assert drawn.min() >= 0.1 and drawn.max() <= 2.0 and ks < 1.63 / np.sqrt(len(drawn))
    flip = view_decisions(n, 32, 32, 0, 1)[1][:, FLIP].astype(bool)
    table = np.array([[np.sum(applied & f), np.sum(~applied & f)] for f in (flip, ~flip)])
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    assert ((table - expected) ** 2 / expected).sum() < 6.63


@pytest.mark.parametrize(
    "dataset, size, aug_plus, crop_scale, blur",
    [
        ("cifar10", 32, False, CROP_SCALE, False),
        ("cifar10", 32, True, CROP_SCALE_V2, False),  # too small for the blur
        ("stl10", BLUR_MIN_SIZE - 1, True, CROP_SCALE_V2, False),
        ("stl10", BLUR_MIN_SIZE, True, CROP_SCALE_V2, True),
        ("folder", 96, False, CROP_SCALE, False),
    ],
)
def test_create_augmentation(dataset, size, aug_plus, crop_scale, blur):
    info = DATASETS[dataset]
    expected = Augmentation(info.mean, info.std, size, crop_scale, blur)
    assert create_augmentation(dataset, size, aug_plus) == expected


def _digest(*arrays: np.ndarray) -> str:
    sha = hashlib.sha256()
    for array in arrays:
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()[:16]


def test_v1_and_v2_views_are_pinned():
    """MoCo v1's and v2's NumPy draws and views (float32 bytes, MindSpore 2.10 on CPU) for one
    seed, as before MoCo v3's views were added: v3's own draws must not move them."""
    draws = epoch_order(48, 7, 2), *view_decisions(96, 32, 32, 7, 2), view_blur(96, 7, 2)
    assert _digest(*draws) == "e867acb40a204b6e"
    for name, size, n, batch, expected in [
        ("cifar10", 32, 48, 16, "0641ebbd0ef38c24"),  # v1
        ("stl10", 64, 16, 8, "b19e4b30169051c5"),  # v2 with its blur
    ]:
        images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        split = ImageSplit(images=images, labels=np.zeros(n, np.int32), classes=["0"])
        augmentation = create_augmentation(name, size, aug_plus=name == "stl10")
        dataset = create_train_dataset(split, augmentation, batch, 7, 2)
        views = [a for row in dataset.create_tuple_iterator(output_numpy=True) for a in row]
        assert _digest(*views) == expected, name
