"""What every reader returns: images in memory (or memmapped) and their labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class DatasetError(Exception):
    """Any problem finding, fetching or reading a data set; the message names file and fix."""


@dataclass
class ImageSplit:
    """uint8 (N, H, W, 3) RGB images and int labels indexing ``classes`` (-1: unlabeled)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, size: int) -> ImageSplit:
        return ImageSplit(self.images[:size], self.labels[:size], self.classes)


class Splits(NamedTuple):
    """``pretrain`` trains the encoder; ``bank`` is the labelled kNN memory bank and linear-probe
    train set; ``queries`` are evaluated (None without labelled held-out images)."""

    pretrain: ImageSplit
    bank: ImageSplit
    queries: ImageSplit | None

    @property
    def evaluable(self) -> bool:
        return self.queries is not None and self.bank.num_classes > 0
