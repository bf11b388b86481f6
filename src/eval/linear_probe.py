"""Linear evaluation of frozen features: a softmax classifier trained with SGD, in NumPy.

MoCo's linear protocol (facebookresearch/moco ``main_lincls.py``) trains one
fully connected layer on the frozen backbone's pooled features with SGD,
momentum 0.9, lr 30, no weight decay, 100 epochs, lr x0.1 at epochs 60 and
80 (or a cosine schedule), batch 256, weights drawn from N(0, 0.01), zero
bias. That script augments every image (random crop, flip) and so runs the
backbone in every step. Here the classifier trains on features extracted
once, from the un-augmented test-transform images: the same optimiser and
schedule on cached centre features, much cheaper, but typically a little
lower than the augmented protocol.

The classifier is a few matrix products per step, so it runs in NumPy,
like the kNN monitor: exact ``torch.optim.SGD`` semantics, no graph
compilation for the smaller last batch, and bit-reproducible for a seed.

Example::

    classifier = train_linear_classifier(train_features, train_labels, num_classes=10)
    ranked = predict_ranked(classifier, test_features)  # (B, C), best class first
"""

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class LinearProbeConfig:
    """Optimisation settings; the defaults are MoCo's linear protocol. ``schedule``: 0-based
    epochs where lr drops 10x (ignored with ``cos``); ``seed``: initial weights and the order
    of every epoch; the last, smaller batch of an epoch is kept."""

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
    """Learning rate of a 0-based ``epoch``.

    ``main_lincls.py`` counts epochs from 0, unlike the CIFAR demo's
    pretraining schedule (``src.train.schedule``, 1-based): with the
    milestones (60, 80) the rate is 30 for 60 epochs, 3 for 20 and 0.3 for 20.
    """
    lr = config.lr
    if config.cos:
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    for milestone in config.schedule:
        lr *= 0.1 if epoch >= milestone else 1.0
    return lr


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # lr 30 makes large logits common
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _validate(
    features: np.ndarray, labels: np.ndarray, num_classes: int, config: LinearProbeConfig
) -> None:
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] == 0:
        raise ValueError(
            f"need features (N, F) and labels (N,) with N > 0, got {features.shape} "
            f"and {labels.shape}"
        )
    if (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() >= num_classes
    ):
        raise ValueError(f"labels must be integers in [0, {num_classes})")
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, lr > 0; got {config.epochs}, "
            f"{config.batch_size}, {config.lr}"
        )


def train_linear_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: LinearProbeConfig = LinearProbeConfig(),
    on_epoch: Optional[Callable[[int, float, float], None]] = None,
) -> LinearClassifier:
    """Trains a linear softmax classifier (cross-entropy, mean over the batch) on N x F
    features with SGD as ``torch.optim.SGD``: ``g = grad + wd * w``, ``buf = momentum * buf +
    g``, ``w -= lr * buf``. ``on_epoch(epoch (1-based), lr, mean loss)`` reports progress.

    Raises:
        ValueError: On inconsistent shapes, labels or settings.
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    _validate(features, labels, num_classes, config)
    rng = np.random.default_rng(config.seed)
    weight = rng.standard_normal((num_classes, features.shape[1])) * config.init_std
    weight = weight.astype(np.float32)
    bias = np.zeros(num_classes, dtype=np.float32)
    weight_buf, bias_buf = np.zeros_like(weight), np.zeros_like(bias)
    labels = labels.astype(np.int64)
    num_samples = features.shape[0]

    for epoch in range(config.epochs):
        lr = np.float32(linear_probe_lr(epoch, config))
        order = rng.permutation(num_samples)
        total_loss = 0.0
        for start in range(0, num_samples, config.batch_size):
            index = order[start : start + config.batch_size]
            x, y = features[index], labels[index]
            probs = _softmax(x @ weight.T + bias)
            rows = np.arange(len(index))
            total_loss += float(-np.log(np.maximum(probs[rows, y], 1e-30)).sum())
            grad_logits = probs
            grad_logits[rows, y] -= 1.0
            grad_logits /= np.float32(len(index))
            grad_weight = grad_logits.T @ x + config.weight_decay * weight
            grad_bias = grad_logits.sum(axis=0) + config.weight_decay * bias
            weight_buf = config.momentum * weight_buf + grad_weight
            bias_buf = config.momentum * bias_buf + grad_bias
            weight -= lr * weight_buf
            bias -= lr * bias_buf
        if on_epoch is not None:
            on_epoch(epoch + 1, float(lr), total_loss / num_samples)
    return LinearClassifier(weight=weight, bias=bias)


def predict_ranked(classifier: LinearClassifier, features: np.ndarray) -> np.ndarray:
    """Classes ranked by logit, best first, shape (B, C); ties rank the lower index first."""
    logits = np.asarray(features, dtype=np.float32) @ classifier.weight.T + classifier.bias
    return np.argsort(-logits, axis=1, kind="stable")
