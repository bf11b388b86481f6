"""Checkpoint converter (src/tools/convert_pytorch.py): mapping, errors, CLI in both directions.

The mapping tests need only NumPy; everything that reads or writes a ``.pth`` file needs torch
and is skipped without it. The numerical side (converted weights compute the same features,
exact round trips of a trained demo model) is in test_equivalence.py.
"""
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import REPO_ROOT
from src.train.checkpoint import CheckpointError, load_checkpoint
from src.train.step import MoCoTrainStep, create_optimizer
from src.models import MoCo
from src.tools import convert_pytorch as cv

DIM, K, SPLITS = 16, 32, 4


# --------------------------------------------------------------------------- pure mapping (no torch)

def test_names_map_both_ways():
    bn_torch = {"encoder_q.net.1", "encoder_k.net.4.0.downsample.1"}
    bn_ms = set(bn_torch)
    pairs = [("encoder_q.net.0.weight", "encoder_q.net.0.weight"),
             ("encoder_q.net.1.weight", "encoder_q.net.1.gamma"),
             ("encoder_q.net.1.bias", "encoder_q.net.1.beta"),
             ("encoder_q.net.1.running_mean", "encoder_q.net.1.moving_mean"),
             ("encoder_q.net.1.running_var", "encoder_q.net.1.moving_variance"),
             ("encoder_k.net.4.0.downsample.1.weight", "encoder_k.net.4.0.downsample.1.gamma"),
             ("encoder_q.net.9.weight", "encoder_q.net.9.weight"),  # fc weight/bias keep their names
             ("encoder_q.net.9.bias", "encoder_q.net.9.bias"),
             ("queue", "queue"), ("queue_ptr", "queue_ptr")]
    for torch_name, ms_name in pairs:
        assert cv.torch_to_mindspore_name(torch_name, bn_torch) == ms_name
        assert cv.mindspore_to_torch_name(ms_name, bn_ms) == torch_name
    assert cv.torch_to_mindspore_name("encoder_q.net.1.num_batches_tracked", bn_torch) is None


def test_state_dicts_convert_queue_pointer_and_counts():
    rng = np.random.default_rng(0)
    torch_state = {
        "queue": rng.standard_normal((4, 8)).astype(np.float32),  # C x K
        "queue_ptr": np.array([4], np.int64),
        "encoder_q.net.1.weight": np.ones(3, np.float32),
        "encoder_q.net.1.bias": np.zeros(3, np.float32),
        "encoder_q.net.1.running_mean": rng.standard_normal(3).astype(np.float32),
        "encoder_q.net.1.running_var": rng.uniform(1, 2, 3).astype(np.float32),
        "encoder_q.net.1.num_batches_tracked": np.array(7, np.int64),
    }
    params, counts, origin = cv.torch_state_to_mindspore(torch_state)
    np.testing.assert_array_equal(params["queue"], torch_state["queue"].T)  # K x C here
    assert params["queue_ptr"].dtype == np.int32 and params["queue_ptr"].tolist() == [4]
    assert set(params) == {"queue", "queue_ptr", "encoder_q.net.1.gamma", "encoder_q.net.1.beta",
                           "encoder_q.net.1.moving_mean", "encoder_q.net.1.moving_variance"}
    assert origin["encoder_q.net.1.moving_variance"] == "encoder_q.net.1.running_var"
    assert counts == {"encoder_q.net.1.num_batches_tracked": 7}

    back, _ = cv.mindspore_state_to_torch(params, counts)
    assert list(back) == list(torch_state)  # the demo's key order, counts after running_var
    for key, value in torch_state.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    zeros, _ = cv.mindspore_state_to_torch(params)  # not stored: 0
    assert zeros["encoder_q.net.1.num_batches_tracked"] == 0
    with pytest.raises(cv.ConversionError, match="without a BatchNorm: encoder_q.net.7.num"):
        cv.mindspore_state_to_torch(params, {"encoder_q.net.7.num_batches_tracked": 1})


