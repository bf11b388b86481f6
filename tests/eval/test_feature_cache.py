"""Tests for src.eval.feature_cache: keys, hits, misses, unreadable entries."""

import os

import numpy as np

from src.eval.feature_cache import FeatureCache


def test_feature_cache_keys(tmp_path):
    checkpoint = tmp_path / "model_last.ckpt"
    checkpoint.write_bytes(b"weights")
    cache = FeatureCache(str(tmp_path), str(checkpoint))
    calls = []

    def compute():
        calls.append(1)
        return {"embedding": np.full((3, 2), len(calls), np.float32)}

    key = cache.key("train", images=3)
    first, first_loaded = cache.get_or_compute("cifar10-train", key, compute)
    again, again_loaded = cache.get_or_compute(
        "cifar10-train", cache.key("train", images=3), compute
    )
    assert (first_loaded, again_loaded, len(calls)) == (False, True, 1)
    np.testing.assert_array_equal(again["embedding"], first["embedding"])
    assert os.path.isfile(tmp_path / "features-model_last-cifar10-train.npz")

    assert not cache.get_or_compute("cifar10-train", cache.key("train", images=4), compute)[1]
    os.utime(checkpoint, ns=(1, 1))  # main.py rewrote the checkpoint
    assert not cache.get_or_compute("cifar10-train", cache.key("train", images=4), compute)[1]
    with open(cache.path("cifar10-train"), "wb") as f:
        f.write(b"truncated")
    assert not cache.get_or_compute("cifar10-train", cache.key("train", images=4), compute)[1]
    assert len(calls) == 4


def test_an_unwritable_cache_only_warns(tmp_path, caplog):
    checkpoint = tmp_path / "model_last.ckpt"
    checkpoint.write_bytes(b"weights")
    cache = FeatureCache("/dev/null/cache", str(checkpoint))
    arrays, loaded = cache.get_or_compute("x", cache.key("train"), lambda: {"a": np.zeros(2)})
    assert not loaded and arrays["a"].shape == (2,)
