"""Atomic checkpoints; restoring checks the model fits."""

import json
import os
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from helpers import TINY_MODEL
from src.eval.evaluate import restore_encoder
from src.models import MoCo
from src.train import checkpoint as ckpt
from src.train.step import MoCoTrainStep, create_optimizer


def config(**overrides):
    return {**TINY_MODEL, **overrides}


def build(seed=0, **overrides):
    args = config(**overrides)
    ms.set_seed(seed)
    model = MoCo(
        args["moco_dim"], args["moco_k"], bn_splits=args["bn_splits"], seed=seed, mlp=args["mlp"]
    )
    return MoCoTrainStep(model, create_optimizer(model, 0.1, 1e-4)), args


def test_round_trip_restores_everything(tmp_path):
    step, args = build(seed=0)
    step.model.queue_ptr.set_data(ms.Tensor([16], ms.int32))
    path = str(tmp_path / "model_last.ckpt")
    ckpt.save_checkpoint(step, path, epoch=7, model=args)
    assert os.listdir(tmp_path) == ["model_last.ckpt"]  # no temporary file left

    other, _ = build(seed=1)
    assert ckpt.load_checkpoint(other, path, args) == 7
    saved = {p.name: p.asnumpy() for p in step.get_parameters()}
    restored = {p.name: p.asnumpy() for p in other.get_parameters()}
    assert "queue" in restored and "queue_ptr" in restored
    assert not [name for name in ms.load_checkpoint(path) if ckpt.SCRATCH_PREFIX in name]
    assert any(name.startswith("moments.") for name in restored)  # optimizer state
    for name, value in saved.items():
        if ckpt.SCRATCH_PREFIX not in name:
            np.testing.assert_array_equal(restored[name], value, err_msg=name)


def test_checkpoint_from_another_model_is_refused(tmp_path):
    step, args = build()
    path = str(tmp_path / "a.ckpt")
    ckpt.save_checkpoint(step, path, 1, args)
    with pytest.raises(ckpt.CheckpointError, match="moco_k=32.*moco_k=64"):
        ckpt.load_checkpoint(build(moco_k=64)[0], path, config(moco_k=64))
    with pytest.raises(ckpt.CheckpointError, match="bn_splits"):
        ckpt.load_checkpoint(build(bn_splits=2)[0], path, config(bn_splits=2))
    with pytest.raises(ckpt.CheckpointError, match="mlp"):
        ckpt.load_checkpoint(build(mlp=True)[0], path, config(mlp=True))


def test_mlp_head_is_recorded_and_restored(tmp_path):
    step, args = build(mlp=True)
    path = str(tmp_path / "v2.ckpt")
    ckpt.save_checkpoint(step, path, 2, args)
    encoder, settings = restore_encoder(path)
    assert settings["mlp"] is True and len(encoder.net[-1]) == 3  # Dense, ReLU, Dense
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    step.model.encoder_q.set_train(False)
    np.testing.assert_array_equal(encoder(x).asnumpy(), step.model.encoder_q(x).asnumpy())


def test_shape_mismatch_names_the_tensors(tmp_path):
    step, args = build()
    path = str(tmp_path / "a.ckpt")
    ckpt.save_checkpoint(step, path, 1, args)
    other, other_args = build(moco_dim=8)
    os_args = config()  # pretend the metadata matches, so the shapes are what differ
    with pytest.raises(ckpt.CheckpointError, match="shape mismatch: .*net.9"):
        ckpt.load_checkpoint(other, path, os_args)


def test_missing_and_corrupt_files(tmp_path):
    step, args = build()
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load_checkpoint(step, str(tmp_path / "nope.ckpt"), args)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        ckpt.load_checkpoint(step, str(bad), args)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    step, args = build()
    path = str(tmp_path / "model_last.ckpt")
    ckpt.save_checkpoint(step, path, 1, args)
    before = open(path, "rb").read()

    def no_space(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "replace", no_space)
    with pytest.raises(ckpt.CheckpointError, match="No space left.*unchanged"):
        ckpt.save_checkpoint(step, path, 2, args)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["model_last.ckpt"]


def test_entries_are_those_earlier_versions_wrote(tmp_path):
    """checkpoint_format_v1.json lists what save_checkpoint wrote before the src/train layout
    (names, shapes, metadata) for this model: the same entries mean old checkpoints still load."""
    expected = json.loads((Path(__file__).parent / "checkpoint_format_v1.json").read_text())
    step, args = build()
    path = str(tmp_path / "model_last.ckpt")
    ckpt.save_checkpoint(step, path, epoch=3, model=args)
    written = {
        name: value if isinstance(value, str) else list(value.shape)
        for name, value in ms.load_checkpoint(path).items()
    }
    # The entries added since, scalars: MoCo v2's head, the stem and image size of other datasets
    assert [written.pop(key) for key in ("mlp", "stem", "image_size")] == [[], "cifar", []]
    assert written == expected