def test_schema_check_lists_every_problem():
    schema = {"a.weight": (2, 3), "b.gamma": (3,), "c.beta": (3,)}
    tensors = {"a.weight": np.zeros((3, 2)), "b.gamma": np.zeros(3), "x.extra": np.zeros(1),
               "y.extra": np.zeros(1)}
    with pytest.raises(cv.ConversionError) as err:
        cv.check_against_schema(tensors, schema, {"x.extra": "module.x.extra"}, what="demo.pth")
    message = str(err.value)
    assert ("2 tensor(s) that map onto nothing in the model: module.x.extra (-> x.extra), "
            "y.extra") in message
    assert "1 tensor(s) of the model not in the demo.pth: c.beta" in message
    assert "a.weight (3, 2) vs (2, 3)" in message


def test_infer_model_config_reads_shapes_and_blocks():
    state = {"queue": np.zeros((DIM, K))}
    for stage, blocks in zip(cv.STAGE_INDICES, (2, 2, 2, 2)):
        for block in range(blocks):
            state[f"encoder_q.net.{stage}.{block}.conv1.weight"] = np.zeros(1)
    assert cv.infer_model_config(state) == {"arch": "resnet18", "moco_dim": DIM, "moco_k": K}
    state["encoder_q.net.5.2.conv1.weight"] = np.zeros(1)
    with pytest.raises(cv.ConversionError, match=r"\(2, 2, 3, 2\) blocks per stage"):
        cv.infer_model_config(state)
    with pytest.raises(cv.ConversionError, match="no 2-D 'queue'"):
        cv.infer_model_config({"conv.weight": np.zeros(1)})


def test_optimizer_state_maps_by_position():
    params = [("encoder_q.a.weight", "encoder_q.a.weight"), ("encoder_q.b.weight", "encoder_q.b.gamma"),
              ("encoder_k.a.weight", "encoder_k.a.weight"), ("encoder_k.b.weight", "encoder_k.b.gamma")]
    shapes = {"encoder_q.a.weight": (2, 2), "encoder_q.b.gamma": (2,)}
    buf = np.arange(4, dtype=np.float32).reshape(2, 2)
    optimizer = {"state": {0: {"momentum_buffer": buf}},
                 "param_groups": [{"lr": 0.03, "momentum": 0.9, "dampening": 0, "nesterov": False,
                                   "params": [0, 1, 2, 3]}]}
    entries, _ = cv.torch_optimizer_to_mindspore(optimizer, params, shapes)
    np.testing.assert_array_equal(entries["moments.encoder_q.a.weight"], buf)
    np.testing.assert_array_equal(entries["moments.encoder_q.b.gamma"], np.zeros(2))  # no buffer yet
    assert float(entries["learning_rate"]) == np.float32(0.03)
    assert not any(name.startswith("moments.encoder_k") for name in entries)

    back = cv.mindspore_optimizer_to_torch(entries, params, weight_decay=1e-4)
    assert back["param_groups"][0]["lr"] == 0.03 and back["param_groups"][0]["params"] == [0, 1, 2, 3]
    np.testing.assert_array_equal(back["state"][0]["momentum_buffer"], buf)

    optimizer["state"][2] = {"momentum_buffer": buf}  # encoder_k never has an optimizer state
    with pytest.raises(cv.ConversionError, match=r"state\[2\].momentum_buffer \(encoder_k.a.weight"):
        cv.torch_optimizer_to_mindspore(optimizer, params, shapes)
    optimizer["state"] = {1: {"momentum_buffer": buf}}  # wrong shape for encoder_q.b.weight
    with pytest.raises(cv.ConversionError, match=r"encoder_q.b.weight\): shape \(2, 2\) vs \(2,\)"):
        cv.torch_optimizer_to_mindspore(optimizer, params, shapes)
    optimizer["param_groups"][0]["nesterov"] = True
    with pytest.raises(cv.ConversionError, match="nesterov"):
        cv.torch_optimizer_to_mindspore(optimizer, params, shapes)


