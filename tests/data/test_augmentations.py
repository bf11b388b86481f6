"""Distribution of the train views' augmentations, read off outputs of synthetic images.

``AUGMENTATION_PIPELINE=baseline`` runs the tests on the old pipeline (``baseline_pipeline.py``),
whose random ops draw the same numbers in lockstep: they fail there. ``AUGMENTATION_PIPELINE=demo``
runs them on the PyTorch reference's PIL augmentation (tests/equivalence/demo_augment.py), a
control of the tests themselves. ``-s`` prints every statistic.
"""

import colorsys
import itertools
import math
import os
import random

import mindspore.dataset.vision as vision
import numpy as np
import pytest
from data.colour_jitter import torchvision_jitter

from src.data import ImageSplit, create_augmentation, create_train_dataset, epoch_order
from src.data.loaders import view_decisions
from src.data.transforms import sample_crop_boxes, sample_view_decisions

# A few thousand views of synthetic images go through ``create_train_dataset``. Frequencies must
# lie within SIGMAS standard errors of their probabilities, joint frequencies of two decisions (in
# one view, or across the two views of an image) within SIGMAS of the product of probabilities;
# continuous quantities must match torchvision's sampling rule (written below) by the two-sample
# Kolmogorov-Smirnov distance, below its critical value at level KS_LEVEL; correlations across the
# two views must be within SIGMAS / sqrt(n) of zero.
SIGMAS = 4.0
KS_LEVEL = 1e-4
PIPELINE = os.environ.get("AUGMENTATION_PIPELINE", "ours")
BASELINE = PIPELINE != "ours"  # the pipelines that do not draw their decisions in src/data
AUGMENTATION = create_augmentation("cifar10", 32, aug_plus=False)
PROBABILITIES = {"flip": 0.5, "jitter": 0.8, "grey": 0.2}
SEED, EPOCH = 0, 1


