"""Per-image transforms of the MoCo CIFAR recipe, all MindSpore C++ ops (no Python per image).

Each list maps a uint8 HWC RGB image (32, 32, 3) to a normalised float32 CHW tensor (3, 32, 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import mindspore.dataset.transforms as transforms
import mindspore.dataset.vision as vision

CROP_SIZE = 32
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_PROB = 0.5
COLOR_JITTER_PROB = 0.8
GRAYSCALE_PROB = 0.2
BRIGHTNESS = CONTRAST = SATURATION = 0.4
HUE = 0.1


def random_grayscale(prob: float) -> transforms.RandomApply:
    """Turns a uint8 HWC RGB image grey with probability ``prob``, keeping 3 channels.

    ``vision.RandomGrayscale`` only takes PIL images; OpenCV's RGB2GRAY uses PIL's
    0.299/0.587/0.114 weights (values agree to within 1 of 255 because of rounding).
    """
    return transforms.RandomApply(
        [
            vision.ConvertColor(vision.ConvertMode.COLOR_RGB2GRAY),
            vision.ConvertColor(vision.ConvertMode.COLOR_GRAY2RGB),
        ],
        prob=prob,
    )


def to_normalized_chw(mean: Sequence[float], std: Sequence[float]) -> list:
    """Maps uint8 HWC to float32 CHW ``(x / 255 - mean) / std`` (mean, std on the [0, 1] scale)."""
    return [
        vision.Rescale(1.0 / 255.0, 0.0),
        vision.Normalize(mean=list(mean), std=list(std)),
        vision.HWC2CHW(),
    ]


def train_transforms(mean: Sequence[float], std: Sequence[float]) -> list:
    """Augmentations of ONE view, as in the PyTorch MoCo CIFAR-10 demo, then normalisation.

    RandomResizedCrop(32, scale (0.08, 1)), horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1)
    with p=0.8, grayscale with p=0.2.
    """
    return [
        vision.RandomResizedCrop(
            CROP_SIZE, scale=CROP_SCALE, ratio=CROP_RATIO, interpolation=vision.Inter.BILINEAR
        ),
        vision.RandomHorizontalFlip(FLIP_PROB),
        transforms.RandomApply(
            [vision.RandomColorAdjust(BRIGHTNESS, CONTRAST, SATURATION, HUE)],
            prob=COLOR_JITTER_PROB,
        ),
        random_grayscale(GRAYSCALE_PROB),
        *to_normalized_chw(mean, std),
    ]


def test_transforms(mean: Sequence[float], std: Sequence[float]) -> list:
    """Evaluation transform: normalisation only."""
    return to_normalized_chw(mean, std)


# pytest would otherwise try to collect ``test_transforms`` as a test when imported.
test_transforms.__test__ = False
