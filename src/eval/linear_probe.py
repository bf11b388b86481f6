"""Linear evaluation of frozen features: a softmax classifier trained with SGD, in NumPy.

MoCo's ``main_lincls.py`` protocol (SGD, momentum 0.9, lr 30, 100 epochs, lr x0.1 at 60 and 80,
batch 256, weights N(0, 0.01)), but on features extracted once from un-augmented test-transform
images: much cheaper, typically a little lower. NumPy gives bit-reproducible ``torch.optim.SGD``.
"""

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class LinearProbeConfig:
    """MoCo's linear protocol. ``schedule``: 0-based epochs where lr drops 10x (ignored with
    ``cos``); ``seed``: initial weights and every epoch's order (the last, smaller batch kept)."""

    epochs: int = 100
    lr: float = 30.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 256
    cos: bool = False
    schedule: tuple[int, ...] = field(default=(60, 80))
    seed: int = 0
    init_std: float = 0.01


@dataclass
class LinearClassifier:
    """``logits = features @ weight.T + bias``; weight float32 C x F, bias float32 C."""

    weight: np.ndarray
    bias: np.ndarray


def linear_probe_lr(epoch: int, config: LinearProbeConfig) -> float:
    """Learning rate of a 0-based ``epoch`` (``main_lincls.py`` counts from 0, unlike the
    pretraining schedule): with milestones (60, 80), 30 for 60 epochs, 3 for 20, 0.3 for 20."""
    lr = config.lr
    if config.cos:
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    for milestone in config.schedule:
        lr *= 0.1 if epoch >= milestone else 1.0
    return lr


def train_linear_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: LinearProbeConfig = LinearProbeConfig(),
    on_epoch: Optional[Callable[[int, float, float], None]] = None,
) -> LinearClassifier:
    """Trains softmax regression (mean cross-entropy) on N x F features with ``torch.optim.SGD``'s
    update: ``g = grad + wd * w``, ``buf = momentum * buf + g``, ``w -= lr * buf``.
    ``on_epoch(epoch (1-based), lr, mean loss)`` reports progress."""
    x_all, y_all = np.asarray(features, dtype=np.float32), np.asarray(labels)
    if x_all.ndim != 2 or y_all.shape != x_all.shape[:1] or len(x_all) == 0:
        raise ValueError(f"need features N x F and labels N, N > 0: {x_all.shape}, {y_all.shape}")
    if y_all.dtype.kind not in "iu" or not 0 <= y_all.min() <= y_all.max() < num_classes:
        raise ValueError(f"labels must be integers in [0, {num_classes})")
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0: {config}")
    n, m, wd = len(x_all), config.momentum, config.weight_decay
    rng = np.random.default_rng(config.seed)
    w = (rng.standard_normal((num_classes, x_all.shape[1])) * config.init_std).astype(np.float32)
    b = np.zeros(num_classes, dtype=np.float32)
    w_buf, b_buf = np.zeros_like(w), np.zeros_like(b)
    for epoch in range(config.epochs):
        lr = np.float32(linear_probe_lr(epoch, config))
        order, total_loss = rng.permutation(n), 0.0
        for start in range(0, n, config.batch_size):
            index = order[start : start + config.batch_size]
            x, y, rows = x_all[index], y_all[index], np.arange(len(index))
            logits = x @ w.T + b  # B x C
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))  # lr 30: large logits
            probs = exp / exp.sum(axis=1, keepdims=True)
            total_loss += float(-np.log(np.maximum(probs[rows, y], 1e-30)).sum())
            probs[rows, y] -= 1.0  # now d loss / d logits, times B
            probs /= np.float32(len(index))
            w_buf = m * w_buf + (probs.T @ x + wd * w)
            b_buf = m * b_buf + (probs.sum(axis=0) + wd * b)
            w, b = w - lr * w_buf, b - lr * b_buf
        if on_epoch is not None:
            on_epoch(epoch + 1, float(lr), total_loss / n)
    return LinearClassifier(weight=w, bias=b)


def predict_ranked(classifier: LinearClassifier, features: np.ndarray) -> np.ndarray:
    """Classes ranked by logit, best first, B x C; ties rank the lower index first."""
    logits = np.asarray(features, dtype=np.float32) @ classifier.weight.T + classifier.bias
    return np.argsort(-logits, axis=1, kind="stable")