def train_views(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both views of every image, uint8 (N, 32, 32, 3) each, in the epoch's order."""
    if PIPELINE == "demo":
        from equivalence.demo_augment import augment

        rng, ordered = np.random.default_rng(SEED), images[epoch_order(len(images), SEED, EPOCH)]
        return tuple(np.stack([augment(rng, im) for im in ordered]) for _ in range(2))
    if BASELINE:
        from data.baseline_pipeline import create_baseline_train_dataset as create
    else:
        create = create_train_dataset
    labels = np.zeros(len(images), dtype=np.int32)
    split = ImageSplit(images=images, labels=labels, classes=["0"])
    dataset = create(split, AUGMENTATION, len(images), SEED, EPOCH)
    ((im_1, im_2),) = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    mean = np.array(AUGMENTATION.mean)[:, None, None]
    std = np.array(AUGMENTATION.std)[:, None, None]
    pixels = [np.rint((view * std + mean) * 255).astype(np.uint8) for view in (im_1, im_2)]
    return tuple(view.transpose(0, 2, 3, 1) for view in pixels)


def opencv_grey(colours: np.ndarray) -> np.ndarray:
    image = np.asarray(colours, dtype=np.uint8).reshape(1, -1, 3)
    return vision.ConvertColor(vision.ConvertMode.COLOR_RGB2GRAY)(image).reshape(-1)


def is_grey(views: np.ndarray) -> np.ndarray:
    return ((views[..., 0] == views[..., 1]) & (views[..., 1] == views[..., 2])).all(axis=(1, 2))


def ks_distance(sample: np.ndarray, reference: np.ndarray) -> float:
    """Largest gap between the two empirical distribution functions (ties allowed)."""
    values = np.union1d(sample, reference)
    cdfs = [np.searchsorted(np.sort(s), values, side="right") / len(s) for s in (sample, reference)]
    return float(np.abs(cdfs[0] - cdfs[1]).max())


class Checks:
    """Statistics against their limits: all printed, the failing ones asserted."""

    def __init__(self):
        self.lines, self.failures = [], []

    def _record(self, line: str, ok: bool) -> None:
        self.lines.append(("   " if ok else "!! ") + line)
        if not ok:
            self.failures.append(line)

    def frequency(self, name: str, hits: np.ndarray, p: float) -> None:
        n, share = len(hits), float(np.mean(hits))
        off = abs(share - p) / math.sqrt(p * (1 - p) / n)
        self._record(f"{name} = {share:.3f} vs {p:.3f}: {off:.1f} sigma (n {n})", off <= SIGMAS)

    def independent(self, decisions: dict) -> None:
        """Every cell of every pair of ``decisions`` (name -> bool array) vs the product."""
        for (a, x), (b, y) in itertools.combinations(decisions.items(), 2):
            p_a, p_b = (PROBABILITIES[name.rstrip("12")] for name in (a, b))
            for value_a, value_b in itertools.product((True, False), repeat=2):
                p = (p_a if value_a else 1 - p_a) * (p_b if value_b else 1 - p_b)
                cell = f"P({a}={int(value_a)}, {b}={int(value_b)})"
                self.frequency(cell, (x == value_a) & (y == value_b), p)

    def same_distribution(self, name: str, sample: np.ndarray, reference: np.ndarray) -> None:
        n, m = len(sample), len(reference)
        if not n or not m:
            return self._record(f"{name}: no values (n {n}, {m})", False)
        critical = math.sqrt(-math.log(KS_LEVEL / 2) / 2 * (n + m) / (n * m))
        distance = ks_distance(sample, reference)
        line = f"{name}: KS distance {distance:.3f} vs critical {critical:.3f} (n {n}, {m})"
        self._record(line, distance <= critical)

    def uncorrelated(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) < 10:
            return self._record(f"{name}: {len(x)} pairs only", False)
        correlation, limit = np.corrcoef(x, y)[0, 1], SIGMAS / math.sqrt(len(x))
        line = f"{name}: correlation {correlation:.3f} vs limit {limit:.3f} (n {len(x)})"
        self._record(line, abs(correlation) <= limit)

    def verify(self) -> None:
        print("\n".join(["", *self.lines]))
        assert not self.failures, "\n".join(self.failures)


# --- flip, jitter, grayscale --------------------------------------------------------------------

# Three colours in 2-pixel columns, 0 0 1 1 2 2 0 0 ...: left to right two small steps up, one
# large step down. Every crop (8 pixels wide at least) holds a whole column of each colour.
PALETTE = np.array([[80, 72, 64], [110, 102, 94], [140, 132, 124]], dtype=np.uint8)


def stairs_image() -> np.ndarray:
    columns = PALETTE[(np.arange(32) // 2) % 3]
    return np.ascontiguousarray(np.broadcast_to(columns[None], (32, 32, 3)))


def read_stairs(views: np.ndarray) -> dict:
    """flip: the large step goes up; grey: equal channels; jitter: some colour of the palette (or
    its grey) is missing, or the channels' extremes are not the palette's (blends lie between).
    """
    grey = is_grey(views)
    profile = views.astype(np.float64).sum(axis=(1, 3))  # along x
    flip = (np.diff(profile, axis=1) ** 3).sum(axis=1) > 0
    grey_palette = np.repeat(opencv_grey(PALETTE)[:, None], 3, axis=1)
    colours = np.where(grey[:, None, None], grey_palette[None], PALETTE[None])  # (n, 3, 3)
    present = (views[:, None] == colours[:, :, None, None, :]).all(-1).any(axis=(2, 3))
    extremes = (views.min(axis=(1, 2)) == colours.min(axis=1)) & (
        views.max(axis=(1, 2)) == colours.max(axis=1)
    )
    return {"flip": flip, "jitter": ~(present.all(axis=1) & extremes.all(axis=1)), "grey": grey}


def test_flip_jitter_and_grayscale_are_independent_decisions():
    views = train_views(np.repeat(stairs_image()[None], 2000, axis=0))
    decisions = {
        f"{k}{v}": d for v, view in enumerate(views, 1) for k, d in read_stairs(view).items()
    }
    checks = Checks()
    for name, hits in decisions.items():
        checks.frequency(f"P({name})", hits, PROBABILITIES[name[:-1]])
    checks.independent(decisions)
    checks.verify()


# --- crop box -----------------------------------------------------------------------------------


def torchvision_crop_box(rng: random.Random, size: int = 32) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop(size, (0.08, 1), (3/4, 4/3)).get_params`` on a square
    image: (top, left, height, width); ``rng`` stands in for torch's generator.
    """
    area, log_ratio = size * size, (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target_area = area * rng.uniform(0.08, 1.0)
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= size and 0 < h <= size:
            return rng.randint(0, size - h), rng.randint(0, size - w), h, w
    return 0, 0, size, size  # centre crop, ratio clamped: a square image is within the range


def crop_features(boxes: np.ndarray) -> dict:
    """Area fraction, aspect ratio and position (0 to 1) of (top, left, height, width) boxes."""
    top, left, height, width = np.asarray(boxes, dtype=np.float64).T
    return {
        "area": height * width / 32**2,
        "aspect": width / height,
        "left": (left + 0.5) / (33 - width),
        "top": (top + 0.5) / (33 - height),
    }


def coordinate_image() -> np.ndarray:
    """Red 8 x + 4, green 8 y + 4, blue 128."""
    y, x = np.mgrid[0:32, 0:32]
    return np.stack([8 * x + 4, 8 * y + 4, np.full_like(x, 128)], axis=-1).astype(np.uint8)


def read_crops(views: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(readable, boxes, flip)``. Views neither jittered nor grey keep blue 128 and show their
    box's edge pixels at their own edges (bilinear resizing clamps there): red and green extremes.
    """
    red, green = views[..., 0].astype(np.int64), views[..., 1].astype(np.int64)
    lows = red.min(axis=(1, 2)), green.min(axis=(1, 2))
    highs = red.max(axis=(1, 2)), green.max(axis=(1, 2))
    on_grid = np.all([(v - 4) % 8 == 0 for v in (*lows, *highs)], axis=0)
    readable = (views[..., 2] == 128).all(axis=(1, 2)) & ~is_grey(views) & on_grid
    width, height = ((high - low) // 8 + 1 for low, high in zip(lows, highs, strict=True))
    left, top = ((low - 4) // 8 for low in lows)
    return readable, np.stack([top, left, height, width], axis=1), red[:, 0, 0] > red[:, 0, -1]


def test_crop_boxes_follow_torchvision_rule_independently():
    views = train_views(np.repeat(coordinate_image()[None], 6000, axis=0))
    (readable_1, boxes_1, flip_1), (readable_2, boxes_2, flip_2) = map(read_crops, views)
    readable = np.concatenate([readable_1, readable_2])
    boxes = np.concatenate([boxes_1, boxes_2])[readable]
    flip = np.concatenate([flip_1, flip_2])[readable]
    rng = random.Random(0)
    reference = crop_features([torchvision_crop_box(rng) for _ in range(20000)])
    checks = Checks()
    checks.frequency("P(readable) = P(jitter=0, grey=0)", readable, 0.2 * 0.8)
    checks.frequency("P(flip | readable)", flip, PROBABILITIES["flip"])
    for name, values in crop_features(boxes).items():
        checks.same_distribution(f"{name} vs the rule", values, reference[name])
        checks.same_distribution(f"{name}, flipped vs not", values[flip], values[~flip])
    both = readable_1 & readable_2
    features = [crop_features(b[both]) for b in (boxes_1, boxes_2)]
    for name in ("area", "aspect", "left", "top"):
        checks.uncorrelated(f"{name}, view 1 vs 2", features[0][name], features[1][name])
    checks.verify()


# --- colour jitter ------------------------------------------------------------------------------

COLOUR = np.array([125, 105, 80], dtype=np.uint8)  # no channel clips, whatever the factors
GREY_LEVEL = 150  # a grey image: brightness alone changes it


def colour_features(colours: np.ndarray) -> dict:
    """For ``COLOUR`` jittered: chroma (max - min) over the original's, brightness * contrast *
    saturation (hue keeps max and min); the hue shift in turns (the other three keep hue).
    """
    colours = colours.astype(np.float64)
    chroma = (colours.max(axis=1) - colours.min(axis=1)) / float(COLOUR.max() - COLOUR.min())
    hue = np.array([colorsys.rgb_to_hsv(*c)[0] for c in colours / 255])
    shift = (hue - colorsys.rgb_to_hsv(*(COLOUR / 255))[0] + 0.5) % 1 - 0.5
    return {"chroma ratio": chroma, "hue shift": shift}


def test_colour_jitter_is_independent_and_its_factors_follow_torchvision():
    is_colour = np.arange(4000) % 4 != 0  # 3000 coloured images, 1000 grey ones
    images = np.where(is_colour[:, None, None, None], COLOUR, np.uint8(GREY_LEVEL))
    is_colour = is_colour[epoch_order(len(images), SEED, EPOCH)]
    pixels = [view[:, 0, 0] for view in train_views(images)]  # every view stays constant
    coloured, grey_level = [p[is_colour] for p in pixels], [p[~is_colour, 0] for p in pixels]
    grey = [(c[:, 0] == c[:, 1]) & (c[:, 1] == c[:, 2]) for c in coloured]
    original = [np.where(g[:, None], opencv_grey(COLOUR)[0], COLOUR) for g in grey]
    jitter = [(c != o).any(axis=1) for c, o in zip(coloured, original, strict=True)]
    checks = Checks()
    decisions = {"jitter1": jitter[0], "grey1": grey[0], "jitter2": jitter[1], "grey2": grey[1]}
    for name, hits in decisions.items():
        checks.frequency(f"P({name}), coloured image", hits, PROBABILITIES[name[:-1]])
    checks.independent(decisions)
    for view in (0, 1):
        brightened = grey_level[view] != GREY_LEVEL
        checks.frequency(f"P(jitter{view + 1}), grey image", brightened, PROBABILITIES["jitter"])

    rng = random.Random(0)
    small = np.full((2, 2, 3), COLOUR, dtype=np.uint8)
    reference = colour_features(
        np.array([torchvision_jitter(rng, small)[0, 0] for _ in range(3000)])
    )
    small_grey = np.full((2, 2, 3), GREY_LEVEL, dtype=np.uint8)
    levels = np.array([torchvision_jitter(rng, small_grey)[0, 0, 0] for _ in range(2000)])
    reference["grey level"] = levels[levels != GREY_LEVEL]  # as read: changed levels only
    readable = [j & ~g for j, g in zip(jitter, grey, strict=True)]
    features = [colour_features(c[r]) for c, r in zip(coloured, readable, strict=True)]
    for view in (0, 1):
        features[view]["grey level"] = grey_level[view][grey_level[view] != GREY_LEVEL]
    for name, values in reference.items():
        sample = np.concatenate([f[name] for f in features])
        checks.same_distribution(f"{name} vs the rule", sample, values)
    in_both = [colour_features(c[readable[0] & readable[1]]) for c in coloured]
    for name in ("chroma ratio", "hue shift"):
        checks.uncorrelated(f"{name}, view 1 vs 2", in_both[0][name], in_both[1][name])
    checks.verify()


@pytest.mark.skipif(BASELINE, reason="its decisions are not drawn by src/data")
def test_read_offs_recover_the_drawn_decisions():
    boxes, drawn = view_decisions(2 * 500, 32, 32, SEED, EPOCH)
    read = [read_stairs(view) for view in train_views(np.repeat(stairs_image()[None], 500, 0))]
    for view, decisions in enumerate(read):
        for column, name in enumerate(("flip", "jitter", "grey")):
            assert np.array_equal(decisions[name], drawn[view::2, column].astype(bool)), name
    for view, (readable, read_boxes, flip) in enumerate(
        map(read_crops, train_views(np.repeat(coordinate_image()[None], 500, 0)))
    ):
        plain = (drawn[view::2, 1] == 0) & (drawn[view::2, 2] == 0)
        assert np.array_equal(readable, plain)
        assert np.array_equal(read_boxes[readable], boxes[view::2][readable])
        assert np.array_equal(flip[readable], drawn[view::2, 0][readable].astype(bool))


# --- the NumPy samplers themselves --------------------------------------------------------------


@pytest.mark.skipif(BASELINE, reason="samplers of src/data")
def test_crop_box_sampler_is_torchvision_rule():
    boxes = sample_crop_boxes(np.random.default_rng(0), 20000)
    rng = random.Random(1)
    reference = crop_features([torchvision_crop_box(rng) for _ in range(20000)])
    checks = Checks()
    for name, values in crop_features(boxes).items():
        checks.same_distribution(f"{name} vs the rule", values, reference[name])
    checks.verify()


@pytest.mark.skipif(BASELINE, reason="samplers of src/data")
def test_decision_sampler():
    decisions = sample_view_decisions(np.random.default_rng(0), 20000).astype(bool)
    checks = Checks()
    named = dict(zip(PROBABILITIES, decisions.T, strict=True))
    for name, hits in named.items():
        checks.frequency(f"P({name})", hits, PROBABILITIES[name])
    checks.independent(named)
    checks.verify()
