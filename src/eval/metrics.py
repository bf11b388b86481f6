"""Accuracy reports of ranked class predictions: top-k overall and top-1 per class.

Works for any classifier that ranks classes per image (the weighted kNN's
``knn_predict``, the linear probe's ``predict_ranked``).

Example::

    report = classification_report(ranked, test_labels, class_names)
    report["top1"], report["top5"], report["per_class"]["cat"]
"""
from typing import Dict, Optional, Sequence

import numpy as np

from .knn import knn_accuracy

__all__ = ["per_class_accuracy", "classification_report"]


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray,
                       class_names: Sequence[str]) -> Dict[str, Optional[float]]:
    """Top-1 accuracy (percent) over the images of each class.

    Args:
        predictions: Predicted class per image, shape (B,).
        labels: True class per image, shape (B,), in ``[0, len(class_names))``.
        class_names: Name of each class, in label order.

    Returns:
        Class name to accuracy in percent, in label order; ``None`` for a
        class with no image (e.g. in a small test subset).

    Raises:
        ValueError: If the shapes differ.
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.shape != labels.shape or labels.ndim != 1:
        raise ValueError(f"need predictions and labels of the same shape (B,), got "
                         f"{predictions.shape} and {labels.shape}")
    num_classes = len(class_names)
    totals = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels[predictions == labels], minlength=num_classes)
    return {name: (100.0 * float(correct[i]) / float(totals[i]) if totals[i] else None)
            for i, name in enumerate(class_names)}


def classification_report(ranked: np.ndarray, labels: np.ndarray,
                          class_names: Sequence[str]) -> Dict[str, object]:
    """Top-1, top-5 and per-class top-1 accuracy of ranked predictions.

    Args:
        ranked: Class indices ranked best first, shape (B, C).
        labels: True classes, shape (B,).
        class_names: Name of each class, in label order.

    Returns:
        ``{"top1": float, "top5": float, "per_class": {name: float or None}}``,
        accuracies in percent. With fewer than 5 classes, ``top5`` is the
        top-C accuracy (100).
    """
    ranked = np.asarray(ranked)
    topk = knn_accuracy(ranked, labels, topk=(1, min(5, ranked.shape[1])))
    return {"top1": topk["top1"], "top5": topk[f"top{min(5, ranked.shape[1])}"],
            "per_class": per_class_accuracy(ranked[:, 0], labels, class_names)}
