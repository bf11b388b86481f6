"""MoCo's linear protocol as ``main_lincls.py`` runs it: a linear classifier on the frozen
backbone's pooled features of a new RandomResizedCrop + horizontal flip of every training image
each epoch (SGD with momentum), tested on the plain test images. The backbone stays in eval
mode: its weights and BN statistics never change."""

import hashlib
import os
from collections.abc import Callable
from typing import Optional

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import nn, ops

from ..train.checkpoint import load_checkpoint, save_checkpoint
from ..train.step import set_learning_rate
from ..utils.progress import Progress, logger
from .linear_probe import LinearProbeConfig, linear_probe_lr

CLASSIFIER_NAME = "linear_last.ckpt"


class FrozenBackboneClassifier(nn.Cell):
    """``fc(backbone(x))`` with the backbone frozen: no gradients, always in eval mode."""

    def __init__(self, encoder: nn.Cell, num_classes: int, init_std: float, seed: int):
        super().__init__()
        self.encoder = encoder
        for param in encoder.get_parameters():
            param.requires_grad = False
        weight = np.random.default_rng(seed).standard_normal((num_classes, encoder.feature_dim))
        init = ms.Tensor((weight * init_std).astype(np.float32))  # main_lincls: N(0, 0.01), 0
        self.fc = nn.Dense(encoder.feature_dim, num_classes, weight_init=init, bias_init="zeros")
        self.set_train(False)

    def set_train(self, mode: bool = True):
        super().set_train(mode)
        self.encoder.set_train(False)
        return self

    def construct(self, x):
        return self.fc(ops.stop_gradient(self.encoder.forward_features(x)))


class LinearTrainStep(nn.Cell):
    """Cross-entropy, its gradient for the fc alone, and the SGD update; returns the loss."""

    def __init__(self, classifier: FrozenBackboneClassifier, config: LinearProbeConfig):
        super().__init__(auto_prefix=False)  # names as the classifier's: fc.weight, encoder...
        self.classifier = classifier
        self.optimizer = nn.Momentum(
            classifier.fc.trainable_params(),
            learning_rate=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        loss = nn.WithLossCell(classifier, nn.CrossEntropyLoss())
        self.grad_fn = ms.value_and_grad(loss, None, self.optimizer.parameters)

    def set_train(self, mode: bool = True):
        super().set_train(mode)
        self.classifier.set_train(mode)  # which keeps its backbone in eval mode
        return self

    def construct(self, images, labels):
        loss, grads = self.grad_fn(images, labels)
        self.optimizer(grads)
        return loss


def file_digest(path: str) -> str:
    """The BLAKE2b digest of a file: the pretrained checkpoint a classifier belongs to."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def train_linear(
    step: LinearTrainStep,
    epoch_data: Callable[[int], ds.Dataset],
    config: LinearProbeConfig,
    checkpoint: str,
    recorded: dict,
    resume: Optional[str] = None,
) -> int:
    """Trains ``config.epochs`` epochs (after those of ``resume``, if given), saving the step to
    ``checkpoint`` after each with the settings ``recorded`` (a resume must have the same, and
    their names must not be parameter names); returns the first epoch trained."""
    start = 1 if resume is None else load_checkpoint(step, resume, recorded) + 1
    if start > 1:
        logger.info("resumed the linear classifier from %s at epoch %d", resume, start)
    for epoch in range(start, config.epochs + 1):
        lr = linear_probe_lr(epoch - 1, config)  # main_lincls.py counts its epochs from 0
        set_learning_rate(step.optimizer, lr)
        dataset = epoch_data(epoch)
        steps, desc = dataset.get_dataset_size(), f"Linear [{epoch}/{config.epochs}]"
        progress = Progress(steps, desc, config.batch_size)
        total, count = 0.0, 0
        for images, labels in dataset.create_tuple_iterator(num_epochs=1):
            loss = float(step(images, labels).asnumpy())
            total, count = total + loss * len(labels), count + len(labels)
            progress.update(loss=total / count, lr=lr)
        progress.close()
        save_checkpoint(step, checkpoint, epoch, recorded)
    return start


def rank_classes(classifier: FrozenBackboneClassifier, dataset: ds.Dataset) -> np.ndarray:
    """Classes ranked by logit, best first, B x C, for every image of an eval dataset."""
    classifier.set_train(False)
    logits = [classifier(image).asnumpy() for image, _ in dataset.create_tuple_iterator()]
    return np.argsort(-np.concatenate(logits), axis=1, kind="stable")


def classifier_path(results_dir: str) -> str:
    return os.path.join(results_dir, CLASSIFIER_NAME)
