"""Exports a checkpoint's encoder_q as MindIR, ONNX or a torchvision ResNet state_dict (.pth).

``python -m src.tools.export CKPT OUT --format mindir|onnx|pth-backbone [--with-head]``. The
graphs map normalised N x 3 x S x S float32 images (S: the checkpoint's image size) to the pooled
features (``--with-head``: the fc output); ``--batch-size`` fixes N (ONNX: 1 by default)."""

import argparse
import os
import sys
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from ..eval.evaluate import restore_encoder
from ..models.split_bn import SCRATCH_PREFIX
from . import ConversionError, run_tool, save_torch, write_atomically
from .convert_pytorch import STAGES, mindspore_state_to_torch

EXTENSIONS = {"mindir": (".mindir",), "onnx": (".onnx",), "pth-backbone": (".pth", ".pt")}
# An encoder's ``net.N`` (the demo's and ours) as torchvision's ResNet module.
TORCHVISION = {"0": "conv1", "1": "bn1", "9": "fc"}
TORCHVISION.update({str(index): f"layer{n}" for n, index in enumerate(STAGES, 1)})


class GlobalAvgPool(nn.Cell):
    """``AdaptiveAvgPool2d(1)`` as a mean over H and W, which the ONNX exporter converts."""

    def construct(self, x):
        return x.mean(axis=(2, 3), keep_dims=True)


def torchvision_state(encoder: nn.Cell, with_head: bool = False) -> dict[str, np.ndarray]:
    """A backbone's tensors under torchvision's ResNet keys (``fc.*`` only ``with_head``)."""
    ours = {p.name: p.asnumpy() for p in encoder.get_parameters() if SCRATCH_PREFIX not in p.name}
    state = {}
    for key, value in mindspore_state_to_torch(ours).items():
        _, index, rest = key.split(".", 2)  # net.N.rest
        if with_head or TORCHVISION[index] != "fc":
            state[f"{TORCHVISION[index]}.{rest}"] = value
    return state


class _ViT(nn.Cell):
    """A ViT's ``forward_features`` (the normed cls token), or with its head."""

    def __init__(self, encoder: nn.Cell, with_head: bool):
        super().__init__(auto_prefix=False)
        self.encoder, self.with_head = encoder, with_head

    def construct(self, x):
        features = self.encoder.forward_features(x)
        return self.encoder.embed(features) if self.with_head else features


def export(
    checkpoint: str, out: str, fmt: str, with_head: bool = False, batch_size: Optional[int] = None
) -> dict:
    """Writes ``checkpoint``'s encoder_q to ``out`` (atomically) as ``fmt``; returns the
    checkpoint's settings. Raises ConversionError or CheckpointError."""
    if fmt not in EXTENSIONS:
        raise ConversionError(f"unknown format {fmt!r}; choose from {', '.join(EXTENSIONS)}")
    if not out.endswith(EXTENSIONS[fmt]):
        raise ConversionError(f"--format {fmt} writes {' or '.join(EXTENSIONS[fmt])}, not {out}")
    if not os.path.isdir(folder := os.path.dirname(os.path.abspath(out))):
        raise ConversionError(f"cannot write {out}: no folder {folder}")
    if batch_size is not None and batch_size < 1:
        raise ConversionError(f"--batch-size must be at least 1, not {batch_size}")
    encoder, settings = restore_encoder(checkpoint)
    if fmt == "pth-backbone":
        if not hasattr(encoder, "net"):
            raise ConversionError(
                f"pth-backbone is a torchvision ResNet; {settings['arch']} is not"
            )
        save_torch(torchvision_state(encoder, with_head), out)
        return settings
    if fmt == "onnx" and not hasattr(encoder, "net"):  # seen with MindSpore 2.10
        raise ConversionError("MindSpore cannot export a ViT to ONNX (no Erf, GELU's): use mindir")
    net = encoder.net if hasattr(encoder, "net") else _ViT(encoder, with_head)
    for index, cell in enumerate(net if hasattr(encoder, "net") else ()):
        if isinstance(cell, nn.AdaptiveAvgPool2d):  # a pool ONNX converts
            net[index] = GlobalAvgPool()
    if not with_head and hasattr(encoder, "net"):
        net[-1] = nn.Identity()
    # MindSpore 2.10 declares ONNX outputs with the traced batch size: trace a fixed one.
    shape = (batch_size or (1 if fmt == "onnx" else None), 3, *[settings["image_size"]] * 2)
    if shape[0] is None:
        x = ms.Tensor(shape=shape, dtype=ms.float32)
    else:
        x = ms.Tensor(np.zeros(shape, np.float32))
    if fmt == "mindir":
        write_atomically(out, lambda path: ms.export(net, x, file_name=path, file_format="MINDIR"))
    else:
        output = "embedding" if with_head else "features"
        names = dict(input_names=["images"], output_names=[output])
        write_atomically(out, lambda path: ms.onnx.export(net, x, file_name=path, **names))
    return settings


def _export(checkpoint, out, fmt, with_head, batch_size) -> str:
    settings = export(checkpoint, out, fmt, with_head, batch_size)
    what = "fc output" if with_head else "pooled features"
    return f"wrote {out}: {what} of encoder_q, epoch {settings.get('epoch', 0)}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.tools.export", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    add = parser.add_argument
    add("checkpoint", metavar="CKPT", help="a checkpoint written by main.py")
    add("out", metavar="OUT", help="the file to write: .mindir, .onnx or .pth/.pt")
    add("--format", dest="fmt", required=True, metavar="|".join(EXTENSIONS), help="what to write")
    add("--with-head", action="store_true", help="output the fc, not the pooled features")
    add("--batch-size", type=int, help="a fixed batch size (default: any; 1 for ONNX)")
    return run_tool(_export, **vars(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
