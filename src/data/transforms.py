"""Per-view augmentations of the MoCo recipes (torchvision's rules; v3's asymmetric pair, BYOL's)
and the normalisation. Random decisions are drawn in NumPy: MindSpore seeds every random op from
the one global seed, so two would draw in lockstep; the train loader keeps a single one, the
colour jitter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mindspore.dataset.vision as vision
import numpy as np

CROP_SIZE = 32
CROP_SCALE = (0.08, 1.0)
CROP_SCALE_V2 = (0.2, 1.0)  # MoCo v2's --aug-plus, with its Gaussian blur from BLUR_MIN_SIZE up
BLUR_PROB = 0.5
BLUR_SIGMA = (0.1, 2.0)  # pixels, as MoCo v2's GaussianBlur([.1, 2.])
BLUR_MIN_SIZE = 64  # at 32 px a sigma of 2 is 6% of the width: blur is left out (docs/datasets.md)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_TRIES = 10
FLIP_PROB = 0.5
COLOR_JITTER_PROB = 0.8
GRAYSCALE_PROB = 0.2
BRIGHTNESS = CONTRAST = SATURATION = 0.4
HUE = 0.1
# MoCo v3's two views (BYOL's, moco-v3's main_moco.py), per view (1, 2): saturation 0.2, blur
# (from BLUR_MIN_SIZE up) and solarization of PIL's ImageOps.solarize.
SATURATION_V3 = 0.2
BLUR_PROB_V3 = (1.0, 0.1)
SOLARIZE_PROB_V3 = (0.0, 0.2)
SOLARIZE_THRESHOLD = 128  # levels from 128 up become 255 - level
# Columns of a row of view decisions (see ``sample_view_decisions``).
FLIP, JITTER, GRAYSCALE = 0, 1, 2
# OpenCV's RGB2GRAY weights (0.299, 0.587, 0.114) in 15-bit fixed point, rounded as OpenCV does.
_GREY_WEIGHTS = np.array([9798, 19235, 3735], dtype=np.int32)
_SOLARIZED = np.array([v if v < SOLARIZE_THRESHOLD else 255 - v for v in range(256)], np.uint8)


@dataclass(frozen=True)
class Augmentation:
    """A train view's normalisation (per RGB channel, [0, 1] scale), size, crop area, blur and
    jitter's saturation; probabilities per view (1, 2) of the blur (if on) and solarization."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int = CROP_SIZE
    crop_scale: tuple[float, float] = CROP_SCALE
    blur: bool = False
    blur_prob: tuple[float, float] = (BLUR_PROB, BLUR_PROB)
    saturation: float = SATURATION
    solarize_prob: tuple[float, float] = (0.0, 0.0)


