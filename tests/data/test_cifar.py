"""Tests of src.data.cifar and the registry: reader, safe unpickling, download and extraction."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import (
    CIFAR10_CLASSES,
    dump_cifar_pickle,
    hwc_to_planar_rows,
    real_cifar10_root,
    write_fake_cifar,
)
from src.data import DATASETS, DatasetError, ImageSplit, get_dataset, load_data
from src.data.archive import download_archive
from src.data.cifar import CIFAR, load_cifar, planar_rows_to_hwc
from src.utils.progress import logger, setup_logging

CIFAR10 = CIFAR["cifar10"]
ARCHIVE = CIFAR10.archive.name
UNREACHABLE = f"http://127.0.0.1:9/{ARCHIVE}"


def raw_batch(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def mirror(url: str, md5: str = CIFAR10.md5):
    """CIFAR-10's archive at another ``url`` (ending in the official name) and ``md5``."""
    return dataclasses.replace(CIFAR10.archive, url=url, md5=md5)


def download_cifar(root: Path, url: str, md5: str = CIFAR10.md5) -> Path:
    return download_archive(mirror(url, md5), root)


# --------------------------------------------------------------------------- registry


def test_registry_sizes_and_normalisation():
    cifar10, cifar100, stl10, folder = (
        DATASETS[name] for name in ("cifar10", "cifar100", "stl10", "folder")
    )
    assert list(DATASETS) == ["cifar10", "cifar100", "stl10", "folder"]
    assert (cifar10.mean, cifar10.std) == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert (cifar100.mean, cifar100.std) == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (stl10.mean, stl10.std) == (folder.mean, folder.std) == imagenet
    assert [info.image_size for info in DATASETS.values()] == [32, 32, 96, 32]
    assert get_dataset("stl10") is stl10


def test_cifar_files():
    assert ARCHIVE == "cifar-10-python.tar.gz"
    cifar100 = CIFAR["cifar100"]
    assert (cifar100.folder, cifar100.label_key, cifar100.num_classes) == (
        "cifar-100-python",
        "fine_labels",
        100,
    )


