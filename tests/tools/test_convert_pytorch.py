"""Checkpoint converter (src/tools/convert_pytorch.py): mapping, round trips, errors, the CLI.

Tests that read or write a ``.pth`` file need torch (test-only) and are skipped without it. The
numerical side (converted weights compute the reference's features, the round trip of a trained
demo model) is in tests/equivalence/test_equivalence.py."""

import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from helpers import REPO_ROOT, checkpoint_arrays
from src.eval.evaluate import restore_encoder
from src.models import MoCo
from src.models.split_bn import SCRATCH_PREFIX
from src.tools import convert_pytorch as cv
from src.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from src.train.step import MoCoTrainStep, create_optimizer

DIM, K, SPLITS = 16, 32, 4

# A hand-made schema: one conv, one BatchNorm, the fc, the queue, and optimizer entries.
SCHEMA = {
    "encoder_q.net.0.weight": (2, 3, 3, 3),
    "encoder_q.net.1.gamma": (2,),
    "encoder_q.net.1.beta": (2,),
    "encoder_q.net.1.moving_mean": (2,),
    "encoder_q.net.1.moving_variance": (2,),
    "encoder_q.net.9.weight": (4, 2),
    "encoder_q.net.9.bias": (4,),
    "queue": (8, 4),
    "queue_ptr": (1,),
    "moments.encoder_q.net.0.weight": (2, 3, 3, 3),
    "learning_rate": (),
}


# --------------------------------------------------------------------------- mapping (no torch)


def test_model_tensors_map_both_ways():
    rng = np.random.default_rng(0)
    ours = {
        name: rng.standard_normal(shape).astype(np.float32)
        for name, shape in SCHEMA.items()
        if name.startswith("encoder_") or name == "queue"
    }
    ours["queue_ptr"] = np.array([4], np.int32)
    state = cv.mindspore_state_to_torch(ours)
    assert set(state) == {
        "encoder_q.net.0.weight",
        "encoder_q.net.1.weight",
        "encoder_q.net.1.bias",
        "encoder_q.net.1.running_mean",
        "encoder_q.net.1.running_var",
        "encoder_q.net.1.num_batches_tracked",
        "encoder_q.net.9.weight",
        "encoder_q.net.9.bias",
        "queue",
        "queue_ptr",
    }
    np.testing.assert_array_equal(state["queue"], ours["queue"].T)  # C x K there
    np.testing.assert_array_equal(
        state["encoder_q.net.1.running_var"], ours["encoder_q.net.1.moving_variance"]
    )
    assert state["queue_ptr"].dtype == np.int64 and state["queue_ptr"].tolist() == [4]
    count = state["encoder_q.net.1.num_batches_tracked"]
    assert count.dtype == np.int64 and count.shape == () and count == 0

    state["encoder_q.net.1.num_batches_tracked"] = np.array(7)  # nn.BatchNorm2d counts: ignored
    back = cv.torch_state_to_mindspore(state, SCHEMA)
    assert list(back) == [name for name in SCHEMA if name in ours]  # schema order
    for name, value in ours.items():
        assert back[name].dtype == value.dtype, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)

    state["encoder_q.net.1.running_var"] = np.zeros(3, np.float32)
    state["encoder_q.fc.weight"] = np.zeros(1, np.float32)
    del state["encoder_q.net.9.bias"]
    with pytest.raises(cv.ConversionError) as err:  # named as in the demo's file
        cv.torch_state_to_mindspore(state, SCHEMA, "demo.pth")
    assert str(err.value) == (
        "demo.pth does not fit the model: 1 that map onto nothing in the model: "
        "encoder_q.fc.weight; 1 of the model missing: encoder_q.net.9.bias; 1 with another "
        "shape: encoder_q.net.1.running_var (3,) vs (2,)"
    )


