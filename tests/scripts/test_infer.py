"""infer.py end to end on the checkpoint of `full_run`, and the mechanisms it wires."""
import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import yaml

from helpers import REPO_ROOT

import infer
from src.data import create_eval_dataset, get_dataset_spec, load_cifar
from src.eval.feature_cache import FeatureCache
from src.eval.features import (BackboneAndEmbedding, extract_backbone_and_embedding,
                                 extract_features)
from src.eval.knn import knn_predict, l2_normalize
from src.eval.linear_probe import (LinearProbeConfig, linear_probe_lr, predict_ranked,
                                     train_linear_classifier)
from src.eval.metrics import classification_report
from src.models import create_backbone

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck"]


@pytest.fixture(scope="module")
def knn_run(trained):
    """infer.py as a user runs it: a new process, graph mode (the training config's)."""
    data_root, checkpoint = trained
    proc = subprocess.run([sys.executable, "infer.py", "--checkpoint", checkpoint, "--data-dir",
                           data_root, "--batch_size", "16"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    return proc, os.path.join(os.path.dirname(checkpoint), "eval_knn.json")


@pytest.fixture(autouse=True)
def pynative_afterwards():
    """In-process runs set the execution mode; the other test modules expect PyNative."""
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def test_knn_end_to_end(knn_run):
    proc, json_path = knn_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Features [train]" in proc.stderr and "Traceback" not in proc.stderr
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
    monkeypatch.setattr(infer, "extract_backbone_and_embedding",
                        lambda *args, **kwargs: calls.append(args))
    output = tmp_path / "linear.json"
    code = infer.main(["--checkpoint", checkpoint, "--data-dir", data_root, "--mode", "1",
                       "--protocol", "linear", "--linear-epochs", "5",
                       "--output-json", str(output)])
    assert code == 0 and calls == []
    result = json.loads(output.read_text())
    assert result["features_from_cache"] is True
    assert 0 <= result["linear_top1"] <= result["linear_top5"] <= 100
    assert list(result["per_class"]) == CIFAR10_CLASSES
    assert result["linear"]["lr"] == 30.0 and result["linear"]["epochs"] == 5


def test_one_pass_gives_backbone_features_and_the_monitor_embedding(tiny_cifar10):
    split = load_cifar("cifar10", tiny_cifar10, "test").subset(12)
    spec = get_dataset_spec("cifar10")
    encoder = create_backbone("resnet18", num_classes=16, bn_splits=2)
    backbone, embedding, labels = extract_backbone_and_embedding(
        BackboneAndEmbedding(encoder), create_eval_dataset(split, spec.mean, spec.std, 8), 8)
    monitor, monitor_labels = extract_features(encoder, create_eval_dataset(
        split, spec.mean, spec.std, 8), 8)
    assert backbone.shape == (12, 512) and embedding.shape == (12, 16)
    np.testing.assert_allclose(embedding, monitor, atol=1e-5)
    np.testing.assert_array_equal(labels, monitor_labels)
    np.testing.assert_array_equal(labels, split.labels)
    fc = encoder.net[-1]
    np.testing.assert_allclose(
        l2_normalize(backbone @ fc.weight.asnumpy().T + fc.bias.asnumpy()), embedding, atol=1e-5)


def test_feature_cache_keys(tmp_path):
    checkpoint = tmp_path / "model_last.ckpt"
    checkpoint.write_bytes(b"weights")
    cache = FeatureCache(str(tmp_path), str(checkpoint))
    calls = []

    def compute():
        calls.append(1)
        return {"embedding": np.full((3, 2), len(calls), np.float32)}

    key = cache.key("train", images=3)
    first = cache.get_or_compute("cifar10-train", key, compute)
    again = cache.get_or_compute("cifar10-train", cache.key("train", images=3), compute)
    assert (first.loaded, again.loaded, len(calls)) == (False, True, 1)
    np.testing.assert_array_equal(again.arrays["embedding"], first.arrays["embedding"])
    assert os.path.basename(again.path) == "features-model_last-cifar10-train.npz"

    assert not cache.get_or_compute("cifar10-train", cache.key("train", images=4), compute).loaded
    os.utime(checkpoint, ns=(1, 1))  # main.py rewrote the checkpoint
    assert not cache.get_or_compute("cifar10-train", cache.key("train", images=4), compute).loaded
    with open(cache.path("cifar10-train"), "wb") as f:
        f.write(b"truncated")
    assert not cache.get_or_compute("cifar10-train", cache.key("train", images=4), compute).loaded
    assert len(calls) == 4


def unit(degrees):
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_knn_accuracy_on_hand_made_features():
    # Two bank points per class, 10 degrees apart; classes at 0, 90 and 180 degrees.
    bank = unit([0, 10, 90, 100, 180, 190])
    bank_labels = np.array([0, 0, 1, 1, 2, 2])
    # Three queries sit between their class's points; the last (class 0) is nearer class 1.
    queries = unit([5, 95, 185, 60])
    labels = np.array([0, 1, 2, 0])
    ranked = knn_predict(queries, bank, bank_labels, num_classes=3, k=2, t=0.1)
    np.testing.assert_array_equal(ranked[:, 0], [0, 1, 2, 1])
    report = classification_report(ranked, labels, ["a", "b", "c"])
    assert report["top1"] == 75.0
    assert report["per_class"] == {"a": 50.0, "b": 100.0, "c": 100.0}
    assert report["top5"] == 100.0  # with 3 classes, "top-5" is top-3


def test_per_class_accuracy_of_a_class_without_images_is_none():
    ranked = np.array([[0, 1, 2], [1, 0, 2]])
    report = classification_report(ranked, np.array([0, 0]), ["a", "b", "c"])
    assert report["per_class"] == {"a": 50.0, "b": None, "c": None}


def toy_blobs(rng, per_class, num_classes=3, dim=8):
    centres = 4.0 * np.eye(num_classes, dim)
    labels = np.repeat(np.arange(num_classes), per_class)
    features = centres[labels] + rng.normal(0, 0.5, (len(labels), dim))
    return features.astype(np.float32), labels


def test_linear_probe_separates_toy_features():
    rng = np.random.default_rng(0)
    train_x, train_y = toy_blobs(rng, 100)
    test_x, test_y = toy_blobs(rng, 50)
    losses = []
    classifier = train_linear_classifier(train_x, train_y, 3, LinearProbeConfig(epochs=10),
                                         on_epoch=lambda epoch, lr, loss: losses.append(loss))
    report = classification_report(predict_ranked(classifier, test_x), test_y, ["a", "b", "c"])
    assert report["top1"] >= 99.0
    assert len(losses) == 10 and losses[-1] < losses[0]


def test_linear_probe_first_step_is_plain_sgd():
    rng = np.random.default_rng(1)
    x, y = toy_blobs(rng, 4)
    config = LinearProbeConfig(epochs=1, lr=0.5, batch_size=len(x), init_std=0.0)
    classifier = train_linear_classifier(x, y, 3, config)
    # From zero weights the softmax is uniform: grad = (1/C - onehot)^T x / N.
    grad_logits = (np.full((len(x), 3), 1 / 3) - np.eye(3)[y]) / len(x)
    np.testing.assert_allclose(classifier.weight, -0.5 * grad_logits.T @ x, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(classifier.bias, -0.5 * grad_logits.sum(axis=0), atol=1e-7)


def test_linear_probe_schedule_is_main_lincls():
    step = LinearProbeConfig()
    assert [linear_probe_lr(e, step) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx(
        [30, 30, 3, 3, 0.3, 0.3])
    cosine = LinearProbeConfig(cos=True)
    assert linear_probe_lr(0, cosine) == 30 and linear_probe_lr(50, cosine) == pytest.approx(15)


def run_infer(argv, capsys):
    code = infer.main(argv)
    return code, capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(capsys, tmp_path):
    code, err = run_infer(["--checkpoint", str(tmp_path / "nope.ckpt")], capsys)
    assert code == 2 and "checkpoint not found" in err and "Traceback" not in err


def test_checkpoint_of_another_model_is_refused(trained, tmp_path, capsys):
    data_root, checkpoint = trained
    with open(os.path.join(os.path.dirname(checkpoint), "config.yaml")) as f:
        config = yaml.safe_load(f)
    config["moco_dim"] = 8
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    os.symlink(checkpoint, tmp_path / "model_last.ckpt")
    code, err = run_infer(["--checkpoint", str(tmp_path / "model_last.ckpt"), "--data-dir",
                           data_root, "--mode", "1"], capsys)
    assert code == 2 and "another model" in err and "moco_dim" in err


def test_missing_config_and_corrupt_checkpoint_are_clear_errors(trained, tmp_path, capsys):
    data_root, checkpoint = trained
    garbage = tmp_path / "model_last.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    code, err = run_infer(["--checkpoint", str(garbage), "--data-dir", data_root], capsys)
    assert code == 2 and "training config not found" in err and "--config" in err

    config = os.path.join(os.path.dirname(checkpoint), "config.yaml")
    code, err = run_infer(["--checkpoint", str(garbage), "--config", config, "--data-dir",
                           data_root, "--mode", "1"], capsys)
    assert code == 2 and "cannot read checkpoint" in err
