"""Tests of src.data.folder: ImageFolder and flat layouts, splits, decoding, bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.data import DatasetError
from src.data.folder import load_folder_splits
from src.utils.progress import logger

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def save(path: Path, size=(8, 8), mode="RGB", colour=(10, 20, 30)) -> Path:
    """Writes a constant-colour image (format from the extension); returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def save_palette(path: Path, colour: tuple[int, int, int]) -> Path:
    image = Image.new("P", (12, 12), 1)
    image.putpalette([0, 0, 0, *colour])
    image.save(path)
    return path


def unique_colour_folder(root: Path, counts: dict[str, int]) -> Path:
    """An ImageFolder whose images each have their own grey level (to track them)."""
    level = 0
    for name, count in counts.items():
        for i in range(count):
            save(root / name / f"{i}.png", (4, 4), "L", level)
            level += 1
    return root


def grey_levels(split) -> list[int]:
    return [int(image[0, 0, 0]) for image in split.images]


@pytest.fixture
def mixed_folder(tmp_path):
    """Two classes created out of order, four formats and modes, plus files to ignore."""
    zebra = tmp_path / "zebra"
    save(zebra / "c.bmp", (16, 24), "RGBA", (200, 100, 50, 128))
    save_palette(zebra / "d.PNG", (7, 8, 9))
    save(tmp_path / "ant" / "a.png", (40, 30), "RGB", (10, 20, 30))
    save(tmp_path / "ant" / "b.jpg", (20, 20), "L", 77)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    save(tmp_path / "ant" / ".hidden.png")
    save(tmp_path / ".ipynb_checkpoints" / "e.png")
    return tmp_path


def test_image_folder_sizes_labels_and_colours(mixed_folder):
    train, bank, val = load_folder_splits(mixed_folder, image_size=8)
    assert val is None and bank is train
    assert train.images.shape == (4, 8, 8, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [0, 0, 1, 1]
    assert train.classes == ["ant", "zebra"]
    exact = {0: (10, 20, 30), 2: (200, 100, 50), 3: (7, 8, 9)}  # RGB, RGBA, palette
    for index, colour in exact.items():
        assert (train.images[index] == colour).all()
    assert np.abs(train.images[1].astype(int) - 77).max() <= 1  # grey JPEG


def test_shorter_side_resized_then_centre_cropped(tmp_path):
    image = np.zeros((16, 48, 3), np.uint8)
    image[:, :8], image[:, 8:40], image[:, 40:] = RED, GREEN, BLUE
    Image.fromarray(image).save(tmp_path / "wide.png")
    train = load_folder_splits(tmp_path, image_size=8).pretrain
    assert (train.images[0] == GREEN).all()  # red and blue lie outside the centre square


def test_train_and_val_sub_folders(tmp_path):
    unique_colour_folder(tmp_path / "train", {"a": 3, "b": 2})
    unique_colour_folder(tmp_path / "val", {"a": 1, "b": 1})
    train, _, val = load_folder_splits(tmp_path, image_size=4)
    assert (len(train), len(val)) == (5, 2) and train.classes == val.classes == ["a", "b"]
    assert val.labels.tolist() == [0, 1]
    with pytest.raises(DatasetError, match="val exists"):
        load_folder_splits(tmp_path, image_size=4, val_split=0.5)
    save(tmp_path / "val" / "c" / "0.png")
    with pytest.raises(DatasetError, match=r"classes \['a', 'b', 'c'\]"):
        load_folder_splits(tmp_path, image_size=4)


def test_val_split_is_stratified_disjoint_random_and_fixed(tmp_path):
    unique_colour_folder(tmp_path, {"a": 10, "b": 6})
    train, _, val = load_folder_splits(tmp_path, image_size=4, val_split=0.5)
    assert (len(train), len(val)) == (8, 8)
    assert np.bincount(val.labels).tolist() == [5, 3] and val.classes == ["a", "b"]
    assert sorted(grey_levels(train) + grey_levels(val)) == list(range(16))
    again = load_folder_splits(tmp_path, image_size=4, val_split=0.5).queries
    assert grey_levels(again) == grey_levels(val) != [0, 1, 2, 3, 4, 10, 11, 12]
    assert grey_levels(val) == sorted(grey_levels(val))  # file order kept


def test_flat_folder_is_unlabeled_and_for_training_only(tmp_path):
    save(tmp_path / "1.webp", (9, 5))
    save(tmp_path / "2.jpeg", (5, 9))
    train, _, val = load_folder_splits(tmp_path, image_size=6)
    assert train.images.shape == (2, 6, 6, 3) and val is None
    assert train.labels.tolist() == [-1, -1] and train.classes == []
    with pytest.raises(DatasetError, match="has 0 classes"):
        load_folder_splits(tmp_path, val_split=0.2)


def test_corrupt_image_is_named_or_skipped(mixed_folder, caplog, monkeypatch):
    bad = mixed_folder / "ant" / "x.jpg"
    bad.write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(DatasetError, match=r"x\.jpg is not a readable image"):
        load_folder_splits(mixed_folder, image_size=8)
    monkeypatch.setattr(logger, "propagate", True)  # to caplog's handler, whatever set it up
    with caplog.at_level(logging.WARNING, logger=logger.name):
        train = load_folder_splits(mixed_folder, image_size=8, skip_bad_images=True).pretrain
    assert len(train) == 4 and train.labels.tolist() == [0, 0, 1, 1]
    assert caplog.messages == [f"skipped 1 unreadable images (--skip-bad-images), e.g. {bad}"]


@pytest.mark.parametrize(
    "layout, kwargs, message",
    [
        ({}, {"root": "missing"}, "is not a folder"),
        ({"notes.txt": None}, {}, "no images"),
        ({"a/0.png": 0, "b/notes.txt": None}, {}, r"class folder .*b holds no images"),
        ({"a/0.png": 0, "a/1.png": 1}, {"val_split": 0.5}, "needs >= 2 class"),
        ({"a/0.png": 0, "b/0.png": 1}, {"val_split": 0.1}, "leaves a split empty"),
    ],
)
def test_errors(tmp_path, layout, kwargs, message):
    for name, level in layout.items():
        if level is None:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("text")
        else:
            save(tmp_path / name, (4, 4), "L", level)
    root = tmp_path / kwargs.pop("root", "")
    with pytest.raises(DatasetError, match=message):
        load_folder_splits(root, image_size=4, **kwargs)