def test_infer_model_config_reads_shapes_and_blocks():
    state = {"queue": np.zeros((DIM, K))}
    for stage, blocks in zip(cv.STAGES, (2, 2, 2, 2)):
        for block in range(blocks):
            state[f"encoder_q.net.{stage}.{block}.conv1.weight"] = np.zeros(1)
    expected = {"arch": "resnet18", "moco_dim": DIM, "moco_k": K, "mlp": False, "stem": "cifar"}
    assert cv.infer_model_config(state) == expected
    mlp_state = {**state, "encoder_q.net.9.0.weight": np.zeros((512, 512))}  # MoCo v2's head
    assert cv.infer_model_config(mlp_state) == {**expected, "mlp": True}
    imagenet_stem = {**state, "encoder_q.net.0.weight": np.zeros((64, 3, 7, 7))}  # torchvision's
    assert cv.infer_model_config(imagenet_stem) == {**expected, "stem": "imagenet"}
    state["encoder_q.net.5.2.conv1.weight"] = np.zeros(1)
    with pytest.raises(cv.ConversionError, match=r"\(2, 2, 3, 2\) blocks per stage"):
        cv.infer_model_config(state)
    with pytest.raises(cv.ConversionError, match="no 2-D 'queue'"):
        cv.infer_model_config({"conv.weight": np.zeros(1)})


def test_optimizer_state_maps_by_position():
    names = [
        "encoder_q.a.weight",
        "encoder_q.b.gamma",
        "encoder_q.b.moving_mean",
        "encoder_k.a.weight",
        "encoder_k.b.gamma",
        "queue",
    ]
    params = cv.torch_parameter_names(names)
    assert params == [
        ("encoder_q.a.weight", "encoder_q.a.weight"),
        ("encoder_q.b.weight", "encoder_q.b.gamma"),
        ("encoder_k.a.weight", "encoder_k.a.weight"),
        ("encoder_k.b.weight", "encoder_k.b.gamma"),
    ]
    shapes = {"encoder_q.a.weight": (2, 2), "encoder_q.b.gamma": (2,)}
    buf = np.arange(4, dtype=np.float32).reshape(2, 2)
    optimizer = {
        "state": {0: {"momentum_buffer": buf}},
        "param_groups": [
            {"lr": 0.03, "momentum": 0.9, "dampening": 0, "nesterov": False, "params": [0, 1, 2, 3]}
        ],
    }
    entries = cv.torch_optimizer_to_mindspore(optimizer, params, shapes)
    assert set(entries) == {
        "moments.encoder_q.a.weight",
        "moments.encoder_q.b.gamma",
        "learning_rate",
        "momentum",
        "global_step",
    }
    np.testing.assert_array_equal(entries["moments.encoder_q.a.weight"], buf)
    np.testing.assert_array_equal(entries["moments.encoder_q.b.gamma"], np.zeros(2))  # no buffer
    assert entries["learning_rate"] == np.float32(0.03) and entries["momentum"] == np.float32(0.9)
    fresh = cv.torch_optimizer_to_mindspore(None, params, shapes, lr=0.1)  # no optimizer saved
    assert fresh["learning_rate"] == np.float32(0.1)
    assert not fresh["moments.encoder_q.a.weight"].any()

    back = cv.mindspore_optimizer_to_torch(entries, params, weight_decay=1e-4)
    assert back["param_groups"] == [
        {
            "lr": 0.03,
            "momentum": 0.9,
            "dampening": 0,
            "weight_decay": 1e-4,
            "nesterov": False,
            "params": [0, 1, 2, 3],
        }
    ]
    assert set(back["state"]) == {0, 1}
    np.testing.assert_array_equal(back["state"][0]["momentum_buffer"], buf)

    optimizer["state"] = {1: {"momentum_buffer": buf}, 2: {"momentum_buffer": buf}, 3: {"step": 1}}
    with pytest.raises(cv.ConversionError) as err:
        cv.torch_optimizer_to_mindspore(optimizer, params, shapes)
    assert str(err.value) == (
        "optimizer state that maps onto nothing: "
        "state[1].momentum_buffer (encoder_q.b.weight: shape (2, 2) vs (2,)); "
        "state[2].momentum_buffer (encoder_k.a.weight: only encoder_q has an optimizer); "
        "state[3].step (encoder_k.b.weight)"
    )
    optimizer["param_groups"][0]["nesterov"] = True
    with pytest.raises(cv.ConversionError, match="nesterov"):
        cv.torch_optimizer_to_mindspore(optimizer, params, shapes)
    optimizer["param_groups"] *= 2
    with pytest.raises(cv.ConversionError, match=r"not the demo.s: 2 parameter group"):
        cv.torch_optimizer_to_mindspore(optimizer, params, shapes)


