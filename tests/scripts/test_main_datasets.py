"""main.py, infer.py and visualize.py end to end on STL-10 and on folders of images (tiny data in
the real formats): what trains, what the kNN monitor banks and queries, what is recorded."""

import json
import os

import mindspore as ms
import pytest
import yaml

import infer
import main as main_module
import visualize
from helpers import (
    TINY,
    checkpoint_arrays,
    read_log,
    run_main,
    write_fake_stl10,
    write_image_folder,
)


@pytest.fixture(autouse=True)
def pynative_afterwards():
    """In-process runs set the execution mode; the other test modules expect PyNative."""
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def train(data_dir, results, *flags):
    """One epoch of main.py (a new process, graph mode) on the tiny recipe."""
    args = ["--data-dir", str(data_dir), "--results-dir", str(results), "--epochs", "1"]
    proc = run_main([*args, *TINY, *flags])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def infer_knn(checkpoint):
    """infer.py's kNN result (JSON) on a checkpoint, with the data of its training config."""
    proc = run_main(["--checkpoint", checkpoint, "--batch_size", "16"], script="infer.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(os.path.dirname(checkpoint), "eval_knn.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def stl10_run(tmp_path_factory):
    """STL-10 at its 96 pixels (ImageNet stem) with MoCo v2's augmentation, blur included."""
    root = write_fake_stl10(tmp_path_factory.mktemp("stl10"))  # 32 unlabeled, 20 train, 10 test
    results = tmp_path_factory.mktemp("stl10-run") / "run"
    return results, train(root, results, "--dataset", "stl10", "--aug-plus", "--mlp")


def test_stl10_pretrains_on_unlabeled_and_monitors_train_against_test(stl10_run):
    results, proc = stl10_run
    assert "stl10: 32 images to train on; kNN monitor: 20 bank / 10 test images" in proc.stderr
    with open(results / "config.yaml") as f:
        config = yaml.safe_load(f)
    assert (config["image_size"], config["stem"]) == (96, "imagenet")
    state = checkpoint_arrays(str(results / "model_last.ckpt"))
    assert state["stem"] == "imagenet" and int(state["image_size"]) == 96
    assert state["encoder_q.net.0.weight"].shape == (64, 3, 7, 7)
    result = infer_knn(str(results / "model_last.ckpt"))
    assert (result["num_train_images"], result["num_test_images"]) == (20, 10)
    assert f"{result['knn_top1']:.2f}" == read_log(results)[-1]["knn_top1"]  # the same kNN


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """An ImageFolder with train/ and val/ of PNG and JPEG images of several sizes, and one
    corrupt file skipped by --skip-bad-images."""
    root = write_image_folder(tmp_path_factory.mktemp("images"), {"train": 36, "val": 12})
    (root / "train" / "class_1" / "broken.png").write_bytes(b"not a png")
    results = tmp_path_factory.mktemp("folder-run") / "run"
    return results, train(root, results, "--dataset", "folder", "--skip-bad-images")


def test_folder_trains_skips_a_bad_image_and_evaluates_on_val(folder_run):
    results, proc = folder_run
    assert "skipped 1 unreadable images (--skip-bad-images), e.g. " in proc.stderr
    assert "broken.png" in proc.stderr
    assert "folder: 36 images to train on; kNN monitor: 36 bank / 12 test images" in proc.stderr
    result = infer_knn(str(results / "model_last.ckpt"))
    assert list(result["per_class"]) == ["class_0", "class_1", "class_2"]
    assert f"{result['knn_top1']:.2f}" == read_log(results)[-1]["knn_top1"]


def test_retrieval_grid_of_a_folder(folder_run, tmp_path, capsys):
    results, _ = folder_run
    output = tmp_path / "grid.png"
    argv = ["--checkpoint", str(results / "model_last.ckpt"), "--num-queries", "2"]
    assert visualize.main([*argv, "--topk", "3", "--output", str(output)]) == 0
    assert output.is_file() and capsys.readouterr().out.strip() == str(output)


def test_unlabeled_flat_folder_trains_without_monitor_and_infer_says_why(tmp_path, capsys):
    root = write_image_folder(tmp_path / "flat", {"": 20}, classes=0)
    results = tmp_path / "run"
    argv = ["--dataset", "folder", "--data-dir", str(root), "--results-dir", str(results)]
    assert main_module.main([*argv, "--epochs", "1", *TINY]) == 0
    assert "kNN monitor: off (needs labelled train and val images)" in capsys.readouterr().err
    assert [row["knn_top1"] for row in read_log(results)] == [""]
    assert infer.main(["--checkpoint", str(results / "model_last.ckpt")]) == 2
    assert "no labelled train and val images to evaluate on" in capsys.readouterr().err


def test_bad_image_is_named_without_skip_bad_images(tmp_path, capsys):
    root = write_image_folder(tmp_path / "flat", {"": 20}, classes=0)
    (root / "zz.jpg").write_bytes(b"\xff\xd8 truncated")
    argv = ["--dataset", "folder", "--data-dir", str(root), "--results-dir", str(tmp_path / "r")]
    assert main_module.main([*argv, *TINY]) == 2
    assert f"{root / 'zz.jpg'} is not a readable image" in capsys.readouterr().err
