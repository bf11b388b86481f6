"""Tests of src.data.stl10: tiny files in the real binary format, read back exactly; every
refusal; download and extraction through a file:// URL."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from helpers import STL10_CLASSES as CLASSES
from helpers import write_stl10
from src.data import DatasetError
from src.data import stl10 as stl10_module
from src.data.archive import download_archive
from src.data.stl10 import IMAGE_BYTES, STL10, load_stl10, load_stl10_splits

SIZES = {"train": 6, "test": 4, "unlabeled": 5}
FIRST_IMAGE = {"train": 0, "test": 6, "unlabeled": 10}  # so every image differs
DISK_LABELS = {"train": [1, 10, 3, 5, 2, 7], "test": [4, 10, 1, 9]}  # 1..10 on disk
UNREACHABLE = "http://127.0.0.1:9/stl10_binary.tar.gz"


def pattern(split: str) -> np.ndarray:
    """The HWC images of ``split``: pixel (row r, col c, channel k) of image i is a function of
    (i, r, c, k) that changes when r and c are swapped."""
    i, r, c, k = np.indices((SIZES[split], 96, 96, 3))
    return ((FIRST_IMAGE[split] + i) * 17 + r + 3 * c + 101 * k).astype(np.uint8)


def write_patterns(root: Path) -> Path:
    """A tiny stl10_binary folder (6 train, 4 test, 5 unlabeled images) in ``root``."""
    return write_stl10(root, {split: pattern(split) for split in SIZES}, DISK_LABELS)


@pytest.fixture
def root(tmp_path):
    return write_patterns(tmp_path / "data")


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def download_stl10(root: Path, url: str, md5: str = STL10.md5) -> Path:
    """``download_archive`` of STL-10 from a mirror (``url`` ends in the official name)."""
    return download_archive(dataclasses.replace(STL10, url=url, md5=md5), root)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("split", ["train", "test"])
def test_labeled_split_is_read_exactly_into_memory(root, split):
    data = load_stl10(root, split)
    assert type(data.images) is np.ndarray and data.images.flags.c_contiguous
    assert data.images.dtype == np.uint8 and data.images.shape == (SIZES[split], 96, 96, 3)
    np.testing.assert_array_equal(data.images, pattern(split))
    assert data.labels.dtype == np.int64
    assert data.labels.tolist() == [label - 1 for label in DISK_LABELS[split]]
    assert data.classes == CLASSES and data.num_classes == 10


def test_channels_are_column_major(root):
    raw = (root / STL10.folder / "train_X.bin").read_bytes()
    image = load_stl10(root).images[1]
    assert image[1, 0, 0] == raw[IMAGE_BYTES + 1]  # rows run fastest
    assert image[0, 1, 0] == raw[IMAGE_BYTES + 96]  # the next column
    assert image[0, 0, 1] == raw[IMAGE_BYTES + 96 * 96]  # the green plane
    assert image[95, 2, 2] == raw[IMAGE_BYTES + 2 * 96 * 96 + 2 * 96 + 95]


def test_unlabeled_split_is_a_read_only_memmap(root):
    data = load_stl10(root, "unlabeled")
    assert isinstance(data.images, np.memmap) and isinstance(data.subset(2).images, np.memmap)
    np.testing.assert_array_equal(data.images, pattern("unlabeled"))
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [-1] * 5
    assert data.classes == CLASSES
    with pytest.raises(ValueError, match="read-only"):
        data.images[0, 0, 0, 0] = 1


def test_splits_have_the_three_roles(root):
    splits = load_stl10_splits(root)
    pretrain, bank, queries = splits
    assert splits.pretrain is pretrain and splits.bank is bank and splits.queries is queries
    assert (len(pretrain), len(bank), len(queries)) == (5, 6, 4)
    assert isinstance(pretrain.images, np.memmap) and bank.labels.tolist()[:2] == [0, 9]


# --------------------------------------------------------------------------- refusals


def test_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as caught:
        load_stl10(tmp_path, "test")
    assert str(caught.value) == (
        f"stl10_binary not found in {tmp_path}: pass --download, "
        f"or extract stl10_binary.tar.gz there"
    )


@pytest.mark.parametrize("split", list(SIZES))
@pytest.mark.parametrize("change", [-1, 1, -IMAGE_BYTES * 10])
def test_images_file_of_a_wrong_size_is_named(root, split, change):
    path = root / STL10.folder / f"{split}_X.bin"
    size = max(0, SIZES[split] * IMAGE_BYTES + change)
    path.write_bytes(path.read_bytes()[:size].ljust(size, b"\0"))
    message = f"{path} has {size} bytes, not a positive multiple of 27648 (3 x 96 x 96): delete "
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_stl10(root, split)


@pytest.mark.parametrize("file", ["test_X.bin", "test_y.bin", "class_names.txt"])
def test_missing_file_is_named(root, file):
    path = root / STL10.folder / file
    path.unlink()
    with pytest.raises(DatasetError) as caught:
        load_stl10(root, "test")
    assert str(caught.value).startswith(
        f"{path} cannot be read (No such file or directory): "
        f"delete stl10_binary and pass --download"
    )


@pytest.mark.parametrize("labels, bounds", [([0, 1, 2, 3], "0, 3"), ([1, 11, 2, 3], "1, 11")])
def test_labels_outside_one_to_ten_are_refused(root, labels, bounds):
    (root / STL10.folder / "test_y.bin").write_bytes(bytes(labels))
    with pytest.raises(DatasetError, match=rf"test_y.bin has labels outside 1..10: \[{bounds}\]"):
        load_stl10(root, "test")


@pytest.mark.parametrize("count", [0, 3, 5])
def test_label_count_must_match_image_count(root, count):
    (root / STL10.folder / "test_y.bin").write_bytes(bytes([1] * count))
    with pytest.raises(DatasetError, match=f"has {count} labels for the 4 images of test_X.bin"):
        load_stl10(root, "test")


@pytest.mark.parametrize("names", [CLASSES[:9], CLASSES + ["zebra"], []])
def test_class_names_need_ten_lines(root, names):
    (root / STL10.folder / "class_names.txt").write_text("\n".join(names))
    message = f"class_names.txt has {len(names)} class names .non-empty lines., not 10"
    with pytest.raises(DatasetError, match=message):
        load_stl10(root, "unlabeled")


# --------------------------------------------------------------------------- download


@pytest.fixture
def archive(tmp_path):
    """A tiny stl10_binary.tar.gz in a mirror folder, and its md5."""
    source = write_patterns(tmp_path / "source")
    path = tmp_path / "mirror" / "stl10_binary.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source / STL10.folder, arcname=STL10.folder)
    return path, md5_of(path)


def test_download_from_file_url_verifies_and_extracts(tmp_path, archive):
    path, md5 = archive
    root = tmp_path / "data"
    assert download_stl10(root, url=path.as_uri(), md5=md5) == root / STL10.folder
    np.testing.assert_array_equal(load_stl10(root, "test").images, pattern("test"))
    assert sorted(p.name for p in root.iterdir()) == [STL10.folder, "stl10_binary.tar.gz"]
    download_stl10(root, url=UNREACHABLE)  # a complete folder: a no-op


def test_load_with_download_uses_the_archive(tmp_path, archive, monkeypatch):
    path, md5 = archive
    mirror = dataclasses.replace(STL10, url=path.as_uri(), md5=md5)
    monkeypatch.setattr(stl10_module, "STL10", mirror)
    pretrain, bank, _ = load_stl10_splits(tmp_path / "data", download=True)
    assert (len(pretrain), len(bank)) == (5, 6)


def test_downloaded_archive_with_wrong_md5_is_deleted(tmp_path, archive):
    path, md5 = archive
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as caught:
        download_stl10(root, url=path.as_uri())
    assert str(caught.value) == (
        f"{root / 'stl10_binary.tar.gz'} has md5 {md5}, expected "
        f"91f7769df0f17e558f3565bffb0c7dfb: it was deleted, pass --download to retry"
    )
    assert not list(root.iterdir())


def test_archive_without_the_unlabeled_images_is_rejected(tmp_path):
    source = write_patterns(tmp_path / "source")
    (source / STL10.folder / "unlabeled_X.bin").unlink()
    path = tmp_path / "stl10_binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source / STL10.folder, arcname=STL10.folder)
    with pytest.raises(DatasetError, match="lacks stl10_binary/unlabeled_X.bin: replace it"):
        download_stl10(tmp_path / "data", url=path.as_uri(), md5=md5_of(path))
