"""torchvision's ``ColorJitter`` drawn by its rule on MindSpore's kernels: the reference that the
colour-jitter distribution tests (v1's and v3's views) compare the train pipeline against."""

import random

import mindspore.dataset.vision as vision
import numpy as np

from src.data.transforms import BRIGHTNESS, CONTRAST, HUE, SATURATION

_KERNELS = (
    vision.AdjustBrightness,
    vision.AdjustContrast,
    vision.AdjustSaturation,
    vision.AdjustHue,
)


def torchvision_jitter(rng: random.Random, image: np.ndarray, saturation=SATURATION) -> np.ndarray:
    """``ColorJitter(0.4, 0.4, saturation, 0.1)`` of a uint8 HWC image: factors uniform in
    [1 - x, 1 + x] (hue in [-0.1, 0.1]), the four adjustments in a uniformly random order."""
    spans = (BRIGHTNESS, CONTRAST, saturation)
    factors = [rng.uniform(1 - x, 1 + x) for x in spans] + [rng.uniform(-HUE, HUE)]
    for index in rng.sample(range(4), 4):
        image = _KERNELS[index](factors[index])(image)
    return image
