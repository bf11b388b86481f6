"""main.py end to end on a tiny dataset written in the real format, and its input checks."""

import os

import numpy as np
import pytest
import yaml

import main as main_module
from helpers import TINY, checkpoint_arrays, read_log, run_main


def test_end_to_end_results_folder(full_run):
    results, proc = full_run
    assert sorted(os.listdir(results)) == ["config.yaml", "log.csv", "model_last.ckpt", "train.log"]
    rows = read_log(results)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    for row in rows[1:]:
        assert np.isfinite(float(row["loss"])) and float(row["loss"]) > 0
        assert 0 <= float(row["knn_top1"]) <= 100
        assert float(row["lr"]) == pytest.approx(0.03)
    with open(os.path.join(results, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["moco_k"] == 32 and saved["epochs"] == 2 and saved["bn_splits"] == 4
    assert "kNN top-1" in proc.stderr and "img/s" in proc.stderr
    state = checkpoint_arrays(os.path.join(results, "model_last.ckpt"))
    assert int(state["epoch"]) == 2
    assert int(state["queue_ptr"][0]) == (2 * (48 // 16) * 16) % 32


def exit_code(argv):
    try:
        return main_module.main(argv)
    except SystemExit as exit_:  # argparse's own errors (e.g. an unknown choice)
        return exit_.code


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--moco-k", "40"], "moco-k 40 is not a multiple of batch_size 16"),
        (["--symmetric", "--moco-k", "48"], "moco-k 48 is not a multiple of 2 * batch_size = 32"),
        (["--bn-splits", "3"], "batch_size 16 is not a multiple of bn-splits 3"),
        (["--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["--train-subset", "8"], "batch_size 16 is larger than the training set (8 images)"),
        (["--resume", "/nonexistent/model_last.ckpt"], "checkpoint not found"),
        (["--results-dir", "/dev/null/run"], "is not writable"),
    ],
)
def test_bad_input_fails_before_training(data_root, tmp_path, capsys, extra, message):
    argv = ["--data-dir", data_root, "--results-dir", str(tmp_path / "r"), *TINY, *extra]
    assert exit_code(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_says_how_to_get_it(tmp_path, capsys):
    argv = ["--data-dir", str(tmp_path / "empty"), "--results-dir", str(tmp_path / "r"), *TINY]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert "--download" in err and "cifar-10-python.tar.gz" in err


def test_unavailable_device_is_a_clear_error(data_root, tmp_path):
    # A new process: the device cannot change once this one has run a kernel. No Ascend here.
    proc = run_main(
        [
            "--data-dir",
            data_root,
            "--results-dir",
            str(tmp_path / "r"),
            *TINY,
            "--device_target",
            "Ascend",
        ]
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "device_target Ascend is not available" in proc.stderr
    assert "--device_target CPU" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_unknown_config_key_is_refused(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("moco-k: 4096\nmoco-kk: 1\n")
    assert exit_code(["--config", str(config), "--results-dir", str(tmp_path / "r")]) == 2
    assert "moco-kk" in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(full_run, data_root, tmp_path, capsys):
    checkpoint = os.path.join(full_run[0], "model_last.ckpt")
    argv = [
        "--data-dir",
        data_root,
        "--results-dir",
        str(tmp_path / "r"),
        "--resume",
        checkpoint,
        "--epochs",
        "3",
        *TINY,
        "--moco-dim",
        "8",
    ]
    assert exit_code(argv) == 2
    assert "another model" in capsys.readouterr().err
