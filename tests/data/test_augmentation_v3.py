"""MoCo v3's asymmetric views (moco-v3's main_moco.py, BYOL's): saturation 0.2 on both views,
blur p 1.0 / 0.1 (from BLUR_MIN_SIZE up), solarization p 0 / 0.2, read off the train pipeline's
outputs or its draws. ``-s`` prints every statistic."""

import dataclasses
import math
import random

import numpy as np
import pytest
from data.colour_jitter import torchvision_jitter

from src.data import DATASETS, ImageSplit, create_augmentation, create_train_dataset
from src.data.loaders import view_blur, view_decisions, view_solarize
from src.data.transforms import (
    BLUR_MIN_SIZE,
    CROP_SCALE,
    GRAYSCALE,
    JITTER,
    Augmentation,
    solarize,
)

# Frequencies within SIGMAS binomial standard errors of their probability (a probability of 0 or
# 1: never missed); continuous quantities within the two-sample Kolmogorov-Smirnov critical value
# at level KS_LEVEL of a sample drawn by the rule.
SIGMAS = 4.5
KS_LEVEL = 1e-4
SEED, EPOCH = 0, 1
# moco-v3's main_moco.py (BYOL's recipe): probabilities of views 1 and 2, the jitter's saturation.
BLUR_PROB, SOLARIZE_PROB, SATURATION = (1.0, 0.1), (0.0, 0.2), 0.2
V3 = create_augmentation("cifar10", 32, aug_plus=False, method="v3")
V3_LARGE = create_augmentation("stl10", BLUR_MIN_SIZE, aug_plus=False, method="v3")


def frequency(name: str, hits: np.ndarray, p: float) -> bool:
    """Whether ``hits``' share is within SIGMAS of ``p`` (exactly ``p`` if 0 or 1), printed."""
    n, share = len(hits), float(np.mean(hits))
    error = math.sqrt(p * (1 - p) / n)
    ok = abs(share - p) <= SIGMAS * error
    print(f"{'  ' if ok else '!!'} {name} = {share:.4f} vs {p:.4f} +- {SIGMAS * error:.4f} (n {n})")
    return ok


def ks_critical(n: int, m: int) -> float:
    return math.sqrt(-math.log(KS_LEVEL / 2) / 2 * (n + m) / (n * m))


def ks_distance(sample: np.ndarray, reference: np.ndarray) -> float:
    values = np.union1d(sample, reference)
    cdfs = [np.searchsorted(np.sort(s), values, side="right") / len(s) for s in (sample, reference)]
    return float(np.abs(cdfs[0] - cdfs[1]).max())


def train_views(images: np.ndarray, augmentation: Augmentation) -> tuple[np.ndarray, np.ndarray]:
    """Both views of every image, uint8 (N, S, S, 3) each, in the epoch's order (one batch)."""
    split = ImageSplit(images=images, labels=np.zeros(len(images), np.int32), classes=["0"])
    dataset = create_train_dataset(split, augmentation, len(images), SEED, EPOCH)
    ((im_1, im_2),) = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    mean = np.array(augmentation.mean)[:, None, None]
    std = np.array(augmentation.std)[:, None, None]
    pixels = [np.rint((view * std + mean) * 255).astype(np.uint8) for view in (im_1, im_2)]
    return tuple(view.transpose(0, 2, 3, 1) for view in pixels)


@pytest.mark.parametrize("dataset, size, blur", [("cifar10", 32, False), ("stl10", 96, True)])
def test_create_augmentation_v3(dataset, size, blur):
    info = DATASETS[dataset]
    v3 = dict(blur_prob=BLUR_PROB, saturation=SATURATION, solarize_prob=SOLARIZE_PROB)
    expected = Augmentation(info.mean, info.std, size, CROP_SCALE, blur, **v3)
    assert create_augmentation(dataset, size, False, "v3") == expected
    assert create_augmentation(dataset, size, False) == Augmentation(info.mean, info.std, size)


def test_solarization_is_on_the_second_view_only():
    """Grey images of level 250: jitter keeps a grey level at 150 or more (brightness >= 0.6; the
    others leave grey as is), solarization brings it below 128. Read-offs equal the draws."""
    views = train_views(np.full((2000, 32, 32, 3), 250, np.uint8), V3)
    drawn = view_solarize(4000, SEED, EPOCH, V3.solarize_prob)
    read = [(view < 128).all(axis=(1, 2, 3)) for view in views]
    ok = [frequency(f"P(solarize{v + 1})", read[v], p) for v, p in enumerate(SOLARIZE_PROB)]
    assert all(ok)
    for view, solarized in enumerate(read):
        assert (solarized | (views[view] >= 150).all(axis=(1, 2, 3))).all()  # one or the other
        assert np.array_equal(solarized, drawn[view::2])


