"""Accuracy of ranked class predictions (kNN, linear probe): top-k overall, top-1 per class."""

from collections.abc import Sequence
from typing import Optional

import numpy as np


def topk_accuracy(
    ranked: np.ndarray, labels: np.ndarray, topk: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """``{"top1": ...}``: % of the B ``labels`` in the first k of ``ranked`` (B x C, best first)."""
    ranked, labels = np.asarray(ranked), np.asarray(labels)
    if ranked.ndim != 2 or labels.shape != ranked.shape[:1]:
        raise ValueError(f"need ranked B x C and labels B, got {ranked.shape}, {labels.shape}")
    if len(labels) == 0:
        raise ValueError("no queries to score")
    if not all(1 <= k <= ranked.shape[1] for k in topk):
        raise ValueError(f"top-k needs 1 <= k <= {ranked.shape[1]} classes, got {topk}")
    hits = ranked == labels[:, None]
    return {f"top{k}": 100.0 * int(hits[:, :k].any(axis=1).sum()) / len(labels) for k in topk}


def per_class_accuracy(
    predictions: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, Optional[float]]:
    """Top-1 accuracy (percent) of each class, in label order; None for a class with no image."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or labels.ndim != 1:
        raise ValueError(f"need predictions and labels B, got {predictions.shape}, {labels.shape}")
    totals = np.bincount(labels, minlength=len(class_names))
    correct = np.bincount(labels[predictions == labels], minlength=len(class_names))
    return {
        name: 100.0 * float(correct[i]) / float(totals[i]) if totals[i] else None
        for i, name in enumerate(class_names)
    }


def classification_report(
    ranked: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, object]:
    """``{"top1", "top5", "per_class"}`` in percent; with C < 5 classes ``top5`` is top-C (100)."""
    ranked = np.asarray(ranked)
    k = min(5, ranked.shape[1])
    topk = topk_accuracy(ranked, labels, topk=(1, k))
    per_class = per_class_accuracy(ranked[:, 0], labels, class_names)
    return {"top1": topk["top1"], "top5": topk[f"top{k}"], "per_class": per_class}
