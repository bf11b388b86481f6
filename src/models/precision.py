"""Mixed precision of an encoder (``--amp-level``), keeping its float32 weights as the master copy.

O1 runs convolutions and dense layers in float16; O2 runs every layer in float16 but BatchNorm
(statistics in float16 lose too much). Cell names and parameters are untouched, so checkpoints
stay the same; MoCo casts the encoders' outputs back to float32 before the contrastive logits.
"""

import mindspore as ms
from mindspore import nn

from .split_bn import SplitBatchNorm

AMP_LEVELS = ("O0", "O1", "O2")


def apply_mixed_precision(encoder: nn.Cell, level: str, dtype=ms.float16) -> nn.Cell:
    """Sets the compute type of ``encoder``'s cells for ``level`` (O0: float32 throughout)."""
    if level not in AMP_LEVELS:
        raise ValueError(f"unknown amp level {level!r}; available: {', '.join(AMP_LEVELS)}")
    if level == "O2":
        encoder.to_float(dtype)
    for _, cell in encoder.cells_and_names():
        if level == "O1" and isinstance(cell, (nn.Conv2d, nn.Dense)):
            cell.to_float(dtype)
        elif level == "O2" and isinstance(cell, SplitBatchNorm):
            cell.to_float(ms.float32)
    return encoder
