"""infer.py end to end on the checkpoint of `full_run`: results, feature cache, errors."""

import json
import os
import shutil

import mindspore as ms
import numpy as np
import pytest
import yaml

import infer
from helpers import CIFAR10_CLASSES, TINY_MODEL, run_main
from src.eval import evaluate


@pytest.fixture(scope="module")
def knn_run(trained, tmp_path_factory):
    """infer.py as a user runs it: a new process, graph mode (the training config's), on a copy
    of ``trained``'s folder without feature caches (other modules write theirs there)."""
    data_root, checkpoint = trained
    folder = tmp_path_factory.mktemp("knn") / "run"
    shutil.copytree(
        os.path.dirname(checkpoint), folder, ignore=shutil.ignore_patterns("features-*")
    )
    checkpoint = str(folder / "model_last.ckpt")
    args = ["--checkpoint", checkpoint, "--data-dir", data_root, "--batch_size", "16"]
    proc = run_main(args, timeout=900, script="infer.py")
    return proc, str(folder / "eval_knn.json"), checkpoint


@pytest.fixture(autouse=True)
def pynative_afterwards():
    """In-process runs set the execution mode; the other test modules expect PyNative."""
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def test_knn_end_to_end(knn_run):
    proc, json_path, _ = knn_run
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


def test_second_evaluation_reads_the_feature_cache(knn_run, data_root, tmp_path, monkeypatch):
    proc, _, checkpoint = knn_run
    assert proc.returncode == 0
    calls = []
    monkeypatch.setattr(evaluate, "extract_features", lambda *args, **kwargs: calls.append(args))
    output = tmp_path / "linear.json"
    argv = ["--checkpoint", checkpoint, "--data-dir", data_root, "--output-json", str(output)]
    code = infer.main([*argv, *"--mode 1 --protocol linear-cached --linear-epochs 5".split()])
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


def test_linear_protocol_trains_saves_and_resumes(trained, tmp_path, capsys):
    """MoCo's augmented protocol end to end: results, classifier checkpoint, exact resume, and a
    resume with other settings refused (exit 2) without touching what is there."""
    data_root, checkpoint = trained
    results = tmp_path / "linear"
    argv = ["--checkpoint", checkpoint, "--data-dir", data_root, "--results-dir", str(results)]
    argv += "--mode 1 --protocol linear --linear-epochs 2 --linear-batch-size 16".split()
    code, err = run_infer(argv, capsys)
    assert code == 0, err
    first = json.loads((results / "eval_linear.json").read_text())
    assert 0 <= first["linear_top1"] <= first["linear_top5"] <= 100
    assert list(first["per_class"]) == CIFAR10_CLASSES and first["resumed_at_epoch"] is None
    assert first["num_train_images"] == 48 and first["num_test_images"] == 20
    assert "RandomResizedCrop" in first["features"] and first["linear"]["epochs"] == 2
    assert first["classifier_checkpoint"] == str(results / "linear_last.ckpt")

    code, err = run_infer([*argv, "--resume", "auto"], capsys)  # epoch 2 of 2: nothing to train
    again = json.loads((results / "eval_linear.json").read_text())
    assert code == 0 and again["resumed_at_epoch"] == 3
    assert again["linear_top1"] == first["linear_top1"] and again["per_class"] == first["per_class"]

    saved = {path.name: path.read_bytes() for path in results.iterdir()}
    code, err = run_infer([*argv, "--resume", "auto", "--linear-lr", "3"], capsys)
    assert code == 2 and "linear_lr=30.0, this run has linear_lr=3.0" in err
    assert "Traceback" not in err and len(err.strip().splitlines()[-1]) < 300
    assert {path.name: path.read_bytes() for path in results.iterdir()} == saved


def test_linear_protocol_bad_input_is_a_one_line_error(trained, tmp_path, capsys):
    data_root, checkpoint = trained
    argv = ["--checkpoint", checkpoint, "--data-dir", data_root, "--mode", "1"]
    argv += ["--protocol", "linear", "--linear-epochs", "1"]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run_infer([*argv, "--results-dir", str(blocker / "results")], capsys)
    assert code == 2 and "cannot be written" in err and "Traceback" not in err

    no_backbone = tmp_path / "no_backbone.ckpt"  # records the model, holds no encoder_q
    ms.save_checkpoint(
        [{"name": "queue", "data": ms.Tensor(np.zeros(3))}],
        str(no_backbone),
        append_dict=TINY_MODEL,
    )
    argv[1] = str(no_backbone)
    code, err = run_infer(argv, capsys)
    assert code == 2 and "does not fit" in err and "missing: net.0.weight" in err
    assert sorted(os.listdir(tmp_path)) == ["a-file", "no_backbone.ckpt"]
