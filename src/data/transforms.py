"""Per-image transforms of the MoCo CIFAR recipe, built from MindSpore's C++ ops.

Every function returns a list of ``mindspore.dataset`` operations that maps a
uint8 HWC RGB image (32, 32, 3) to a normalised float32 CHW tensor (3, 32, 32).
All ops run in C++ so that a map needs no Python call per image.
"""

from __future__ import annotations

from typing import List, Sequence

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
    """Turns an RGB image grey with probability ``prob``, keeping 3 channels.

    ``vision.RandomGrayscale`` only accepts PIL images, so this composes two C++
    colour conversions instead. OpenCV's RGB2GRAY uses the same 0.299/0.587/0.114
    weights as PIL (values agree to within 1 of 255 because of rounding).

    Args:
        prob: Probability of converting the image.

    Returns:
        A C++ ``RandomApply`` op on uint8 HWC RGB images.
    """
    return transforms.RandomApply(
        [
            vision.ConvertColor(vision.ConvertMode.COLOR_RGB2GRAY),
            vision.ConvertColor(vision.ConvertMode.COLOR_GRAY2RGB),
        ],
        prob=prob,
    )


def to_normalized_chw(mean: Sequence[float], std: Sequence[float]) -> List:
    """Maps uint8 HWC to float32 CHW ``(x / 255 - mean) / std``.

    Args:
        mean: Per-channel mean on the [0, 1] scale.
        std: Per-channel std on the [0, 1] scale.

    Returns:
        List of ops: rescale to [0, 1], normalise, HWC to CHW.
    """
    return [
        vision.Rescale(1.0 / 255.0, 0.0),
        vision.Normalize(mean=list(mean), std=list(std)),
        vision.HWC2CHW(),
    ]


def train_transforms(mean: Sequence[float], std: Sequence[float]) -> List:
    """Augmentations of ONE view, as in the PyTorch MoCo CIFAR-10 demo.

    RandomResizedCrop(32, scale (0.08, 1)), horizontal flip, colour jitter
    (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale with p=0.2, then normalisation.

    Args:
        mean: Per-channel mean on the [0, 1] scale.
        std: Per-channel std on the [0, 1] scale.

    Returns:
        List of C++ ops producing float32 (3, 32, 32).
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


def test_transforms(mean: Sequence[float], std: Sequence[float]) -> List:
    """Evaluation transform: normalisation only.

    Args:
        mean: Per-channel mean on the [0, 1] scale.
        std: Per-channel std on the [0, 1] scale.

    Returns:
        List of C++ ops producing float32 (3, 32, 32).
    """
    return to_normalized_chw(mean, std)


# pytest would otherwise try to collect ``test_transforms`` as a test when imported.
test_transforms.__test__ = False
