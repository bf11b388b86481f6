"""Tests of src.data.transforms: normalisation and the deterministic kernels."""

import itertools

import mindspore.dataset as ds
import mindspore.dataset.transforms as ms_transforms
import mindspore.dataset.vision as vision
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from src.data import DATASETS
from src.data.transforms import (
    crop,
    eval_transforms,
    finish_views,
    gaussian_blur,
    grey,
    resize,
    sample_crop_boxes,
    solarize,
)

CIFAR10 = DATASETS["cifar10"]
MEAN = np.array(CIFAR10.mean, dtype=np.float32)
STD = np.array(CIFAR10.std, dtype=np.float32)
ADJUSTMENTS = (
    vision.AdjustBrightness,
    vision.AdjustContrast,
    vision.AdjustSaturation,
    vision.AdjustHue,
)


def random_images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def adjust_colours(image: np.ndarray, factors, order) -> np.ndarray:
    """The adjustments of ``colour_jitter`` with given factors (brightness, contrast, saturation,
    hue), in ``order``: the same MindSpore kernels."""
    for index in order:
        image = ADJUSTMENTS[index](float(factors[index]))(image)
    return image


def jitter_factors(n: int) -> np.ndarray:
    """``n`` draws of ColorJitter(0.4, 0.4, 0.4, 0.1)'s factors."""
    return np.random.default_rng(1).uniform([0.6] * 3 + [-0.1], [1.4] * 3 + [0.1], size=(n, 4))


def test_eval_transform_is_exact_normalisation():
    images = random_images(4)
    op = ms_transforms.Compose(eval_transforms(CIFAR10.mean, CIFAR10.std))
    outputs = np.stack([op(image) for image in images])
    assert outputs.dtype == np.float32 and outputs.shape == (4, 3, 32, 32)
    expected = ((images.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)


def test_grey_is_opencv_rgb2gray_in_three_channels():
    image = random_images(1)[0]
    opencv = vision.ConvertColor(vision.ConvertMode.COLOR_RGB2GRAY)(image)
    grey_image = grey(image)
    assert grey_image.shape == (32, 32, 3) and grey_image.dtype == np.uint8
    assert all(np.array_equal(grey_image[..., c], opencv) for c in range(3))
    luminance = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey_image[..., 0] - luminance).max() <= 1.0


def test_crop_then_resize_is_resized_crop():
    image = random_images(1)[0]
    for top, left, height, width in sample_crop_boxes(np.random.default_rng(0), 50):
        expected = vision.ResizedCrop(int(top), int(left), int(height), int(width), 32)(image)
        assert np.array_equal(resize()(crop(image, (top, left, height, width))), expected)


def test_fallback_crop_is_centred_with_the_ratio_clamped():
    rng = np.random.default_rng(0)
    # A scale above 1 never fits, so every box is the fallback: h = round(10 / (3 / 4)) = 13.
    tall = sample_crop_boxes(rng, 3, height=40, width=10, scale=(2.0, 3.0))
    assert tall.tolist() == [[13, 0, 13, 10]] * 3
    wide = sample_crop_boxes(rng, 2, height=10, width=40, scale=(2.0, 3.0))
    assert wide.tolist() == [[0, 13, 10, 13]] * 2
    square = sample_crop_boxes(rng, 2, scale=(2.0, 3.0))
    assert square.tolist() == [[0, 0, 32, 32]] * 2


def _pil_hue(image: np.ndarray, factor: float) -> np.ndarray:
    hue, saturation, value = Image.fromarray(image).convert("HSV").split()
    shifted = (np.array(hue, dtype=np.int64) + int(np.uint8(np.int8(factor * 255)))) % 256
    hsv = (Image.fromarray(shifted.astype(np.uint8), "L"), saturation, value)
    return np.array(Image.merge("HSV", hsv).convert("RGB"))


def _pil_adjustments(image: np.ndarray, factors, order) -> np.ndarray:
    """torchvision's functional ``adjust_*`` on PIL images, in ``order``."""
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for index in order:
        if index == 3:
            image = _pil_hue(image, factors[3])
        else:
            image = np.array(enhancers[index](Image.fromarray(image)).enhance(factors[index]))
    return image


