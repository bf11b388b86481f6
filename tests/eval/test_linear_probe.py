"""Tests for src.eval.linear_probe: SGD steps, schedule, separability of toy features."""

import numpy as np
import pytest

from src.eval.linear_probe import (
    LinearProbeConfig,
    linear_probe_lr,
    predict_ranked,
    train_linear_classifier,
)
from src.eval.metrics import classification_report


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
    classifier = train_linear_classifier(
        train_x,
        train_y,
        3,
        LinearProbeConfig(epochs=10),
        on_epoch=lambda epoch, lr, loss: losses.append(loss),
    )
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
        [30, 30, 3, 3, 0.3, 0.3]
    )
    cosine = LinearProbeConfig(cos=True)
    assert linear_probe_lr(0, cosine) == 30 and linear_probe_lr(50, cosine) == pytest.approx(15)