def sample_crop_boxes(
    rng: np.random.Generator,
    n: int,
    height: int = CROP_SIZE,
    width: int = CROP_SIZE,
    scale: Sequence[float] = CROP_SCALE,
    ratio: Sequence[float] = CROP_RATIO,
) -> np.ndarray:
    """``n`` boxes (top, left, height, width), int64 (n, 4), by torchvision's RandomResizedCrop:
    the first of ``CROP_TRIES`` draws that fits, at a uniform position, else a centre crop."""
    target = height * width * rng.uniform(scale[0], scale[1], size=(n, CROP_TRIES))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(n, CROP_TRIES)))
    w = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    found, first = fits.any(axis=1), fits.argmax(axis=1)
    # The centre crop: the whole image, its aspect ratio clamped to ``ratio``.
    fallback_h = min(height, int(round(width / min(ratio))))
    fallback_w = min(width, int(round(height * max(ratio))))
    rows = np.arange(n)
    h = np.where(found, h[rows, first], fallback_h)
    w = np.where(found, w[rows, first], fallback_w)
    top = np.where(found, rng.integers(0, height - h + 1), (height - h) // 2)
    left = np.where(found, rng.integers(0, width - w + 1), (width - w) // 2)
    return np.stack([top, left, h, w], axis=1)


def sample_view_decisions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Independent decisions of ``n`` views, uint8 (n, 3): ``FLIP``, ``JITTER``, ``GRAYSCALE``."""
    return (rng.random((n, 3)) < [FLIP_PROB, COLOR_JITTER_PROB, GRAYSCALE_PROB]).astype(np.uint8)


def per_view(values: Sequence[float], n: int) -> np.ndarray:
    """``values`` (view 1, view 2) of ``n`` views, float64 (n,): rows 2i, 2i + 1 are image i's."""
    return np.asarray(values, np.float64)[np.arange(n) % 2]


def sample_blur(
    rng: np.random.Generator, n: int, prob: Sequence[float] = (BLUR_PROB, BLUR_PROB)
) -> np.ndarray:
    """Blur sigmas of ``n`` views, float32 (n,): uniform in BLUR_SIGMA with p ``prob`` of the view
    (1, 2), else 0."""
    applied = rng.random(n) < per_view(prob, n)
    return np.where(applied, rng.uniform(*BLUR_SIGMA, size=n), 0.0).astype(np.float32)


def sample_solarize(rng: np.random.Generator, n: int, prob: Sequence[float]) -> np.ndarray:
    """Solarization decisions of ``n`` views, bool (n,), with p ``prob`` of the view (1, 2)."""
    return rng.random(n) < per_view(prob, n)


def crop(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """The ``box`` (top, left, height, width) of a HWC image, contiguous."""
    top, left, height, width = (int(value) for value in box)
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def resize(size: int = CROP_SIZE) -> vision.Resize:
    """The bilinear resize of a crop to ``size`` x ``size`` (RandomResizedCrop's)."""
    return vision.Resize((size, size), vision.Inter.BILINEAR)


def colour_jitter(saturation: float = SATURATION) -> vision.RandomColorAdjust:
    """torchvision's ColorJitter(0.4, 0.4, ``saturation``, 0.1): random factors, in a random
    order (MoCo v1/v2: saturation 0.4; v3: 0.2)."""
    return vision.RandomColorAdjust(BRIGHTNESS, CONTRAST, saturation, HUE)


def grey(images: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) RGB to grey in 3 equal channels, as OpenCV's RGB2GRAY then GRAY2RGB."""
    luma = (images.astype(np.int32) @ _GREY_WEIGHTS + (1 << 14)) >> 15
    return np.repeat(luma.astype(np.uint8)[..., None], 3, axis=-1)


def solarize(images: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """uint8 images, those ``chosen`` (bool (N,)) solarized as PIL's ImageOps.solarize: levels
    from SOLARIZE_THRESHOLD up become 255 - level."""
    out = images.copy()
    out[chosen] = _SOLARIZED[images[chosen]]
    return out


def gaussian_blur(images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Image i blurred by a Gaussian of ``sigma[i]`` pixels (0: kept), truncated at 3 sigma, edges
    extended as Pillow's GaussianBlur."""
    out, chosen = images.copy(), np.flatnonzero(sigma > 0)
    if not len(chosen):
        return out
    radius = math.ceil(3 * float(sigma[chosen].max()))
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernels = np.exp(-0.5 * (offsets / sigma[chosen, None].astype(np.float32)) ** 2)
    kernels = (kernels / kernels.sum(axis=1, keepdims=True))[:, :, None, None, None]
    x = images[chosen].astype(np.float32)
    for axis in (1, 2):  # rows, then columns
        pad = [(radius, radius) if dim == axis else (0, 0) for dim in range(4)]
        padded, length = np.pad(x, pad, mode="edge"), x.shape[axis]
        window = [slice(None)] * axis  # the slice of ``axis`` follows
        taps = (padded[(*window, slice(j, j + length))] for j in range(2 * radius + 1))
        x = sum(kernels[:, j] * tap for j, tap in enumerate(taps))
    out[chosen] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def finish_views(
    plain: np.ndarray,
    jittered: np.ndarray,
    decisions: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    sigma: np.ndarray | None = None,
    solarized: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 (N, H, W, 3) views, ``jittered`` or ``plain``, flipped, grey, blurred and solarized as
    decided, as normalised float32 (N, 3, H, W). Flip after the others equals torchvision's order:
    they are per pixel (blur: symmetric) but for contrast's mean, which a flip keeps."""
    decisions = np.asarray(decisions).astype(bool)
    views = np.where(decisions[:, JITTER, None, None, None], jittered, plain)
    flip, grayscale = decisions[:, FLIP], decisions[:, GRAYSCALE]
    views[flip] = views[flip, :, ::-1]
    views[grayscale] = grey(views[grayscale])
    if sigma is not None:
        views = gaussian_blur(views, np.asarray(sigma))
    if solarized is not None:
        views = solarize(views, np.asarray(solarized, bool))
    # A table per channel of the 256 values, computed as vision.Rescale then vision.Normalize.
    levels = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0)
    table = (levels - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]
    return np.stack([table[channel][views[..., channel]] for channel in range(3)], axis=1)


def eval_transforms(mean: Sequence[float], std: Sequence[float]) -> list:
    """uint8 HWC to float32 CHW ``(x / 255 - mean) / std``, the normalisation alone."""
    return [
        vision.Rescale(1.0 / 255.0, 0.0),
        vision.Normalize(mean=list(mean), std=list(std)),
        vision.HWC2CHW(),
    ]