def test_colour_adjustments_match_torchvision_pil_within_rounding():
    image = random_images(1)[0]
    for factors in jitter_factors(20):
        for index in range(3):  # blends: within 1 of 255
            ours = adjust_colours(image, factors, [index]).astype(int)
            assert np.abs(ours - _pil_adjustments(image, factors, [index])).max() <= 1
        # Hue goes through 8-bit HSV in both, rounded differently.
        hue = np.abs(adjust_colours(image, factors, [3]).astype(int) - _pil_hue(image, factors[3]))
        assert hue.mean() < 2.5 and np.percentile(hue, 99) <= 12


def test_random_colour_adjust_is_the_four_adjustments_in_a_random_order():
    image = random_images(1)[0]
    factors = (1.3, 0.7, 1.25, 0.08)
    fixed = vision.RandomColorAdjust(*[(f, f) for f in factors])
    # In a pipeline: eager random ops repeat one draw once a global seed is set.
    ds.config.set_seed(3)
    dataset = ds.NumpySlicesDataset([image] * 300, ["image"], shuffle=False).map([fixed])
    outputs = {row[0].tobytes() for row in dataset.create_tuple_iterator(output_numpy=True)}
    orders = {
        adjust_colours(image, factors, order).tobytes(): order
        for order in itertools.permutations(range(4))
    }
    assert len(orders) == 24 and outputs == set(orders)


def test_finish_views_normalises_as_the_eval_transform():
    images = random_images(4)
    plain_only = np.zeros((4, 3), dtype=np.uint8)
    finished = finish_views(images, images[::-1], plain_only, CIFAR10.mean, CIFAR10.std)
    expected = ms_transforms.Compose(eval_transforms(CIFAR10.mean, CIFAR10.std))
    np.testing.assert_allclose(finished, np.stack([expected(i) for i in images]), atol=1e-6)
    flipped_grey = finish_views(images, images, [[1, 0, 1]] * 4, (0, 0, 0), (1 / 255,) * 3)
    np.testing.assert_allclose(flipped_grey, grey(images[:, :, ::-1]).transpose(0, 3, 1, 2))


def test_gaussian_blur_is_the_2d_convolution_with_extended_edges():
    """Against a direct float64 2-D convolution (outer product kernel, edge pixels repeated):
    at most 1 grey level apart (float32 sums, then rounding); sigma 0 leaves an image as is."""
    images = random_images(3)
    sigma = np.array([0.0, 0.7, 2.0], np.float32)
    out = gaussian_blur(images, sigma)
    np.testing.assert_array_equal(out[0], images[0])
    for image, s, blurred in zip(images[1:], sigma[1:], out[1:]):
        radius = int(np.ceil(3 * 2.0))  # the batch's largest sigma sets the truncation
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (offsets / float(s)) ** 2)
        kernel2d = np.outer(kernel, kernel) / kernel.sum() ** 2
        padded = np.pad(image.astype(np.float64), [(radius, radius)] * 2 + [(0, 0)], "edge")
        expected = sum(
            kernel2d[i, j] * padded[i : i + 32, j : j + 32]
            for i in range(2 * radius + 1)
            for j in range(2 * radius + 1)
        )
        assert np.abs(blurred.astype(int) - np.rint(expected)).max() <= 1


def test_solarize_is_pil_imageops_solarize_on_every_level():
    """All 256 levels in each channel (shifted between channels), against PIL's solarize
    (threshold 128); images not chosen are kept."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = np.stack([levels, np.roll(levels, 85), np.roll(levels, 170)], axis=-1)
    expected = np.array(ImageOps.solarize(Image.fromarray(image)))
    out = solarize(np.stack([image, image]), np.array([True, False]))
    assert out.dtype == np.uint8 and np.array_equal(out[0], expected)
    assert np.array_equal(out[1], image) and not np.array_equal(expected, image)
    assert expected[7, 15, 0] == 127 and expected[8, 0, 0] == 127  # levels 127 and 128


def test_finish_views_solarizes_after_grey_and_blur():
    """moco-v3's order: grey, blur, then solarization (neither commutes with it)."""
    images = random_images(4)
    sigma, chosen = np.array([0.0, 1.5, 1.5, 0.0], np.float32), np.array([1, 1, 0, 0], bool)
    out = finish_views(images, images, [[0, 0, 1]] * 4, (0, 0, 0), (1 / 255,) * 3, sigma, chosen)
    expected = solarize(gaussian_blur(grey(images), sigma), chosen)
    np.testing.assert_allclose(out, expected.transpose(0, 3, 1, 2), rtol=1e-6)
    other = solarize(gaussian_blur(grey(solarize(images, chosen)), sigma), np.zeros(4, bool))
    assert not np.array_equal(expected, other)
