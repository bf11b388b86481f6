"""Tests for src.data: CIFAR readers, safe unpickling, download, transforms, pipelines."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import mindspore.dataset.transforms as ms_transforms
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import dump_cifar_pickle, hwc_to_planar_rows, real_cifar10_root, write_fake_cifar
from src.data import (
    DATASETS,
    ChecksumError,
    CifarSplit,
    DatasetError,
    DatasetNotFoundError,
    DownloadError,
    UnsafePickleError,
    create_eval_dataset,
    create_train_dataset,
    download_cifar,
    epoch_order,
    get_dataset_spec,
    load_cifar,
    test_transforms,
    train_transforms,
)
from src.data.cifar import planar_rows_to_hwc
from src.data.loaders import augmentation_seed, two_view_dataset
from src.data.transforms import random_grayscale

CIFAR10 = get_dataset_spec("cifar10")
MEAN = np.array(CIFAR10.mean, dtype=np.float32)
STD = np.array(CIFAR10.std, dtype=np.float32)


def raw_batch(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


def batches(dataset, columns):
    return [tuple(row[c] for c in columns)
            for row in dataset.create_dict_iterator(num_epochs=1, output_numpy=True)]


def tiny_split(n: int = 48, seed: int = 0) -> CifarSplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return CifarSplit(images=images, labels=np.arange(n) % 10, classes=[str(i) for i in range(10)])


def numpy_normalise(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)


# --------------------------------------------------------------------------- registry


def test_registry_holds_both_datasets_with_demo_normalisation():
    assert set(DATASETS) == {"cifar10", "cifar100"}
    assert CIFAR10.mean == (0.4914, 0.4822, 0.4465) and CIFAR10.std == (0.2023, 0.1994, 0.2010)
    assert CIFAR10.archive_name == "cifar-10-python.tar.gz"
    cifar100 = get_dataset_spec("cifar100")
    assert (cifar100.folder, cifar100.label_key, cifar100.num_classes) == (
        "cifar-100-python", "fine_labels", 100)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DatasetError, match="cifar10, cifar100"):
        get_dataset_spec("mnist")


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_reader_shapes_dtypes_and_class_names(tmp_path, name):
    root = write_fake_cifar(tmp_path, name, n_train=40, n_test=12)
    train, test = load_cifar(name, root, "train"), load_cifar(name, root, "test")
    assert train.images.shape == (40, 32, 32, 3) and test.images.shape == (12, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    assert train.num_classes == DATASETS[name].num_classes == len(train.classes)
    expected_first = "airplane" if name == "cifar10" else "fine_class_00"
    assert train.classes[0] == expected_first


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_reader_converts_planar_rows_to_hwc_and_keeps_labels(tmp_path, name):
    root = write_fake_cifar(tmp_path, name, n_train=20, n_test=4)
    spec = get_dataset_spec(name)
    raw = raw_batch(root / spec.folder / spec.train_files[0])
    split = load_cifar(name, root, "train")
    data = raw["data"]
    for index, y, x, channel in [(0, 0, 0, 0), (1, 5, 17, 1), (2, 31, 3, 2), (1, 31, 31, 2)]:
        assert split.images[index, y, x, channel] == data[index, channel * 1024 + y * 32 + x]
    # CIFAR-100 must use the fine labels, not the coarse ones.
    assert split.labels[: len(data)].tolist() == raw[spec.label_key]


@settings(max_examples=25, deadline=None, database=None)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(0, 3), st.just(32), st.just(32), st.just(3))))
def test_planar_conversion_round_trips(images):
    np.testing.assert_array_equal(planar_rows_to_hwc(hwc_to_planar_rows(images)), images)


def test_fake_data_carries_class_signal(tmp_path):
    root = write_fake_cifar(tmp_path, n_train=100, n_test=50)
    train, test = load_cifar("cifar10", root, "train"), load_cifar("cifar10", root, "test")
    train_colours, test_colours = train.images.mean(axis=(1, 2)), test.images.mean(axis=(1, 2))
    distances = ((test_colours[:, None] - train_colours[None]) ** 2).sum(-1)
    accuracy = (train.labels[distances.argmin(1)] == test.labels).mean()
    assert accuracy > 0.9  # chance is 0.1


def test_cifar10_train_split_concatenates_five_batches_in_order(tmp_path):
    root = write_fake_cifar(tmp_path, n_train=23, n_test=5)
    raws = [raw_batch(root / CIFAR10.folder / file) for file in CIFAR10.train_files]
    split = load_cifar("cifar10", root)
    assert split.labels.tolist() == sum((raw["labels"] for raw in raws), [])
    assert np.array_equal(hwc_to_planar_rows(split.images), np.concatenate([r["data"] for r in raws]))


@pytest.fixture(scope="module")
def real_root():
    return real_cifar10_root()


def test_real_cifar10_test_split(real_root):
    test = load_cifar("cifar10", real_root, "test", verify=True)
    assert test.images.shape == (10000, 32, 32, 3)
    assert test.classes[test.labels[0]] == "cat"
    assert test.images[0, 0, :3, 0].tolist() == [158, 159, 165]
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_real_cifar10_train_split(real_root):
    train = load_cifar("cifar10", real_root, "train")
    assert train.images.shape == (50000, 32, 32, 3) and len(train.labels) == 50000
    assert train.classes[train.labels[0]] == "frog"
    assert tuple(train.images[0, 0, 0]) == (59, 62, 63)
    assert train.classes == ["airplane", "automobile", "bird", "cat", "deer",
                             "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- missing data


def test_missing_folder_explains_download_and_manual_placement(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_cifar("cifar10", tmp_path / "data")
    message = str(caught.value)
    assert "--download" in message and CIFAR10.url in message and CIFAR10.archive_md5 in message
    assert str(tmp_path / "data" / "cifar-10-batches-py") in message


def test_missing_batch_file_is_named(tiny_cifar10):
    (tiny_cifar10 / CIFAR10.folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        load_cifar("cifar10", tiny_cifar10)


def test_unknown_split(tiny_cifar10):
    with pytest.raises(DatasetError, match="'val'"):
        load_cifar("cifar10", tiny_cifar10, "val")


# --------------------------------------------------------------------------- corrupt data


def test_truncated_batch_file_names_the_file(tiny_cifar10):
    path = tiny_cifar10 / CIFAR10.folder / "data_batch_2"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="data_batch_2.*truncated or corrupt"):
        load_cifar("cifar10", tiny_cifar10)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", os.urandom(4096)])
def test_garbage_file_names_the_file(tiny_cifar10, content):
    (tiny_cifar10 / CIFAR10.folder / "test_batch").write_bytes(content)
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar("cifar10", tiny_cifar10, "test")


class _CreatesMarkerFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("file", ["data_batch_1", "batches.meta"])
def test_malicious_pickle_is_refused_without_running(tiny_cifar10, tmp_path, file):
    marker = tmp_path / "pwned"
    payload = {"data": _CreatesMarkerFile(marker), "labels": [], "label_names": []}
    (tiny_cifar10 / CIFAR10.folder / file).write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafePickleError, match=f"{file}.*refusing to load global .*system"):
        load_cifar("cifar10", tiny_cifar10)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(eval, protocol=2),
    b"\x80\x02cbuiltins\nexec\nq\x00X\x01\x00\x00\x001q\x01\x85q\x02Rq\x03.",
    # Python 3 writes the array buffer of a protocol-2 pickle through _codecs.encode,
    # which the official (Python 2) files never use.
    pickle.dumps({"labels": [0], "data": np.zeros((1, 3072), np.uint8)}, protocol=2),
])
def test_other_globals_are_refused(tiny_cifar10, payload):
    (tiny_cifar10 / CIFAR10.folder / "test_batch").write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        load_cifar("cifar10", tiny_cifar10, "test")


def _rewrite_test_batch(root: Path, **changes) -> None:
    path = root / CIFAR10.folder / "test_batch"
    batch = raw_batch(path)
    for key, value in changes.items():
        if value is None:
            del batch[key]
        else:
            batch[key] = value
    dump_cifar_pickle(batch, path)


@pytest.mark.parametrize("changes, message", [
    ({"labels": [0] * 31 + [10]}, r"labels must lie in \[0, 10\)"),
    ({"labels": [-1] * 32}, r"labels must lie in \[0, 10\)"),
    ({"labels": [0] * 31}, "32 images but 'labels'"),
    ({"labels": [0.5] * 32}, "'labels' must be a list of integers"),
    ({"labels": [[0], [1, 2]] + [0] * 30}, "'labels' must be a list of integers"),
    ({"labels": None}, "no 'labels' entry"),
    ({"data": None}, "no 'data' entry"),
    ({"data": np.zeros((32, 3071), np.uint8)}, r"shape \(N, 3072\)"),
    ({"data": np.zeros((32, 3072), np.float32)}, "uint8"),
    ({"data": np.zeros((32, 32, 32, 3), np.uint8)}, r"shape \(N, 3072\)"),
])
def test_inconsistent_batch_contents_are_rejected(tiny_cifar10, changes, message):
    _rewrite_test_batch(tiny_cifar10, **changes)
    with pytest.raises(DatasetError, match=f"test_batch.*{message}"):
        load_cifar("cifar10", tiny_cifar10, "test")


def test_meta_with_wrong_class_count_is_rejected(tiny_cifar10):
    dump_cifar_pickle({"label_names": ["a", "b"]}, tiny_cifar10 / CIFAR10.folder / "batches.meta")
    with pytest.raises(DatasetError, match="batches.meta.*10 class names"):
        load_cifar("cifar10", tiny_cifar10, "test")


def test_non_dict_pickle_is_rejected(tiny_cifar10):
    dump_cifar_pickle([1, 2, 3], tiny_cifar10 / CIFAR10.folder / "test_batch")
    with pytest.raises(DatasetError, match="test_batch holds a list"):
        load_cifar("cifar10", tiny_cifar10, "test")


def test_verify_detects_files_that_are_not_the_official_ones(tiny_cifar10):
    with pytest.raises(ChecksumError, match="test_batch has md5 .* expected 40351d58"):
        load_cifar("cifar10", tiny_cifar10, "test", verify=True)


def test_hand_built_split_is_validated():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    assert CifarSplit(images, np.array([0, 1], np.int64), ["a", "b"]).labels.dtype == np.int32
    with pytest.raises(DatasetError, match="labels must lie"):
        CifarSplit(images, np.array([0, 2]), ["a", "b"])
    with pytest.raises(DatasetError, match="uint8"):
        CifarSplit(images.astype(np.float32), np.array([0, 1]), ["a", "b"])


# --------------------------------------------------------------------------- download


def _make_archive(source_root: Path, archive: Path, extra_member: tarfile.TarInfo = None) -> str:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_root / CIFAR10.folder, arcname=CIFAR10.folder)
        if extra_member is not None:
            tar.addfile(extra_member, io.BytesIO(b"x" * extra_member.size))
    return hashlib.md5(archive.read_bytes()).hexdigest()


@pytest.fixture
def tiny_archive(tmp_path):
    source = write_fake_cifar(tmp_path / "source", n_train=10, n_test=5)
    archive = tmp_path / "mirror" / CIFAR10.archive_name
    archive.parent.mkdir()
    return archive, _make_archive(source, archive)


def test_download_from_file_url_verifies_and_extracts(tmp_path, tiny_archive):
    archive, md5 = tiny_archive
    root = tmp_path / "data"
    folder = download_cifar("cifar10", root, url=archive.as_uri(), md5=md5)
    assert folder == root / CIFAR10.folder
    assert len(load_cifar("cifar10", root, "train")) == 10
    assert not list(root.glob(".extract-*")) and not list(root.glob("*.part"))
    # A complete folder makes both download paths a no-op, even with an unusable URL.
    download_cifar("cifar10", root, url="http://127.0.0.1:9/x.tar.gz")
    assert len(load_cifar("cifar10", root, "test", download=True)) == 5


def test_pre_placed_archive_is_used_without_network(tmp_path, tiny_archive):
    archive, md5 = tiny_archive
    root = tmp_path / "data"
    root.mkdir()
    (root / CIFAR10.archive_name).write_bytes(archive.read_bytes())
    download_cifar("cifar10", root, url="http://127.0.0.1:9/unused.tar.gz", md5=md5)
    assert len(load_cifar("cifar10", root, "test")) == 5


def test_downloaded_archive_with_wrong_md5_is_deleted(tmp_path, tiny_archive):
    archive, md5 = tiny_archive
    root = tmp_path / "data"
    with pytest.raises(ChecksumError) as caught:
        download_cifar("cifar10", root, url=archive.as_uri())
    assert f"has md5 {md5}, expected {CIFAR10.archive_md5}" in str(caught.value)
    assert not (root / CIFAR10.archive_name).exists() and not (root / CIFAR10.folder).exists()


def test_pre_placed_archive_with_wrong_md5_is_not_used(tmp_path, tiny_archive):
    archive, md5 = tiny_archive
    root = tmp_path / "data"
    root.mkdir()
    (root / CIFAR10.archive_name).write_bytes(archive.read_bytes())
    with pytest.raises(ChecksumError, match=f"expected {CIFAR10.archive_md5}.*not used"):
        load_cifar("cifar10", root, download=True)
    assert not (root / CIFAR10.folder).exists()


def test_unreachable_url_gives_manual_instructions(tmp_path):
    url = "http://127.0.0.1:9/x.tar.gz"
    with pytest.raises(DownloadError) as caught:
        download_cifar("cifar10", tmp_path, url=url, timeout=5)
    message = str(caught.value)
    assert url in message and CIFAR10.archive_md5 in message and str(tmp_path) in message
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("member_name", ["../evil", f"{CIFAR10.folder}/../../evil", "/tmp/evil"])
def test_archive_members_outside_the_folder_are_never_written(tmp_path, member_name):
    source = write_fake_cifar(tmp_path / "source", n_train=5, n_test=5)
    archive = tmp_path / "bad.tar.gz"
    member = tarfile.TarInfo(member_name)
    member.size = 1
    md5 = _make_archive(source, archive, member)
    root = tmp_path / "a" / "b" / "data"
    try:
        download_cifar("cifar10", root, url=archive.as_uri(), md5=md5)
    except DatasetError:
        pass  # refusing is as good as skipping
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "a" / "b" / "evil").exists()
    assert not Path("/tmp/evil").exists()


def test_archive_with_symlink_is_refused(tmp_path):
    source = write_fake_cifar(tmp_path / "source", n_train=5, n_test=5)
    archive = tmp_path / "link.tar.gz"
    member = tarfile.TarInfo(f"{CIFAR10.folder}/escape")
    member.type, member.linkname = tarfile.SYMTYPE, "/etc"
    md5 = _make_archive(source, archive, member)
    with pytest.raises(DatasetError, match="refusing to extract"):
        download_cifar("cifar10", tmp_path / "data", url=archive.as_uri(), md5=md5)
    assert not (tmp_path / "data" / CIFAR10.folder).exists()


def test_archive_without_the_data_files_is_rejected(tmp_path):
    archive = tmp_path / "empty.tar.gz"
    with tarfile.open(archive, "w:gz"):
        pass
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="lacks data_batch_1"):
        download_cifar("cifar10", tmp_path / "data", url=archive.as_uri(), md5=md5)


def test_corrupt_archive_is_rejected(tmp_path):
    archive = tmp_path / "corrupt.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + os.urandom(500))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="Cannot extract"):
        download_cifar("cifar10", tmp_path / "data", url=archive.as_uri(), md5=md5)


# --------------------------------------------------------------------------- transforms


def test_test_transform_is_exact_normalisation():
    images = tiny_split(4).images
    op = ms_transforms.Compose(test_transforms(CIFAR10.mean, CIFAR10.std))
    outputs = np.stack([op(image) for image in images])
    assert outputs.dtype == np.float32 and outputs.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(outputs, numpy_normalise(images), rtol=0, atol=1e-5)


def test_train_transform_output_is_normalised_chw_float():
    op = ms_transforms.Compose(train_transforms(CIFAR10.mean, CIFAR10.std))
    # Per channel, (x - mean) / std for x in [0, 1].
    lowest, highest = (-MEAN / STD)[:, None, None], ((1 - MEAN) / STD)[:, None, None]
    for image in tiny_split(8).images:
        view = op(image)
        assert view.shape == (3, 32, 32) and view.dtype == np.float32
        assert np.all(view >= lowest - 1e-4) and np.all(view <= highest + 1e-4)
        assert view.std() > 0.05  # not collapsed to a constant


def test_random_grayscale_keeps_three_equal_channels():
    image = tiny_split(1).images[0]
    grey = random_grayscale(1.0)(image)
    assert grey.shape == (32, 32, 3) and grey.dtype == np.uint8
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 0], grey[..., 2])
    luminance = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey[..., 0] - luminance).max() <= 1.0
    assert np.array_equal(random_grayscale(0.0)(image), image)


# --------------------------------------------------------------------------- pipelines


def test_train_batches_shape_count_and_distinct_views():
    split = tiny_split(48)
    dataset = create_train_dataset(split, CIFAR10.mean, CIFAR10.std, batch_size=20, seed=0, epoch=0)
    assert dataset.get_dataset_size() == 2
    out = batches(dataset, ("im_1", "im_2"))
    assert len(out) == 48 // 20
    for im_1, im_2 in out:
        assert im_1.shape == im_2.shape == (20, 3, 32, 32)
        assert im_1.dtype == im_2.dtype == np.float32
        assert all(not np.array_equal(a, b) for a, b in zip(im_1, im_2, strict=True))


def test_train_batches_are_a_pure_function_of_seed_and_epoch():
    split = tiny_split(48)

    def run(seed, epoch):
        return np.stack([np.stack(pair) for pair in batches(
            create_train_dataset(split, CIFAR10.mean, CIFAR10.std, 16, seed, epoch), ("im_1", "im_2"))])

    first = run(3, 1)
    later_dataset = create_train_dataset(split, CIFAR10.mean, CIFAR10.std, 16, 3, 1)
    create_eval_dataset(split, CIFAR10.mean, CIFAR10.std, 16)  # sets no seed: harmless
    again = np.stack([np.stack(pair) for pair in batches(later_dataset, ("im_1", "im_2"))])
    assert np.array_equal(first, again)
    assert not np.array_equal(first, run(3, 2))
    assert not np.array_equal(first, run(4, 1))


def test_views_pair_up_with_the_epoch_order():
    split = tiny_split(30)
    order = epoch_order(30, seed=5, epoch=2)
    assert sorted(order) == list(range(30)) and np.array_equal(order, epoch_order(30, 5, 2))
    dataset = two_view_dataset(split.images, order, test_transforms(CIFAR10.mean, CIFAR10.std), 8)
    im_1 = np.concatenate([pair[0] for pair in batches(dataset, ("im_1", "im_2"))])
    im_2 = np.concatenate([pair[1] for pair in batches(dataset, ("im_1", "im_2"))])
    assert len(im_1) == 24
    np.testing.assert_allclose(im_1, numpy_normalise(split.images[order[:24]]), atol=1e-5)
    np.testing.assert_array_equal(im_1, im_2)


def test_augmentation_seed_differs_by_epoch_and_avoids_mindspore_unset_value():
    seeds = {augmentation_seed(0, epoch) for epoch in range(200)}
    assert len(seeds) == 200 and 5489 not in seeds
    assert all(0 <= seed < 2**32 for seed in seeds)


@pytest.mark.parametrize("batch_size, message", [(49, "larger than the training split"),
                                                 (0, "positive integer")])
def test_bad_train_batch_size(batch_size, message):
    with pytest.raises(DatasetError, match=message):
        create_train_dataset(tiny_split(48), CIFAR10.mean, CIFAR10.std, batch_size, 0, 0)


def test_eval_dataset_returns_every_image_in_order(tiny_cifar100):
    split = load_cifar("cifar100", tiny_cifar100, "test")
    spec = get_dataset_spec("cifar100")
    out = batches(create_eval_dataset(split, spec.mean, spec.std, batch_size=10), ("image", "label"))
    assert [len(labels) for _, labels in out] == [10, 10, 10, 2]
    images = np.concatenate([image for image, _ in out])
    labels = np.concatenate([label for _, label in out])
    assert images.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, split.labels)
    expected = ((split.images / 255.0 - np.array(spec.mean)) / np.array(spec.std)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(images, expected, atol=1e-5)
