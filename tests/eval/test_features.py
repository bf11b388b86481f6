"""Tests for src.eval.features: one pass gives backbone features and the kNN embedding."""

import mindspore as ms
import numpy as np

from src.data import ImageSplit, Splits, create_eval_dataset, get_dataset
from src.data.cifar import load_cifar
from src.eval.features import (
    BackboneAndEmbedding,
    KnnMonitor,
    create_knn_monitor,
    extract_features,
)
from src.eval.knn import knn_predict, l2_normalize
from src.models import create_backbone


def test_one_pass_gives_backbone_features_and_the_normalised_embedding(tiny_cifar10):
    split = load_cifar("cifar10", tiny_cifar10, "test").subset(12)
    spec = get_dataset("cifar10")
    encoder = create_backbone("resnet18", num_classes=16, bn_splits=2)
    dataset = create_eval_dataset(split, spec.mean, spec.std, 8)  # 12 = 8 + a padded 4
    features = extract_features(BackboneAndEmbedding(encoder), dataset, 8)
    backbone, embedding = features["backbone"], features["embedding"]
    assert backbone.shape == (12, 512) and embedding.shape == (12, 16)
    np.testing.assert_array_equal(features["labels"], split.labels)
    fc = encoder.net[-1]
    np.testing.assert_allclose(
        l2_normalize(backbone @ fc.weight.asnumpy().T + fc.bias.asnumpy()), embedding, atol=1e-5
    )
    first = next(dataset.create_dict_iterator(num_epochs=1, output_numpy=True))["image"]
    direct = encoder(ms.Tensor(first)).asnumpy()  # the whole encoder, as in training
    np.testing.assert_allclose(l2_normalize(direct), embedding[:8], atol=1e-5)


def test_knn_monitor_is_the_knn_of_the_extracted_features(tiny_cifar10):
    train = load_cifar("cifar10", tiny_cifar10, "train")
    test = load_cifar("cifar10", tiny_cifar10, "test")
    encoder = create_backbone("resnet18", num_classes=16, bn_splits=2)
    spec = get_dataset("cifar10")
    monitor = KnnMonitor(encoder, train, test, (spec.mean, spec.std), k=5, t=0.1, batch_size=16)
    bank, queries = (
        extract_features(monitor.network, create_eval_dataset(split, spec.mean, spec.std, 16), 16)
        for split in (train, test)
    )
    ranked = knn_predict(queries["embedding"], bank["embedding"], bank["labels"], 10, 5, 0.1)
    assert monitor() == 100.0 * np.mean(ranked[:, 0] == test.labels)


def test_monitor_needs_labelled_queries_and_can_take_a_bank_subset(tiny_cifar10):
    """``--knn-bank-subset N``: the first N train images as bank; no monitor without labelled
    queries (a folder without val/) or without classes (a flat folder)."""
    train = load_cifar("cifar10", tiny_cifar10, "train")
    test = load_cifar("cifar10", tiny_cifar10, "test")
    encoder = create_backbone("resnet18", num_classes=16, bn_splits=2)
    settings = dict(dataset="cifar10", k=5, t=0.1, image_size=32)
    data = Splits(train, train, test)
    assert len(create_knn_monitor(encoder, data, **settings).bank) == len(train)
    monitor = create_knn_monitor(encoder, data, bank_subset=10, **settings)
    assert monitor.bank.images.base is train.images  # the first 10, not a copy
    assert monitor.describe() == f"10 bank / {len(test)} test images, 10 classes"
    assert create_knn_monitor(encoder, Splits(train, train, None), **settings) is None
    unlabeled = ImageSplit(train.images, np.full(len(train), -1), [])
    assert create_knn_monitor(encoder, Splits(unlabeled, unlabeled, test), **settings) is None
