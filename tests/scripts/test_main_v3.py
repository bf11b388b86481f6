"""main.py --method v3 end to end (ResNet-18 and ViT-Tiny), its checkpoints in infer.py and export,
and the flags that belong to the other method."""

import os

import mindspore as ms
import numpy as np
import pytest
import yaml

import infer
import main as main_module
from helpers import checkpoint_arrays, read_log, run_main
from src.tools import export

V3 = "--method v3 --moco-dim 16 --moco-mlp-dim 32 --batch_size 16 --knn-k 5 --seed 3".split()


@pytest.fixture(autouse=True)
def pynative_afterwards():
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture(scope="module")
def v3_run(data_root, tmp_path_factory):
    """Two epochs of v3 ResNet-18 in graph mode, LARS, warm-up then cosine, momentum to 1."""
    results = str(tmp_path_factory.mktemp("v3") / "run")
    args = ["--data-dir", data_root, "--results-dir", results, *V3]
    args += "--epochs 2 --warmup-epochs 1 --lr 0.3 --wd 1e-6 --moco-m-cos --knn-interval 2".split()
    proc = run_main(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results


def test_v3_trains_and_records_its_method(v3_run):
    rows = read_log(v3_run)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert all(np.isfinite(float(row["loss"])) for row in rows[1:]) and rows[2]["knn_top1"]
    # The rate logged is the one the epoch ends at: the warm-up's peak, then the cosine's 0.
    assert [float(row["lr"]) for row in rows[1:]] == [pytest.approx(0.3), 0.0]
    state = checkpoint_arrays(os.path.join(v3_run, "model_last.ckpt"))
    assert state["method"] == "v3" and int(state["moco_mlp_dim"]) == 32
    assert int(state["moco_k"]) == 0 and int(state["bn_splits"]) == 1
    assert "predictor.0.weight" in state and "mu.base_encoder.net.0.weight" in state
    assert not any(name.startswith("encoder_q.") or name == "queue" for name in state)
    with open(os.path.join(v3_run, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["method"] == "v3" and saved["optimizer"] == "lars"
    assert "moco_k" not in saved and "bn_splits" not in saved  # a rerun with it is valid
    base = state["base_encoder.net.0.weight"]
    assert not np.array_equal(base, state["momentum_encoder.net.0.weight"])  # m < 1 moved it


def test_v3_resumes_and_is_evaluated_and_exported(v3_run, data_root, tmp_path, capsys):
    output = tmp_path / "knn.json"
    checkpoint = os.path.join(v3_run, "model_last.ckpt")
    argv = ["--checkpoint", checkpoint, "--data-dir", data_root, "--mode", "1"]
    assert infer.main([*argv, "--output-json", str(output)]) == 0, capsys.readouterr().err
    assert "L2-normalised 16-d" in output.read_text()  # the projector's output
    onnx = str(tmp_path / "encoder.onnx")
    assert export.main([checkpoint, onnx, "--format", "onnx"]) == 0
    config = os.path.join(v3_run, "config.yaml")
    argv = ["--config", config, "--resume", checkpoint, "--epochs", "3", "--mode", "1"]
    argv += ["--results-dir", str(tmp_path / "more"), "--knn-interval", "0"]
    assert main_module.main(argv) == 0, capsys.readouterr().err


def test_vit_tiny_trains_with_adamw_and_exports_to_mindir(data_root, tmp_path, capsys):
    results = tmp_path / "vit"
    argv = ["--data-dir", data_root, "--results-dir", str(results), *V3, "--arch", "vit_tiny"]
    argv += "--epochs 1 --max-steps 1 --lr 1e-3 --wd 0.1 --stop-grad-conv1 --mode 1".split()
    argv += ["--knn-interval", "0"]
    assert main_module.main(argv) == 0, capsys.readouterr().err
    state = checkpoint_arrays(str(results / "model_last.ckpt"))
    assert "exp_avg.base_encoder.head.0.weight" in state  # AdamW, the ViT's default
    assert "exp_avg.base_encoder.patch_embed.proj.weight" not in state  # frozen: not optimised
    out = str(tmp_path / "vit.mindir")
    assert export.main([str(results / "model_last.ckpt"), out, "--format", "mindir"]) == 0
    code = export.main(
        [str(results / "model_last.ckpt"), str(tmp_path / "v.onnx"), "--format", "onnx"]
    )
    assert code == 2 and "use mindir" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "v3", "--moco-k", "32"], "--moco-k is not used by --method v3"),
        (["--method", "v3", "--bn-splits", "2"], "--bn-splits > 1 is shuffle BN"),
        (["--method", "v3", "--symmetric"], "--symmetric is not used by --method v3"),
        (["--method", "v3", "--aug-plus"], "--aug-plus is not used by --method v3"),
        (["--method", "v3", "--optimizer", "sgd"], "--optimizer sgd is not one of"),
        (["--warmup-epochs", "2"], "--warmup-epochs is not used by --method v1"),
        (["--arch", "vit_tiny"], "--arch vit_tiny is a ViT: it trains with --method v3"),
    ],
)
def test_flags_of_the_other_method_are_errors(data_root, tmp_path, capsys, extra, message):
    argv = ["--data-dir", data_root, "--results-dir", str(tmp_path / "r"), *extra]
    assert main_module.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
