"""Feature extraction for the kNN monitor and evaluation."""
import numpy as np
import mindspore as ms

from .knn import knn_accuracy, knn_predict, l2_normalize


def extract_features(encoder, dataset, batch_size):
    """L2-normalised features of every image of an eval dataset, in order.

    The last, smaller batch is padded to ``batch_size`` so a compiled graph
    sees one input shape only.

    Returns:
        ``(features, labels)``: float32 N x D and int N.
    """
    encoder.set_train(False)
    features, labels = [], []
    for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        images, n = batch["image"], len(batch["image"])
        if n < batch_size:
            images = np.concatenate([images, np.repeat(images[-1:], batch_size - n, axis=0)])
        features.append(encoder(ms.Tensor(images)).asnumpy()[:n])
        labels.append(batch["label"])
    return l2_normalize(np.concatenate(features)), np.concatenate(labels)


def knn_monitor(encoder, bank_dataset, test_dataset, num_classes, k, t, batch_size):
    """Weighted kNN accuracy (percent) of ``encoder``: train-set bank, test-set queries."""
    bank, bank_labels = extract_features(encoder, bank_dataset, batch_size)
    queries, labels = extract_features(encoder, test_dataset, batch_size)
    ranked = knn_predict(queries, bank, bank_labels, num_classes, k, t)
    return knn_accuracy(ranked, labels, topk=(1, min(5, num_classes)))