def test_missing_torch_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(
        cv.ConversionError, match="needs PyTorch, which is not installed: pip install torch"
    ):
        cv.convert_pth_to_ckpt(str(tmp_path / "a.pth"), str(tmp_path / "a.ckpt"))
    assert cv.main([str(tmp_path / "a.ckpt"), str(tmp_path / "a.pth")]) == 2
    assert "needs PyTorch" in capsys.readouterr().err


@pytest.mark.parametrize(
    "names", [("a.pth", "b.pth"), ("a.ckpt", "b.ckpt"), ("a.pth", "b.npz"), ("a", "b.ckpt")]
)
def test_wrong_extensions_are_a_clear_error(tmp_path, capsys, names):
    assert cv.main([str(tmp_path / name) for name in names]) == 2
    assert "error: cannot tell the direction from the extensions" in capsys.readouterr().err


# --------------------------------------------------------------------------- files (torch)


def _tiny_demo_checkpoint(path, epoch=5):
    """Writes a demo-style checkpoint of a tiny reference model with optimizer buffers."""
    torch = pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    from equivalence.moco_torch import ModelMoCo
    from equivalence.moco_torch import create_optimizer as torch_sgd

    torch.manual_seed(0)
    model = ModelMoCo(dim=DIM, K=K, bn_splits=SPLITS)
    optimizer = torch_sgd(model, 0.03, 5e-4)
    for param in model.encoder_q.parameters():  # one SGD step gives every weight a buffer
        param.grad = torch.randn_like(param)
    optimizer.step()
    with torch.no_grad():
        model.queue_ptr[0] = 8
    checkpoint = {
        "epoch": epoch,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(checkpoint, path)
    return checkpoint


def _config(**overrides):
    """The settings of the tiny model, as a checkpoint records them."""
    values = dict(arch="resnet18", moco_dim=DIM, moco_k=K, bn_splits=SPLITS, symmetric=False)
    return {**values, "mlp": False, "stem": "cifar", "image_size": 32, **overrides}


def _train_step(config):
    keys = ("moco_dim", "moco_k", "bn_splits", "symmetric")
    dim, k, splits, symmetric = (config[key] for key in keys)
    model = MoCo(dim=dim, K=k, bn_splits=splits, symmetric=symmetric)
    return MoCoTrainStep(model, create_optimizer(model, 0.1, 1e-4))


def _run_module(*args):
    """Runs the converter as ``python -m``; returns the finished process."""
    command = [sys.executable, "-m", "src.tools.convert_pytorch", *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_pytorch_to_ours_to_pytorch_resumes_and_is_exact(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    demo = _tiny_demo_checkpoint(tmp_path / "demo.pth")
    ckpt, back = str(tmp_path / "ours.ckpt"), str(tmp_path / "back.pth")

    assert cv.main([str(tmp_path / "demo.pth"), ckpt, "--bn-splits", str(SPLITS)]) == 0
    assert "wrote" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["demo.pth", "ours.ckpt"]  # no temporary file left
    # What main.py --resume does with it: the metadata and every tensor fit our training step.
    step = _train_step(_config())
    assert load_checkpoint(step, ckpt, _config()) == 5
    params = {p.name: p.asnumpy() for p in step.get_parameters()}
    np.testing.assert_array_equal(params["queue"], demo["state_dict"]["queue"].numpy().T)
    assert params["queue_ptr"].tolist() == [8]
    np.testing.assert_array_equal(
        params["encoder_k.net.1.gamma"], demo["state_dict"]["encoder_k.net.1.weight"].numpy()
    )
    np.testing.assert_array_equal(
        params["moments.encoder_q.net.9.weight"],
        demo["optimizer"]["state"][60]["momentum_buffer"].numpy(),
    )
    assert np.isclose(params["learning_rate"], 0.03)
    with pytest.raises(CheckpointError, match="bn_splits"):  # recorded: a wrong config is refused
        load_checkpoint(step, ckpt, _config(bn_splits=2))
    encoder, settings = restore_encoder(ckpt)  # what infer.py does with it
    assert settings == {"epoch": 5, **_config(), "method": "v1"}  # no method recorded: v1
    np.testing.assert_array_equal(
        encoder.net[9].weight.asnumpy(), demo["state_dict"]["encoder_q.net.9.weight"].numpy()
    )

    assert cv.main([ckpt, back]) == 0
    exported = torch.load(back, weights_only=True)
    assert exported["epoch"] == 5 and set(exported["state_dict"]) == set(demo["state_dict"])
    for key, value in demo["state_dict"].items():
        assert exported["state_dict"][key].dtype == value.dtype, key
        assert torch.equal(exported["state_dict"][key], value), key
    assert exported["optimizer"]["param_groups"][0]["lr"] == 0.03
    assert set(exported["optimizer"]["state"]) == set(demo["optimizer"]["state"])
    for index, state in demo["optimizer"]["state"].items():
        assert torch.equal(
            exported["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"]
        ), index


def test_ours_to_pytorch_to_ours_is_exact(tmp_path):
    pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    config = _config(symmetric=True)
    step = _train_step(config)
    rng = np.random.default_rng(1)
    for param in step.get_parameters():  # every entry distinct from its initial value
        value = rng.standard_normal(param.shape) if param.dtype == ms.float32 else [8]
        param.set_data(ms.Tensor(np.asarray(value, ms.dtype_to_nptype(param.dtype))))
    save_checkpoint(step, str(tmp_path / "ours.ckpt"), 3, config)

    meta = cv.convert_ckpt_to_pth(str(tmp_path / "ours.ckpt"), str(tmp_path / "demo.pth"))
    assert meta == {"epoch": 3, **config}
    assert (
        cv.convert_pth_to_ckpt(
            str(tmp_path / "demo.pth"),
            str(tmp_path / "back.ckpt"),
            bn_splits=SPLITS,
            symmetric=True,
        )
        == meta
    )
    ours = checkpoint_arrays(str(tmp_path / "ours.ckpt"))
    back = checkpoint_arrays(str(tmp_path / "back.ckpt"))
    assert set(back) == set(ours)
    assert ours.pop("global_step").tolist() == [8] and back.pop("global_step").tolist() == [0]
    for name, value in ours.items():
        assert np.asarray(back[name]).dtype == np.asarray(value).dtype, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_cli_module_entry_point(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    torch.save(_tiny_demo_checkpoint(tmp_path / "demo.pth")["state_dict"], tmp_path / "bare.pt")
    proc = _run_module(
        tmp_path / "bare.pt", tmp_path / "bare.ckpt", "--bn-splits", SPLITS, "--moco-k", K
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"epoch 0, arch resnet18, moco_dim {DIM}, moco_k {K}, bn_splits {SPLITS}" in proc.stderr
    step = _train_step(_config())
    assert load_checkpoint(step, str(tmp_path / "bare.ckpt"), _config()) == 0
    moments = [p.asnumpy() for p in step.get_parameters() if p.name.startswith("moments.")]
    assert moments and not any(m.any() for m in moments)  # no optimizer in the file: zeros

    proc = _run_module(tmp_path / "bare.pt", tmp_path / "x.ckpt", "--arch", "resnet34")
    last_line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2
    assert last_line.endswith(f"error: arch='resnet34' but {tmp_path / 'bare.pt'} has 'resnet18'")


def test_bad_pytorch_inputs_are_clear_errors(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    checkpoint = _tiny_demo_checkpoint(tmp_path / "demo.pth")
    state = checkpoint["state_dict"]
    state["encoder_q.fc.weight"] = torch.zeros(DIM, 512)  # e.g. a torchvision-style head
    state["encoder_q.net.3.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    del state["encoder_k.net.9.bias"]
    torch.save(checkpoint, tmp_path / "bad.pth")
    assert cv.main([str(tmp_path / "bad.pth"), str(tmp_path / "bad.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "1 that map onto nothing in the model: encoder_q.fc.weight" in err
    assert "1 of the model missing: encoder_k.net.9.bias" in err
    assert "encoder_q.net.3.0.conv1.weight (64, 64, 1, 1) vs (64, 64, 3, 3)" in err
    assert not os.path.exists(tmp_path / "bad.ckpt")

    demo, out = str(tmp_path / "demo.pth"), str(tmp_path / "x.ckpt")
    with pytest.raises(cv.ConversionError, match="moco_k=64 but .* has 32"):
        cv.convert_pth_to_ckpt(demo, out, moco_k=64)
    with pytest.raises(cv.ConversionError, match="arch='resnet34' but .* has 'resnet18'"):
        cv.convert_pth_to_ckpt(demo, out, arch="resnet34")
    with pytest.raises(TypeError, match="unexpected keyword argument 'mlp'"):  # read off tensors
        cv.convert_pth_to_ckpt(demo, out, mlp=True)
    with pytest.raises(TypeError, match="positional argument"):  # settings are keyword-only
        cv.convert_ckpt_to_pth(demo, out, 1e-4)
    with pytest.raises(cv.ConversionError, match="nope.pth: no such file"):
        cv.convert_pth_to_ckpt(str(tmp_path / "nope.pth"), out)
    with pytest.raises(cv.ConversionError, match="cannot write .*x.ckpt"):
        cv.convert_pth_to_ckpt(demo, str(tmp_path / "no" / "x.ckpt"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(cv.ConversionError, match="cannot read .*junk.pth as a PyTorch checkpoint"):
        cv.convert_pth_to_ckpt(str(tmp_path / "junk.pth"), out)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(cv.ConversionError, match="no 2-D 'queue' tensor: not a MoCo state_dict"):
        cv.convert_pth_to_ckpt(str(tmp_path / "other.pth"), out)
    assert not os.path.exists(out)


def test_bad_checkpoints_of_ours_are_clear_errors(tmp_path):
    pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    config = _config()
    step = _train_step(config)
    params = [
        {"name": p.name, "data": p}
        for p in step.get_parameters()  # as save_checkpoint
        if p.name != "encoder_q.net.1.moving_mean" and SCRATCH_PREFIX not in p.name
    ]
    params.append({"name": "encoder_q.net.10.weight", "data": ms.Tensor(np.zeros(3, np.float32))})
    ms.save_checkpoint(params, str(tmp_path / "odd.ckpt"), append_dict={"epoch": 1, **config})
    with pytest.raises(cv.ConversionError) as err:
        cv.convert_ckpt_to_pth(str(tmp_path / "odd.ckpt"), str(tmp_path / "odd.pth"))
    assert "map onto nothing in the model: encoder_q.net.10.weight" in str(err.value)
    assert "1 of the model missing: encoder_q.net.1.moving_mean" in str(err.value)
    assert not os.path.exists(tmp_path / "odd.pth")

    save_checkpoint(step, str(tmp_path / "ok.ckpt"), 2, config)
    with pytest.raises(cv.ConversionError, match="bn_splits=2 but .* has 4"):
        cv.convert_ckpt_to_pth(str(tmp_path / "ok.ckpt"), str(tmp_path / "ok.pth"), bn_splits=2)
    with pytest.raises(cv.ConversionError, match="cannot write .*ok.pth"):
        cv.convert_ckpt_to_pth(str(tmp_path / "ok.ckpt"), str(tmp_path / "no" / "ok.pth"))
    with pytest.raises(cv.ConversionError, match="not found: .*nope.ckpt"):
        cv.convert_ckpt_to_pth(str(tmp_path / "nope.ckpt"), str(tmp_path / "ok.pth"))