def test_blur_draws_are_v3s_per_view():
    """Blur p 1.0 on view 1, 0.1 on view 2, sigma uniform on [0.1, 2] for both; none at 32 px."""
    assert V3_LARGE.blur and not V3.blur
    sigma = view_blur(20_000, SEED, EPOCH, V3_LARGE.blur_prob)
    rng, ok = np.random.default_rng(1), []
    for view, p in enumerate(BLUR_PROB):
        drawn = sigma[view::2]
        ok.append(frequency(f"P(blur{view + 1})", drawn > 0, p))
        applied, reference = drawn[drawn > 0], rng.uniform(0.1, 2.0, 10_000)
        distance, critical = ks_distance(applied, reference), ks_critical(len(applied), 10_000)
        print(f"   sigma{view + 1}: KS distance {distance:.3f} vs critical {critical:.3f}")
        ok.append(distance <= critical)
    assert all(ok)


def test_pipeline_blurs_exactly_the_drawn_views():
    """At 64 px, the v3 views against the same views without the blur: those of sigma 0 are
    unchanged, those of sigma 0.5 or more changed (below, a weight < 1e-4 may round away)."""
    images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    blurred = train_views(images, V3_LARGE)
    plain = train_views(images, dataclasses.replace(V3_LARGE, blur=False))
    sigma = view_blur(32, SEED, EPOCH, V3_LARGE.blur_prob)
    for view in (0, 1):
        pairs = zip(blurred[view], plain[view], strict=True)
        unchanged = np.array([np.array_equal(a, b) for a, b in pairs])
        drawn = sigma[view::2]
        assert unchanged[drawn == 0].all() and not unchanged[drawn >= 0.5].any()
    assert (sigma[0::2] > 0).all()


# --- the saturation factor ----------------------------------------------------------------------

# Rows 0-7 grey A, 8-15 grey B, 16-31 a colour: jitter's brightness b and contrast c scale B - A
# by b * c (saturation and hue leave grey as is), all four keep the colour's chroma but for b, c
# and the saturation s. So chroma ratio / grey-step ratio reads s off a view. A whole-image crop
# (scale 1) and a flip keep the rows; no factor clips a level.
GREY_A, GREY_B, COLOUR = 80, 160, np.array([150, 120, 90], np.uint8)


def rows_image() -> np.ndarray:
    column = np.concatenate([np.full((8, 3), GREY_A), np.full((8, 3), GREY_B), [COLOUR] * 16])
    return np.repeat(column.astype(np.uint8)[:, None], 32, axis=1)


def saturation_factor(views: np.ndarray) -> np.ndarray:
    """The saturation factor read off jittered, colour views of ``rows_image``."""
    step = views[:, 8:16].mean(axis=(1, 2, 3)) - views[:, :8].mean(axis=(1, 2, 3))
    colour = views[:, 16:].reshape(len(views), -1, 3).astype(np.float64).mean(axis=1)
    chroma = (colour.max(axis=1) - colour.min(axis=1)) / float(COLOUR.max() - COLOUR.min())
    return chroma / (step / (GREY_B - GREY_A))


def test_saturation_factor_is_v3s():
    """The factor read off the jittered, coloured, unsolarized views of 2,000 images against the
    same reading of 2,000 draws of the rule with saturation 0.2 (Kolmogorov-Smirnov)."""
    augmentation = dataclasses.replace(V3, crop_scale=(1.0, 1.0))
    views = train_views(np.repeat(rows_image()[None], 2000, axis=0), augmentation)
    _, decisions = view_decisions(4000, 32, 32, SEED, EPOCH, augmentation.crop_scale)
    readable = (decisions[:, JITTER] == 1) & (decisions[:, GRAYSCALE] == 0)
    readable &= ~view_solarize(4000, SEED, EPOCH, augmentation.solarize_prob)
    factors = np.concatenate([saturation_factor(views[v][readable[v::2]]) for v in (0, 1)])
    rng, image = random.Random(0), rows_image()
    drawn = np.stack([torchvision_jitter(rng, image, SATURATION) for _ in range(2000)])
    reference = saturation_factor(drawn)
    distance, critical = ks_distance(factors, reference), ks_critical(len(factors), len(reference))
    low, high = np.percentile(factors, [0.5, 99.5])
    print(f"   saturation factor: 99% in [{low:.3f}, {high:.3f}] (n {len(factors)})")
    print(f"   saturation factor: KS distance {distance:.3f} vs critical {critical:.3f}")
    assert distance <= critical


def test_v3_keeps_v1s_other_draws():
    """v3's order, crops, flips, jitter and grey decisions are v1's draws: its unjittered views
    equal v1's where unsolarized and v1's solarized where solarized (no blur at 32 px)."""
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    v1 = train_views(images, create_augmentation("cifar10", 32, False))
    v3 = train_views(images, V3)
    _, decisions = view_decisions(128, 32, 32, SEED, EPOCH)
    solarized = view_solarize(128, SEED, EPOCH, V3.solarize_prob)
    for view in (0, 1):
        plain = decisions[view::2, JITTER] == 0
        expected = solarize(v1[view], solarized[view::2])
        assert plain.any() and np.array_equal(v3[view][plain], expected[plain])
    assert solarized[1::2][decisions[1::2, JITTER] == 0].any()
