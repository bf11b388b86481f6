"""Feature extraction for the kNN monitor and evaluation."""
import numpy as np
import mindspore as ms
from mindspore import nn

from ..utils.progress import Progress
from .knn import knn_accuracy, knn_predict, l2_normalize


def _pad_batch(images, batch_size):
    """Pads a short last batch with copies of its last image; returns it and the real count."""
    n = len(images)
    if n < batch_size:
        images = np.concatenate([images, np.repeat(images[-1:], batch_size - n, axis=0)])
    return images, n


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
        images, n = _pad_batch(batch["image"], batch_size)
        features.append(encoder(ms.Tensor(images)).asnumpy()[:n])
        labels.append(batch["label"])
    return l2_normalize(np.concatenate(features)), np.concatenate(labels)


def knn_monitor(encoder, bank_dataset, test_dataset, num_classes, k, t, batch_size):
    """Weighted kNN accuracy (percent) of ``encoder``: train-set bank, test-set queries."""
    bank, bank_labels = extract_features(encoder, bank_dataset, batch_size)
    queries, labels = extract_features(encoder, test_dataset, batch_size)
    ranked = knn_predict(queries, bank, bank_labels, num_classes, k, t)
    return knn_accuracy(ranked, labels, topk=(1, min(5, num_classes)))


class BackboneAndEmbedding(nn.Cell):
    """Runs an encoder once and returns its pooled features and its fc output.

    Build it once per encoder and reuse it: in graph mode every new cell is
    compiled again.

    Args:
        encoder: A :class:`~src.models.ResNetCifar` (e.g. ``MoCo.encoder_q``).
    """

    def __init__(self, encoder):
        # auto_prefix=False keeps the encoder's parameter names (they match checkpoints).
        super().__init__(auto_prefix=False)
        self.encoder = encoder

    def construct(self, x):
        features = self.encoder.forward_features(x)
        return features, self.encoder.net[-1](features)


def extract_backbone_and_embedding(network, dataset, batch_size, desc="Features"):
    """Backbone features and L2-normalised embeddings of every image of an eval dataset, in order.

    One forward pass gives both what linear evaluation trains on (the pooled
    features before the fc, 512-d for ResNet-18, not normalised) and what
    the kNN monitor compares (the fc output, L2-normalised). As in
    :func:`extract_features`, the last smaller batch is padded to
    ``batch_size`` so a compiled graph sees one input shape only.

    Args:
        network: A :class:`BackboneAndEmbedding`.
        dataset: Batches with columns ``image`` and ``label``, e.g. from
            ``create_eval_dataset``.
        batch_size: The dataset's batch size.
        desc: Label of the progress display.

    Returns:
        ``(backbone, embedding, labels)``: float32 N x F, float32 N x D with
        unit rows, and int N.
    """
    network.set_train(False)
    progress = Progress(dataset.get_dataset_size(), desc, batch_size)
    backbone, embedding, labels = [], [], []
    for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        images, n = _pad_batch(batch["image"], batch_size)
        features, fc_output = network(ms.Tensor(images))
        backbone.append(features.asnumpy()[:n])
        embedding.append(fc_output.asnumpy()[:n])
        labels.append(batch["label"])
        progress.update()
    progress.close()
    return (np.concatenate(backbone), l2_normalize(np.concatenate(embedding)),
            np.concatenate(labels))
