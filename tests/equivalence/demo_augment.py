"""The demo's training augmentation, written out as torchvision applies it to PIL images.

torchvision is not installable here, so this follows its ``transforms`` and PIL functional code
step by step: ``RandomResizedCrop(32)`` (scale (0.08, 1), ratio (3/4, 4/3), 10 tries, centre
fallback, PIL bilinear), ``RandomHorizontalFlip(0.5)``, ``RandomApply([ColorJitter(0.4, 0.4,
0.4, 0.1)], p=0.8)`` (a random order of the four PIL adjustments), ``RandomGrayscale(0.2)``.
``rng`` (a NumPy Generator) stands in for torch's global generator: every draw is independent.
Test-only code, independent of ``src/data``; it yields uint8 HWC images (before ToTensor).
"""

import math

import numpy as np
from PIL import Image, ImageEnhance

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
P_FLIP, P_JITTER, P_GREY = 0.5, 0.8, 0.2


def crop_box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params``: (top, left, h, w)."""
    area, log_ratio = height * width, (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*SCALE)
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        h, w = height, int(round(height * max(RATIO)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """torchvision's PIL ``adjust_hue``: shift the HSV hue channel with uint8 wrap-around."""
    h, s, v = img.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    np_h += np.uint8(int(hue_factor * 255) % 256)
    return Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert("RGB")


def color_jitter(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    """``ColorJitter(0.4, 0.4, 0.4, 0.1)``: a random order, then the factors, as in get_params."""
    order = rng.permutation(4)
    factors = [rng.uniform(1 - JITTER[k], 1 + JITTER[k]) for k in ("brightness", "contrast")]
    factors += [rng.uniform(1 - JITTER["saturation"], 1 + JITTER["saturation"])]
    factors += [rng.uniform(-JITTER["hue"], JITTER["hue"])]
    adjust = [
        lambda im, f: ImageEnhance.Brightness(im).enhance(f),
        lambda im, f: ImageEnhance.Contrast(im).enhance(f),
        lambda im, f: ImageEnhance.Color(im).enhance(f),
        adjust_hue,
    ]
    for fn_id in order:
        img = adjust[fn_id](img, factors[fn_id])
    return img


def augment(rng: np.random.Generator, image: np.ndarray, size: int = 32) -> np.ndarray:
    """One view of a uint8 HWC image, uint8 HWC of ``size`` x ``size``."""
    img = Image.fromarray(image, "RGB")
    top, left, h, w = crop_box(rng, image.shape[0], image.shape[1])
    img = img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
    if rng.random() < P_FLIP:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if not P_JITTER < rng.random():  # RandomApply: skipped when p < rand
        img = color_jitter(rng, img)
    if rng.random() < P_GREY:
        img = img.convert("L").convert("RGB")
    return np.asarray(img)