def test_unknown_dataset_lists_known_names():
    message = "unknown dataset 'mnist': use one of cifar10, cifar100, stl10, folder"
    with pytest.raises(DatasetError, match=message):
        get_dataset("mnist")


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_reader_shapes_dtypes_and_class_names(tmp_path, name):
    root = write_fake_cifar(tmp_path, name, n_train=40, n_test=12)
    train, test = load_cifar(name, root, "train"), load_cifar(name, root, "test")
    assert train.images.shape == (40, 32, 32, 3) and test.images.shape == (12, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    assert train.num_classes == CIFAR[name].num_classes == len(train.classes)
    expected_first = "airplane" if name == "cifar10" else "fine_class_00"
    assert train.classes[0] == expected_first


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_reader_converts_planar_rows_to_hwc_and_keeps_labels(tmp_path, name):
    root = write_fake_cifar(tmp_path, name, n_train=20, n_test=4)
    spec = CIFAR[name]
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
    rows = np.concatenate([raw["data"] for raw in raws])
    assert np.array_equal(hwc_to_planar_rows(split.images), rows)


def test_split_subset_and_size(tiny_cifar10):
    split = load_cifar("cifar10", tiny_cifar10, "test")
    first = split.subset(5)
    assert len(split) == 32 and len(first) == 5 and first.num_classes == 10
    assert np.array_equal(first.images, split.images[:5]) and first.classes == split.classes
    assert len(split.subset(1000)) == 32


def test_load_data_cuts_each_split_and_zero_means_all(tiny_cifar10):
    pretrain, train, test = load_data("cifar10", str(tiny_cifar10), train_subset=20, test_subset=7)
    assert (len(train), len(test)) == (20, 7) and pretrain is train
    _, full_train, full_test = load_data("cifar10", tiny_cifar10)
    assert (len(full_train), len(full_test)) == (64, 32)
    assert np.array_equal(full_train.images[:20], train.images)
    assert np.array_equal(full_test.labels[:7], test.labels)


@pytest.fixture(scope="module")
def real_root():
    return real_cifar10_root()


def test_real_cifar10_test_split(real_root):
    test = load_cifar("cifar10", real_root, "test")
    assert test.images.shape == (10000, 32, 32, 3)
    assert test.classes[test.labels[0]] == "cat"
    assert test.images[0, 0, :3, 0].tolist() == [158, 159, 165]
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_real_cifar10_train_split(real_root):
    train = load_cifar("cifar10", real_root, "train")
    assert train.images.shape == (50000, 32, 32, 3) and len(train.labels) == 50000
    assert train.classes[train.labels[0]] == "frog"
    assert tuple(train.images[0, 0, 0]) == (59, 62, 63)
    assert train.classes == CIFAR10_CLASSES


# --------------------------------------------------------------------------- missing data


def test_missing_folder_says_how_to_get_it(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as caught:
        load_cifar("cifar10", root)
    assert str(caught.value) == (
        f"cifar-10-batches-py not found in {root}: pass --download, "
        f"or extract cifar-10-python.tar.gz there"
    )


def test_missing_batch_file_is_named(tiny_cifar10):
    path = tiny_cifar10 / CIFAR10.folder / "data_batch_3"
    path.unlink()
    with pytest.raises(DatasetError) as caught:
        load_cifar("cifar10", tiny_cifar10)
    assert str(caught.value).startswith(
        f"{path} cannot be read (No such file or directory): "
        f"delete cifar-10-batches-py and pass --download"
    )


# --------------------------------------------------------------------------- corrupt data


def test_truncated_batch_file_names_the_file(tiny_cifar10):
    path = tiny_cifar10 / CIFAR10.folder / "data_batch_2"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="data_batch_2 is truncated or corrupt"):
        load_cifar("cifar10", tiny_cifar10)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", os.urandom(4096)])
def test_garbage_file_names_the_file(tiny_cifar10, content):
    (tiny_cifar10 / CIFAR10.folder / "test_batch").write_bytes(content)
    with pytest.raises(DatasetError, match="test_batch .*: delete cifar-10-batches-py"):
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
    with pytest.raises(DatasetError, match=f"{file} is unsafe: it asks for .*system"):
        load_cifar("cifar10", tiny_cifar10)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(eval, protocol=2),
        b"\x80\x02cbuiltins\nexec\nq\x00X\x01\x00\x00\x001q\x01\x85q\x02Rq\x03.",
        # Python 3 writes the array buffer of a protocol-2 pickle through _codecs.encode,
        # which the official (Python 2) files never use.
        pickle.dumps({"labels": [0], "data": np.zeros((1, 3072), np.uint8)}, protocol=2),
    ],
)
def test_other_globals_are_refused(tiny_cifar10, payload):
    (tiny_cifar10 / CIFAR10.folder / "test_batch").write_bytes(payload)
    with pytest.raises(DatasetError, match="test_batch is unsafe: it asks for"):
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


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"labels": [0] * 31 + [10]}, r"has 'labels' outside \[0, 10\): \[0, 10\]"),
        ({"labels": [-1] * 32}, r"has 'labels' outside \[0, 10\)"),
        ({"labels": [0] * 31}, r"has 32 images but 'labels' of shape \(31,\)"),
        ({"labels": []}, r"has 32 images but 'labels' of shape \(0,\)"),
        ({"labels": [0.5] * 32}, "has 'labels' that are not all integers"),
        ({"labels": ["cat"] * 32}, "has 'labels' that are not all integers"),
        ({"labels": [[0], [1, 2]] + [0] * 30}, "has 'labels' that are not all integers"),
        ({"labels": None}, "has no 'labels' entry"),
        ({"data": None}, "has no 'data' entry"),
        ({"data": np.zeros((32, 3071), np.uint8)}, r"has 'data' of uint8 \(32, 3071\), not uint8"),
        (
            {"data": np.zeros((32, 3072), np.float32)},
            r"has 'data' of float32 \(32, 3072\), not uint8",
        ),
        (
            {"data": np.zeros((32, 32, 32, 3), np.uint8)},
            r"has 'data' of uint8 \(32, 32, 32, 3\), not uint8 of shape \(N, 3072\)",
        ),
        ({"data": [[0] * 3072] * 32}, "has 'data' of list, not uint8"),
        ({"data": np.zeros((0, 3072), np.uint8), "labels": []}, "holds no images"),
    ],
)
def test_inconsistent_batch_contents_are_rejected(tiny_cifar10, changes, message):
    _rewrite_test_batch(tiny_cifar10, **changes)
    with pytest.raises(DatasetError, match=f"test_batch {message}.*: delete cifar-10-batches-py"):
        load_cifar("cifar10", tiny_cifar10, "test")