def test_module_imports_without_torch():
    code = ("import sys; import src.tools.convert_pytorch; "
            "assert 'torch' not in sys.modules and 'mindspore' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=120)


def test_missing_torch_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(cv.ConversionError,
                       match="needs PyTorch, which is not installed: pip install torch"):
        cv.convert_pth_to_ckpt(str(tmp_path / "a.pth"), str(tmp_path / "a.ckpt"))
    assert cv.main([str(tmp_path / "a.ckpt"), str(tmp_path / "a.pth")]) == 2
    assert "needs PyTorch" in capsys.readouterr().err


@pytest.mark.parametrize("names", [("a.pth", "b.pth"), ("a.ckpt", "b.ckpt"), ("a.pth", "b.npz"),
                                   ("a", "b.ckpt")])
def test_wrong_extensions_are_a_clear_error(tmp_path, capsys, names):
    paths = [str(tmp_path / name) for name in names]
    assert cv.main(paths) == 2
    assert "cannot tell the direction from the extensions" in capsys.readouterr().err


# --------------------------------------------------------------------------- files (torch)

def _tiny_demo_checkpoint(path, splits=SPLITS, epoch=5, **extra):
    """Writes a demo-style checkpoint of a tiny reference model with optimizer buffers."""
    torch = pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    from equivalence.moco_torch import ModelMoCo, create_optimizer as torch_sgd

    torch.manual_seed(0)
    model = ModelMoCo(dim=DIM, K=K, bn_splits=splits)
    optimizer = torch_sgd(model, 0.03, 5e-4)
    for param in model.encoder_q.parameters():  # one SGD step gives every weight a buffer
        param.grad = torch.randn_like(param)
    optimizer.step()
    with torch.no_grad():
        model.queue_ptr[0] = 8
    checkpoint = {"epoch": epoch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}
    checkpoint.update(extra)
    torch.save(checkpoint, path)
    return checkpoint


def _config(**overrides):
    values = dict(arch="resnet18", moco_dim=DIM, moco_k=K, bn_splits=SPLITS, symmetric=False)
    values.update(overrides)
    return SimpleNamespace(**values)


def _train_step(args):
    model = MoCo(dim=args.moco_dim, K=args.moco_k, bn_splits=args.bn_splits, symmetric=args.symmetric)
    return MoCoTrainStep(model, create_optimizer(model, 0.1, 1e-4))


def test_cli_both_directions(tmp_path, capsys):
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
    np.testing.assert_array_equal(params["encoder_k.net.1.gamma"],
                                  demo["state_dict"]["encoder_k.net.1.weight"].numpy())
    np.testing.assert_array_equal(params["moments.encoder_q.net.9.weight"],
                                  demo["optimizer"]["state"][60]["momentum_buffer"].numpy())
    assert np.isclose(params["learning_rate"], 0.03)
    with pytest.raises(CheckpointError, match="bn_splits"):  # recorded, so a wrong config is refused
        load_checkpoint(step, ckpt, _config(bn_splits=2))  # (refused before touching the cell)

    assert cv.main([ckpt, back]) == 0
    exported = torch.load(back, weights_only=True)
    assert exported["epoch"] == 5 and list(exported["state_dict"]) == list(demo["state_dict"])
    for key, value in demo["state_dict"].items():
        assert torch.equal(exported["state_dict"][key], value), key
    assert exported["optimizer"]["param_groups"][0]["lr"] == 0.03
    for index, state in demo["optimizer"]["state"].items():
        assert torch.equal(exported["optimizer"]["state"][index]["momentum_buffer"],
                           state["momentum_buffer"]), index


def test_cli_module_entry_point(tmp_path):
    pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    torch_state = _tiny_demo_checkpoint(tmp_path / "demo.pth")["state_dict"]
    import torch
    torch.save(torch_state, tmp_path / "bare.pt")  # a bare state_dict works too
    proc = subprocess.run([sys.executable, "-m", "src.tools.convert_pytorch", str(tmp_path / "bare.pt"),
                           str(tmp_path / "bare.ckpt"), "--bn-splits", str(SPLITS), "--moco-k", str(K)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"epoch 0, arch resnet18, moco_dim {DIM}, moco_k {K}, bn_splits {SPLITS}" in proc.stderr
    step = _train_step(_config())
    assert load_checkpoint(step, str(tmp_path / "bare.ckpt"), _config()) == 0
    moments = [p.asnumpy() for p in step.get_parameters() if p.name.startswith("moments.")]
    assert moments and not any(m.any() for m in moments)  # no optimizer in the file: zeros


def test_unmapped_and_mismatched_tensors_are_listed(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    checkpoint = _tiny_demo_checkpoint(tmp_path / "demo.pth")
    state = checkpoint["state_dict"]
    state["encoder_q.fc.weight"] = torch.zeros(DIM, 512)  # e.g. a torchvision-style head
    state["encoder_q.net.3.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    del state["encoder_k.net.9.bias"]
    torch.save(checkpoint, tmp_path / "bad.pth")
    assert cv.main([str(tmp_path / "bad.pth"), str(tmp_path / "bad.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "1 tensor(s) that map onto nothing in the model: encoder_q.fc.weight" in err
    assert "1 tensor(s) of the model not in the" in err and "encoder_k.net.9.bias" in err
    assert "encoder_q.net.3.0.conv1.weight (64, 64, 1, 1) vs (64, 64, 3, 3)" in err
    assert not os.path.exists(tmp_path / "bad.ckpt")

    with pytest.raises(cv.ConversionError, match="moco_k=64 but the .* has 32"):
        cv.convert_pth_to_ckpt(str(tmp_path / "demo.pth"), str(tmp_path / "x.ckpt"), moco_k=64)
    with pytest.raises(cv.ConversionError, match="no such file"):
        cv.convert_pth_to_ckpt(str(tmp_path / "nope.pth"), str(tmp_path / "x.ckpt"))
    with pytest.raises(cv.ConversionError, match="cannot write .*x.ckpt"):
        cv.convert_pth_to_ckpt(str(tmp_path / "demo.pth"), str(tmp_path / "no" / "x.ckpt"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(cv.ConversionError, match="cannot read .*junk.pth as a PyTorch checkpoint"):
        cv.convert_pth_to_ckpt(str(tmp_path / "junk.pth"), str(tmp_path / "x.ckpt"))


def test_unknown_entries_of_our_checkpoint_are_listed(tmp_path):
    pytest.importorskip("torch", reason="PyTorch (test-only dependency) is not installed")
    import mindspore as ms

    args = _config()
    step = _train_step(args)
    params = [{"name": p.name, "data": p} for p in step.get_parameters()
              if p.name != "encoder_q.net.1.moving_mean"]
    params.append({"name": "encoder_q.net.10.weight", "data": ms.Tensor(np.zeros(3, np.float32))})
    ms.save_checkpoint(params, str(tmp_path / "odd.ckpt"),
                       append_dict={"epoch": 1, **vars(args)})
    with pytest.raises(cv.ConversionError) as err:
        cv.convert_ckpt_to_pth(str(tmp_path / "odd.ckpt"), str(tmp_path / "odd.pth"))
    assert "map onto nothing in the model: encoder_q.net.10.weight" in str(err.value)
    assert "not in the" in str(err.value) and "encoder_q.net.1.moving_mean" in str(err.value)
    assert not os.path.exists(tmp_path / "odd.pth")
    ms.save_checkpoint(step, str(tmp_path / "ok.ckpt"), append_dict={"epoch": 2, **vars(args)})
    with pytest.raises(cv.ConversionError, match="cannot write .*ok.pth"):
        cv.convert_ckpt_to_pth(str(tmp_path / "ok.ckpt"), str(tmp_path / "no" / "ok.pth"))
