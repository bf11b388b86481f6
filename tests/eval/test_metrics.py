"""Tests for src.eval.metrics: top-k and per-class accuracy of ranked predictions."""

import numpy as np
import pytest

from src.eval.knn import knn_predict
from src.eval.metrics import classification_report, topk_accuracy


def test_accuracy_percentages():
    ranked = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1]])
    labels = np.array([0, 2, 1, 1])
    # top1: only query 0 right. top2: queries 0 and 1. top3: all.
    assert topk_accuracy(ranked, labels, topk=(1, 2, 3)) == {
        "top1": 25.0,
        "top2": 50.0,
        "top3": 100.0,
    }


def test_accuracy_defaults_to_top1_and_top5():
    ranked = np.tile(np.arange(10), (2, 1))
    assert topk_accuracy(ranked, np.array([0, 4])) == {"top1": 50.0, "top5": 100.0}


def test_accuracy_rejects_k_above_classes_and_empty_input():
    with pytest.raises(ValueError, match="top-k"):
        topk_accuracy(np.zeros((2, 3), dtype=int), np.zeros(2, dtype=int), topk=(5,))
    with pytest.raises(ValueError, match="no queries"):
        topk_accuracy(np.zeros((0, 3), dtype=int), np.zeros(0, dtype=int))


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