@pytest.mark.parametrize("names, got", [(["a", "b"], "2"), ("airplane", "str")])
def test_meta_with_wrong_class_names_is_rejected(tiny_cifar10, names, got):
    dump_cifar_pickle({"label_names": names}, tiny_cifar10 / CIFAR10.folder / "batches.meta")
    with pytest.raises(
        DatasetError, match=f"batches.meta has {got} class names in 'label_names', not 10"
    ):
        load_cifar("cifar10", tiny_cifar10, "test")


def test_non_dict_pickle_is_rejected(tiny_cifar10):
    dump_cifar_pickle([1, 2, 3], tiny_cifar10 / CIFAR10.folder / "test_batch")
    with pytest.raises(DatasetError, match="test_batch holds a list, not a dict"):
        load_cifar("cifar10", tiny_cifar10, "test")


# --------------------------------------------------------------------------- download


def _make_archive(source_root: Path, archive: Path, extra: tarfile.TarInfo | None = None) -> str:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_root / CIFAR10.folder, arcname=CIFAR10.folder)
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size))
    return md5_of(archive)


@pytest.fixture
def tiny_archive(tmp_path):
    source = write_fake_cifar(tmp_path / "source", n_train=10, n_test=5)
    archive = tmp_path / "mirror" / ARCHIVE
    archive.parent.mkdir()
    return archive, _make_archive(source, archive)


def test_download_from_file_url_verifies_and_extracts(tmp_path, tiny_archive):
    archive, md5 = tiny_archive
    root = tmp_path / "data"
    folder = download_cifar(root, archive.as_uri(), md5)
    assert folder == root / CIFAR10.folder
    assert len(load_cifar("cifar10", root, "train")) == 10
    assert not list(root.glob(".extract-*")) and not list(root.glob("*.part"))
    # A complete folder makes both download paths a no-op, even with an unusable URL.
    download_cifar(root, UNREACHABLE)
    assert len(load_cifar("cifar10", root, "test", download=True)) == 5


def test_incomplete_folder_is_replaced_on_download(tmp_path, tiny_archive):
    archive, md5 = tiny_archive
    root = tmp_path / "data"
    download_cifar(root, archive.as_uri(), md5)
    (root / CIFAR10.folder / "data_batch_4").unlink()
    download_cifar(root, UNREACHABLE, md5)  # the archive is kept in root
    assert len(load_cifar("cifar10", root)) == 10


def test_pre_placed_archive_is_used_without_network(tmp_path, tiny_archive):
    archive, md5 = tiny_archive
    root = tmp_path / "data"
    root.mkdir()
    (root / ARCHIVE).write_bytes(archive.read_bytes())
    download_cifar(root, UNREACHABLE, md5)
    assert len(load_cifar("cifar10", root, "test")) == 5


def test_downloaded_archive_with_wrong_md5_is_deleted(tmp_path, tiny_archive):
    archive, md5 = tiny_archive
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as caught:
        download_cifar(root, archive.as_uri())
    assert str(caught.value) == (
        f"{root / ARCHIVE} has md5 {md5}, expected "
        f"{CIFAR10.md5}: it was deleted, pass --download to retry"
    )
    assert not (root / ARCHIVE).exists() and not (root / CIFAR10.folder).exists()


def test_pre_placed_archive_with_wrong_md5_is_not_used(tmp_path, tiny_archive):
    archive, _ = tiny_archive
    root = tmp_path / "data"
    root.mkdir()
    (root / ARCHIVE).write_bytes(archive.read_bytes())
    with pytest.raises(DatasetError, match=f"expected {CIFAR10.md5}: it was not used"):
        load_cifar("cifar10", root, download=True)
    assert (root / ARCHIVE).exists() and not (root / CIFAR10.folder).exists()


def test_unreachable_url_gives_manual_instructions(tmp_path):
    with pytest.raises(DatasetError) as caught:
        download_cifar(tmp_path, UNREACHABLE)
    message = str(caught.value)
    assert message.startswith(f"cannot download {UNREACHABLE} (")
    assert message.endswith(f"put cifar-10-python.tar.gz (md5 {CIFAR10.md5}) in {tmp_path}")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("member_name", ["../evil", f"{CIFAR10.folder}/../../evil"])
