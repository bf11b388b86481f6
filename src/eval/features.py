"""Feature extraction from a frozen encoder, and the kNN monitor of training."""

from typing import Optional

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import nn

from ..data import ImageSplit, Splits, create_eval_dataset, get_dataset
from ..utils.distributed import ONE_DEVICE, gather_shards, shard_indices
from ..utils.progress import Progress
from .knn import knn_predict, l2_normalize
from .metrics import topk_accuracy

EVAL_BATCH_SIZE = 256


class BackboneAndEmbedding(nn.Cell):
    """Runs an encoder once; returns its pooled backbone features and its fc output.

    Build it once per encoder and reuse it: in graph mode every new cell is compiled again.
    """

    def __init__(self, encoder: nn.Cell):
        # auto_prefix=False keeps the encoder's parameter names (they match checkpoints).
        super().__init__(auto_prefix=False)
        self.encoder = encoder

    def construct(self, x):
        features = self.encoder.forward_features(x)
        embedding = self.encoder.embed(features)
        return features.astype(ms.float32), embedding.astype(ms.float32)  # float16 with AMP


def _pad_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
    """Pads a short last batch with copies of its last image: one input shape, one graph."""
    missing = batch_size - len(images)
    return np.concatenate([images, np.repeat(images[-1:], missing, axis=0)]) if missing else images


def extract_features(
    network: BackboneAndEmbedding, dataset: ds.Dataset, batch_size: int, desc: str = "Features"
) -> dict[str, np.ndarray]:
    """Features of every image of an eval dataset (``image``, ``label`` columns), in order.

    Returns ``backbone`` (N x F, what the linear probe trains on), ``embedding`` (N x D,
    L2-normalised: what the kNN compares) and ``labels`` (N).
    """
    network.set_train(False)
    progress = Progress(dataset.get_dataset_size(), desc, batch_size)
    backbone, embedding, labels = [], [], []
    for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        n = len(batch["image"])
        features, fc_output = network(ms.Tensor(_pad_batch(batch["image"], batch_size)))
        backbone.append(features.asnumpy()[:n])
        embedding.append(fc_output.asnumpy()[:n])
        labels.append(batch["label"])
        progress.update()
    progress.close()
    return {
        "backbone": np.concatenate(backbone),
        "embedding": l2_normalize(np.concatenate(embedding)),
        "labels": np.concatenate(labels),
    }


class KnnMonitor:
    """Weighted kNN top-1 (percent) of an encoder over a labelled bank and queries.

    On several devices each extracts its block of both splits and all gather the embeddings.
    """

    def __init__(
        self,
        encoder,
        bank,
        queries,
        normalisation,
        k,
        t,
        workers=1,
        image_size=None,
        batch_size=EVAL_BATCH_SIZE,
        group=ONE_DEVICE,
    ):
        self.network, self.group = BackboneAndEmbedding(encoder), group
        self.bank, self.queries, self.k, self.t = bank, queries, k, t
        self.mean, self.std = normalisation
        self.workers, self.batch_size, self.image_size = workers, batch_size, image_size

    def _embedding(self, split: ImageSplit, name: str) -> np.ndarray:
        index = shard_indices(len(split), self.group)
        shard = ImageSplit(split.images[index], split.labels[index], split.classes)
        dataset = create_eval_dataset(
            shard, self.mean, self.std, self.batch_size, self.workers, self.image_size
        )
        features = extract_features(self.network, dataset, self.batch_size, f"kNN [{name}]")
        return gather_shards(features["embedding"], len(split), self.group)

    def describe(self) -> str:
        bank, queries = len(self.bank), len(self.queries)
        return f"{bank} bank / {queries} test images, {self.bank.num_classes} classes"

    def __call__(self) -> float:
        bank = self._embedding(self.bank, "bank")
        queries = self._embedding(self.queries, "test")
        classes = self.bank.num_classes
        ranked = knn_predict(queries, bank, self.bank.labels, classes, self.k, self.t)
        return topk_accuracy(ranked, self.queries.labels, topk=(1,))["top1"]


def create_knn_monitor(
    encoder: nn.Cell, data: Splits, dataset: str, k: int, t: float, bank_subset: int = 0, **kwargs
) -> Optional[KnnMonitor]:
    """The training's :class:`KnnMonitor` on ``data``'s bank (its first ``bank_subset`` images
    if > 0) and queries; None without labelled queries. ``kwargs``: those of KnnMonitor."""
    if not data.evaluable:
        return None
    bank = data.bank.subset(bank_subset) if bank_subset else data.bank
    info = get_dataset(dataset)
    return KnnMonitor(encoder, bank, data.queries, (info.mean, info.std), k, t, **kwargs)
