"""infer.py end to end on the checkpoint of `full_run`: results, feature cache, errors."""

import json
import os

import mindspore as ms
import numpy as np
import pytest
import yaml

import infer
from helpers import CIFAR10_CLASSES, run_main
from src.eval import evaluate


@pytest.fixture(scope="module")
def knn_run(trained):
    """infer.py as a user runs it: a new process, graph mode (the training config's)."""
    data_root, checkpoint = trained
    args = ["--checkpoint", checkpoint, "--data-dir", data_root, "--batch_size", "16"]
    proc = run_main(args, timeout=900, script="infer.py")
    return proc, os.path.join(os.path.dirname(checkpoint), "eval_knn.json")


@pytest.fixture(autouse=True)
def pynative_afterwards():
    """In-process runs set the execution mode; the other test modules expect PyNative."""
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def test_knn_end_to_end(knn_run):
    proc, json_path = knn_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Features [bank]" in proc.stderr and "Traceback" not in proc.stderr
    assert "kNN (k=5, t=0.1) top-1" in proc.stdout and json_path in proc.stdout
    with open(json_path) as f:
        result = json.load(f)
    assert 0 <= result["knn_top1"] <= result["knn_top5"] <= 100
    assert list(result["per_class"]) == CIFAR10_CLASSES
    assert all(0 <= value <= 100 for value in result["per_class"].values())
    assert (result["k"], result["t"]) == (5, 0.1)  # from the training config
    assert result["num_test_images"] == 20 and result["num_train_images"] == 48
    assert result["epoch"] == 2 and result["dataset"] == "cifar10"
    assert result["checkpoint"].endswith("model_last.ckpt") and result["seconds"] > 0
    assert result["features_from_cache"] is False


def test_second_evaluation_reads_the_feature_cache(knn_run, trained, tmp_path, monkeypatch):
    assert knn_run[0].returncode == 0
    data_root, checkpoint = trained
    calls = []
    monkeypatch.setattr(evaluate, "extract_features", lambda *args, **kwargs: calls.append(args))
    output = tmp_path / "linear.json"
    argv = ["--checkpoint", checkpoint, "--data-dir", data_root, "--output-json", str(output)]
    code = infer.main([*argv, *"--mode 1 --protocol linear --linear-epochs 5".split()])
    assert code == 0 and calls == []
    result = json.loads(output.read_text())
    assert result["features_from_cache"] is True
    assert 0 <= result["linear_top1"] <= result["linear_top5"] <= 100
    assert list(result["per_class"]) == CIFAR10_CLASSES
    assert result["linear"]["lr"] == 30.0 and result["linear"]["epochs"] == 5


def run_infer(argv, capsys):
    code = infer.main(argv)
    return code, capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(capsys, tmp_path):
    code, err = run_infer(["--checkpoint", str(tmp_path / "nope.ckpt")], capsys)
    assert code == 2 and "checkpoint not found" in err and "Traceback" not in err


def test_model_settings_come_from_the_checkpoint(trained, tmp_path, capsys):
    """A checkpoint without config.yaml (e.g. converted) evaluates; a stale config's model
    settings are not used."""
    data_root, checkpoint = trained
    os.symlink(checkpoint, tmp_path / "model_last.ckpt")
    output = tmp_path / "knn.json"
    argv = ["--checkpoint", str(tmp_path / "model_last.ckpt"), "--data-dir", data_root]
    argv += ["--mode", "1", "--output-json", str(output)]
    code, err = run_infer(argv, capsys)
    assert code == 0, err
    result = json.loads(output.read_text())
    assert (result["k"], result["t"]) == (200, 0.1)  # main.py's defaults: no config.yaml here
    assert "L2-normalised 16-d" in result["features"]  # moco_dim 16, from the checkpoint

    with open(os.path.join(os.path.dirname(checkpoint), "config.yaml")) as f:
        config = yaml.safe_load(f)
    config["moco_dim"], config["knn_k"] = 8, 3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    code, err = run_infer(argv, capsys)
    assert code == 0, err
    result = json.loads(output.read_text())
    assert result["k"] == 3 and "L2-normalised 16-d" in result["features"]


def test_corrupt_or_bare_checkpoint_and_missing_config_are_clear_errors(trained, tmp_path, capsys):
    data_root, _ = trained
    garbage = tmp_path / "model_last.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    code, err = run_infer(["--checkpoint", str(garbage), "--data-dir", data_root], capsys)
    assert code == 2 and "cannot read checkpoint" in err and "Traceback" not in err

    bare = tmp_path / "bare.ckpt"
    ms.save_checkpoint(
        [{"name": "encoder_q.net.0.weight", "data": ms.Tensor(np.zeros(3))}], str(bare)
    )
    code, err = run_infer(["--checkpoint", str(bare), "--data-dir", data_root], capsys)
    assert code == 2 and "does not record arch" in err

    code, err = run_infer(
        ["--checkpoint", str(bare), "--config", str(tmp_path / "nope.yaml")], capsys
    )
    assert code == 2 and "nope.yaml" in err