def test_archive_members_outside_the_folder_are_refused(tmp_path, member_name):
    source = write_fake_cifar(tmp_path / "source", n_train=5, n_test=5)
    archive = tmp_path / "bad" / ARCHIVE
    archive.parent.mkdir()
    member = tarfile.TarInfo(member_name)
    member.size = 1
    md5 = _make_archive(source, archive, member)
    root = tmp_path / "a" / "b" / "data"
    with pytest.raises(DatasetError, match=r"cannot extract .*\(OutsideDestinationError: .*evil"):
        download_cifar(root, archive.as_uri(), md5)
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "a" / "b" / "evil").exists()
    assert not (root / CIFAR10.folder).exists() and not list(root.glob(".extract-*"))


def test_absolute_member_stays_inside_the_staging_folder(tmp_path):
    source = write_fake_cifar(tmp_path / "source", n_train=5, n_test=5)
    archive = tmp_path / "absolute" / ARCHIVE
    archive.parent.mkdir()
    target = tmp_path / "evil"
    member = tarfile.TarInfo(str(target))
    member.size = 1
    md5 = _make_archive(source, archive, member)
    download_cifar(tmp_path / "data", archive.as_uri(), md5)
    assert not target.exists() and len(load_cifar("cifar10", tmp_path / "data")) == 5
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert names == [CIFAR10.folder, ARCHIVE]


@pytest.mark.parametrize("link", ["/etc", "../../.."])
def test_archive_with_escaping_symlink_is_refused(tmp_path, link):
    source = write_fake_cifar(tmp_path / "source", n_train=5, n_test=5)
    archive = tmp_path / "link" / ARCHIVE
    archive.parent.mkdir()
    member = tarfile.TarInfo(f"{CIFAR10.folder}/escape")
    member.type, member.linkname = tarfile.SYMTYPE, link
    md5 = _make_archive(source, archive, member)
    with pytest.raises(DatasetError, match=r"cannot extract .*\(\w*Link\w*Error: .*escape"):
        download_cifar(tmp_path / "data", archive.as_uri(), md5)
    assert not (tmp_path / "data" / CIFAR10.folder).exists()


def test_python_without_tar_data_filter_refuses_to_extract(tmp_path, tiny_archive, monkeypatch):
    archive, md5 = tiny_archive
    monkeypatch.delattr(tarfile, "data_filter")
    with pytest.raises(DatasetError, match="cannot extract .* safely"):
        download_cifar(tmp_path / "data", archive.as_uri(), md5)
    assert not (tmp_path / "data" / CIFAR10.folder).exists()


def test_archive_without_the_data_files_is_rejected(tmp_path):
    archive = tmp_path / "empty" / ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz"):
        pass
    message = f"{ARCHIVE} lacks {CIFAR10.folder}/data_batch_1, data_batch_2, "
    with pytest.raises(DatasetError, match=message):
        download_cifar(tmp_path / "data", archive.as_uri(), md5_of(archive))


def test_corrupt_archive_is_rejected(tmp_path):
    archive = tmp_path / "corrupt" / ARCHIVE
    archive.parent.mkdir()
    archive.write_bytes(b"\x1f\x8b" + os.urandom(500))
    with pytest.raises(DatasetError) as caught:
        download_cifar(tmp_path / "data", archive.as_uri(), md5_of(archive))
    assert str(caught.value) == (
        f"cannot extract {tmp_path / 'data' / ARCHIVE} "
        f"(ReadError: file could not be opened successfully): "
        f"delete it and pass --download again"
    )


def test_hand_built_split_needs_no_file():
    split = ImageSplit(np.zeros((3, 32, 32, 3), np.uint8), np.array([0, 1, 1]), ["a", "b"])
    assert (len(split), split.num_classes, len(split.subset(2))) == (3, 2, 2)


@pytest.fixture
def moco_logger():
    """Restores the ``moco`` logger that a test configures with ``setup_logging``."""
    saved = logger.handlers[:], logger.level, logger.propagate
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


def test_download_is_logged_to_stderr(tmp_path, tiny_archive, monkeypatch, moco_logger, capfd):
    archive, md5 = tiny_archive
    monkeypatch.setitem(
        CIFAR, "cifar10", dataclasses.replace(CIFAR10, url=archive.as_uri(), md5=md5)
    )
    setup_logging()
    splits = load_data("cifar10", tmp_path / "data", download=True)
    assert (len(splits.bank), len(splits.queries)) == (10, 5)
    assert (
        f"downloading {archive.as_uri()} to {tmp_path / 'data' / ARCHIVE}" in capfd.readouterr().err
    )
