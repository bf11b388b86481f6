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
from . import ConversionError, run_tool, save_torch, write_atomically
from .convert_pytorch import torchvision_state

EXTENSIONS = {"mindir": (".mindir",), "onnx": (".onnx",), "pth-backbone": (".pth", ".pt")}


class GlobalAvgPool(nn.Cell):
    """``AdaptiveAvgPool2d(1)`` as a mean over H and W, which the ONNX exporter converts."""

    def construct(self, x):
        return x.mean(axis=(2, 3), keep_dims=True)


class ExportedEncoder(nn.Cell):
    """An encoder in eval mode: images to pooled features or, ``with_head``, the fc output.
    Swaps the encoder's ``AdaptiveAvgPool2d`` for ``GlobalAvgPool``."""

    def __init__(self, encoder: nn.Cell, with_head: bool):
        super().__init__(auto_prefix=False)  # keeps the encoder's parameter names
        for index, cell in enumerate(encoder.net):
            if isinstance(cell, nn.AdaptiveAvgPool2d):
                encoder.net[index] = GlobalAvgPool()
        self.encoder, self.with_head = encoder, with_head
        self.set_train(False)

    def construct(self, x):
        return self.encoder(x) if self.with_head else self.encoder.forward_features(x)


def graph_input(batch_size: Optional[int], size: int) -> ms.Tensor:
    """What a graph is traced with: ``batch_size`` x 3 x size x size float32 (None: any batch)."""
    if batch_size is None:
        return ms.Tensor(shape=(None, 3, size, size), dtype=ms.float32)
    return ms.Tensor(np.zeros((batch_size, 3, size, size), np.float32))


def export(
    checkpoint: str, out: str, fmt: str, with_head: bool = False, batch_size: Optional[int] = None
) -> dict:
    """Writes ``checkpoint``'s encoder_q to ``out`` (atomically) as ``fmt``; returns the
    checkpoint's settings. Raises ConversionError or CheckpointError."""
    if fmt not in EXTENSIONS:
        raise ConversionError(f"unknown format {fmt!r}; choose from {', '.join(EXTENSIONS)}")
    if not out.endswith(EXTENSIONS[fmt]):
        raise ConversionError(f"--format {fmt} writes {' or '.join(EXTENSIONS[fmt])}, not {out}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ConversionError(f"cannot write {out}: no folder {folder}")
    if batch_size is not None and batch_size < 1:
        raise ConversionError(f"--batch-size must be at least 1, not {batch_size}")
    encoder, settings = restore_encoder(checkpoint)
    if fmt == "pth-backbone":
        save_torch(torchvision_state(encoder, with_head), out)
        return settings
    net = ExportedEncoder(encoder, with_head)
    if fmt == "mindir":
        x = graph_input(batch_size, settings["image_size"])
        write_atomically(out, lambda path: ms.export(net, x, file_name=path, file_format="MINDIR"))
    else:  # MindSpore 2.10 declares ONNX outputs with the traced batch size: trace a fixed one
        output = "embedding" if with_head else "features"
        x = graph_input(batch_size or 1, settings["image_size"])
        names = dict(input_names=["images"], output_names=[output])
        write_atomically(out, lambda path: ms.onnx.export(net, x, file_name=path, **names))
    return settings


def _export(checkpoint, out, fmt, with_head, batch_size) -> str:
    settings = export(checkpoint, out, fmt, with_head, batch_size)
    what = "fc output" if with_head else "pooled features"
    return f"wrote {out}: {what} of encoder_q, epoch {settings.get('epoch', 0)}"


def main(argv: Optional[list[str]] = None) -> int:
    """The command line; returns the exit code."""
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
