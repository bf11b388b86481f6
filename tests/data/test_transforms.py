"""Tests of src.data.transforms: normalisation, one augmented view, grayscale."""

import mindspore.dataset.transforms as ms_transforms
import numpy as np

from src.data import get_dataset_spec, test_transforms, train_transforms
from src.data.transforms import random_grayscale

CIFAR10 = get_dataset_spec("cifar10")
MEAN = np.array(CIFAR10.mean, dtype=np.float32)
STD = np.array(CIFAR10.std, dtype=np.float32)


def random_images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_test_transform_is_exact_normalisation():
    images = random_images(4)
    op = ms_transforms.Compose(test_transforms(CIFAR10.mean, CIFAR10.std))
    outputs = np.stack([op(image) for image in images])
    assert outputs.dtype == np.float32 and outputs.shape == (4, 3, 32, 32)
    expected = ((images.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)


def test_train_transform_output_is_normalised_chw_float():
    op = ms_transforms.Compose(train_transforms(CIFAR10.mean, CIFAR10.std))
    # Per channel, (x - mean) / std for x in [0, 1].
    lowest, highest = (-MEAN / STD)[:, None, None], ((1 - MEAN) / STD)[:, None, None]
    for image in random_images(8):
        view = op(image)
        assert view.shape == (3, 32, 32) and view.dtype == np.float32
        assert np.all(view >= lowest - 1e-4) and np.all(view <= highest + 1e-4)
        assert view.std() > 0.05  # not collapsed to a constant


def test_random_grayscale_keeps_three_equal_channels():
    image = random_images(1)[0]
    grey = random_grayscale(1.0)(image)
    assert grey.shape == (32, 32, 3) and grey.dtype == np.uint8
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 0], grey[..., 2])
    luminance = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey[..., 0] - luminance).max() <= 1.0
    assert np.array_equal(random_grayscale(0.0)(image), image)
