"""Property-based tests: whatever a batch file holds, the reader answers with a DatasetError
that names the file."""

import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import dump_cifar_pickle, write_fake_cifar
from src.data import DatasetError
from src.data.cifar import load_cifar

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, n_train=10, n_test=5)
    return root


def batch_path(root):
    return root / "cifar-10-batches-py" / "test_batch"


def valid_batch(n=5):
    rng = np.random.default_rng(0)
    return {
        "batch_label": "testing batch 1 of 1",
        "labels": list(range(n)),
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"f{i}.png" for i in range(n)],
    }


def assert_refused(root, write):
    original = batch_path(root).read_bytes()
    try:
        write(batch_path(root))
        with pytest.raises(DatasetError, match=f"^{batch_path(root)} "):
            load_cifar("cifar10", root, "test")
    finally:
        batch_path(root).write_bytes(original)


@SETTINGS
@given(cut=st.floats(0.0, 0.999))
def test_truncated_file(clean_root, cut):
    original = batch_path(clean_root).read_bytes()
    assert_refused(clean_root, lambda p: p.write_bytes(original[: int(len(original) * cut)]))


@SETTINGS
@given(raw=st.binary(max_size=512))
def test_arbitrary_bytes(clean_root, raw):
    assert_refused(clean_root, lambda p: p.write_bytes(raw))


@SETTINGS
@given(
    rows=st.integers(0, 7),
    cols=st.integers(0, 3100).filter(lambda c: c != 3072),
    dtype=st.sampled_from(["uint8", "int64", "float32", "uint16"]),
)
def test_wrong_shape(clean_root, rows, cols, dtype):
    content = valid_batch()
    content["data"] = np.zeros((rows, cols), dtype=dtype)
    assert_refused(clean_root, lambda p: dump_cifar_pickle(content, p))


@SETTINGS
@given(dtype=st.sampled_from(["int8", "int16", "int32", "uint16", "float32", "float64", "bool"]))
def test_wrong_dtype(clean_root, dtype):
    content = valid_batch()
    content["data"] = content["data"].astype(dtype)
    assert_refused(clean_root, lambda p: dump_cifar_pickle(content, p))


@SETTINGS
@given(key=st.sampled_from(["labels", "data"]))
def test_missing_key(clean_root, key):
    content = valid_batch()
    del content[key]
    assert_refused(clean_root, lambda p: dump_cifar_pickle(content, p))


@SETTINGS
@given(
    labels=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=5, max_size=5).filter(
        lambda ls: min(ls) < 0 or max(ls) > 9
    )
)
def test_labels_out_of_range(clean_root, labels):
    content = valid_batch()
    content["labels"] = labels
    assert_refused(clean_root, lambda p: dump_cifar_pickle(content, p))


@SETTINGS
@given(
    n_labels=st.integers(0, 9).filter(lambda n: n != 5),
    kind=st.sampled_from(["ints", "floats", "strings", "nested"]),
)
def test_labels_of_wrong_length_or_type(clean_root, n_labels, kind):
    content = valid_batch()
    labels = {
        "ints": list(range(n_labels)),
        "floats": [0.5] * 5,
        "strings": ["cat"] * 5,
        "nested": [[0, 1]] * 3 + [[2]] * 2,
    }[kind]
    content["labels"] = labels
    assert_refused(clean_root, lambda p: dump_cifar_pickle(content, p))


@SETTINGS
@given(
    value=st.one_of(
        st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=5), st.none()
    )
)
def test_not_a_dict(clean_root, value):
    assert_refused(clean_root, lambda p: p.write_bytes(pickle.dumps(value, protocol=2)))


def test_empty_batch(clean_root):
    content = valid_batch(0)
    assert_refused(clean_root, lambda p: dump_cifar_pickle(content, p))
