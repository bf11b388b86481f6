"""Exports a checkpoint's encoder_q as MindIR, ONNX or a torchvision ResNet state_dict (.pth).

The graphs map N x 3 x S x S float32 images (S: the checkpoint's image size, 32 on CIFAR),
normalised as the test transform does, to the pooled 512-d features (``--with-head``: the fc
output). MindIR takes any N unless ``--batch-size`` fixes it; ONNX a fixed N (default 1), as
MindSpore 2.10 gives ONNX outputs the traced N.
"""

import argparse
import os
import sys
from typing import Callable, Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from ..eval.evaluate import restore_encoder
from ..models.split_bn import SCRATCH_PREFIX
from ..train.checkpoint import CheckpointError
from .convert_pytorch import STAGES, ConversionError, import_torch, write_atomically
from .convert_pytorch import mindspore_state_to_torch as demo_state

TORCHVISION_MODULES = {"0": "conv1", "1": "bn1", "9": "fc"}  # the demo's ``net.N`` (ours too)
TORCHVISION_MODULES.update({str(index): f"layer{n}" for n, index in enumerate(STAGES, 1)})


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


def graph_input(batch_size: Optional[int], size: int = 32) -> ms.Tensor:
    """What a graph is traced with: ``batch_size`` x 3 x size x size float32 (None: any batch)."""
    if batch_size is None:
        return ms.Tensor(shape=(None, 3, size, size), dtype=ms.float32)
    return ms.Tensor(np.zeros((batch_size, 3, size, size), np.float32))


def torchvision_state(encoder: nn.Cell, with_head: bool = False) -> dict[str, np.ndarray]:
    """The encoder's tensors under torchvision's ResNet keys; ``fc.*`` only ``with_head``."""
    ours = {p.name: p.asnumpy() for p in encoder.get_parameters() if SCRATCH_PREFIX not in p.name}
    state = {}
    for key, value in demo_state(ours).items():
        _, index, rest = key.split(".", 2)
        state[f"{TORCHVISION_MODULES[index]}.{rest}"] = value
    return {k: v for k, v in state.items() if with_head or not k.startswith("fc.")}


Writer = Callable[[str], object]


def _mindir(encoder: nn.Cell, with_head: bool, batch_size: Optional[int], size: int) -> Writer:
    net, x = ExportedEncoder(encoder, with_head), graph_input(batch_size, size)
    return lambda path: ms.export(net, x, file_name=path, file_format="MINDIR")


def _onnx(encoder: nn.Cell, with_head: bool, batch_size: Optional[int], size: int) -> Writer:
    net, x = ExportedEncoder(encoder, with_head), graph_input(batch_size or 1, size)
    names = dict(input_names=["images"], output_names=["embedding" if with_head else "features"])
    return lambda path: ms.onnx.export(net, x, file_name=path, **names)


def _pth(encoder: nn.Cell, with_head: bool, batch_size: Optional[int], size: int) -> Writer:
    torch = import_torch()
    state = {k: torch.from_numpy(v) for k, v in torchvision_state(encoder, with_head).items()}
    return lambda path: torch.save(state, path)


# Format: (accepted extensions of OUT, writer factory).
FORMATS = {
    "mindir": ((".mindir",), _mindir),
    "onnx": ((".onnx",), _onnx),
    "pth-backbone": ((".pth", ".pt"), _pth),
}


def _check_request(out: str, fmt: str, batch_size: Optional[int]) -> None:
    """ConversionError for an unknown format, a wrong extension, no folder, a batch size < 1."""
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    extensions, folder = FORMATS[fmt][0], os.path.dirname(os.path.abspath(out))
    if not out.endswith(extensions):
        raise ConversionError(f"--format {fmt} writes {' or '.join(extensions)}, not {out}")
    if not os.path.isdir(folder):
        raise ConversionError(f"cannot write {out}: no folder {folder}")
    if batch_size is not None and batch_size < 1:
        raise ConversionError(f"--batch-size must be at least 1, not {batch_size}")


def export(
    checkpoint: str, out: str, fmt: str, with_head: bool = False, batch_size: Optional[int] = None
) -> dict:
    """Writes ``checkpoint``'s encoder_q to ``out`` (atomically) as ``fmt``; returns the
    checkpoint's settings. Raises ConversionError or CheckpointError."""
    _check_request(out, fmt, batch_size)
    encoder, settings = restore_encoder(checkpoint)
    writer = FORMATS[fmt][1](encoder, with_head, batch_size, settings["image_size"])
    write_atomically(out, writer)
    return settings


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the exporter; returns 0 on success, 2 on an error."""
    from ..utils.device import set_device
    from ..utils.progress import setup_logging

    logger = setup_logging()
    set_device("CPU", ms.PYNATIVE_MODE)
    parser = argparse.ArgumentParser(
        prog="python -m src.tools.export", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    add = parser.add_argument
    add("checkpoint", metavar="CKPT", help="a checkpoint written by main.py")
    add("out", metavar="OUT", help="the file to write: .mindir, .onnx or .pth/.pt")
    add("--format", dest="fmt", required=True, metavar="|".join(FORMATS), help="what to write")
    add("--with-head", action="store_true", help="output the fc, not the pooled features")
    add("--batch-size", type=int, help="a fixed batch size (default: any; 1 for ONNX)")
    args = parser.parse_args(argv)
    try:
        settings = export(**vars(args))
    except (ConversionError, CheckpointError) as err:
        logger.error("error: %s", err)
        return 2
    what = "fc output" if args.with_head else "pooled features"
    logger.info("wrote %s: %s of encoder_q, epoch %d", args.out, what, settings.get("epoch", 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
