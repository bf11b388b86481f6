"""Selecting the MindSpore device, with a clear error where it is not available."""

import os
import platform
from collections.abc import MutableMapping

import mindspore as ms

from .progress import logger


class DeviceError(RuntimeError):
    """The installed MindSpore cannot run on the requested device."""


ONEDNN_ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# MindSpore's oneDNN has no AVX-512 kernel for its plain-layout f32 convolution and falls back to
# a reference one (~100x slower); capped at AVX2 it runs the jit gemm convolution. Higher caps
# (AVX2_VNNI, AVX512_CORE_VNNI/BF16) only add int8/bf16 instructions, of no use to f32.
ONEDNN_ISA_CAP = "AVX2"


def cap_onednn_isa(environ: MutableMapping[str, str] = os.environ) -> str:
    """Caps oneDNN's instruction set at ``ONEDNN_ISA_CAP`` unless the user chose one; returns the
    cap in use, for the log. oneDNN reads it at its first primitive: call before any kernel runs."""
    for name in ONEDNN_ISA_VARIABLES:
        if environ.get(name):
            return f"{environ[name]} (from {name})"
    environ["ONEDNN_MAX_CPU_ISA"] = ONEDNN_ISA_CAP
    return f"{ONEDNN_ISA_CAP} (set ONEDNN_MAX_CPU_ISA to override)"


def set_device(device_target: str, mode: int) -> None:
    """Selects the device (on x86 CPUs, capping oneDNN's ISA first) and the execution mode;
    DeviceError if this MindSpore cannot run on ``device_target`` (e.g. CPU-only wheel, GPU)."""
    if device_target == "CPU" and platform.machine().lower() in ("x86_64", "amd64"):
        logger.info("oneDNN CPU ISA cap: %s", cap_onednn_isa())
    try:
        ms.set_device(device_target)
    except RuntimeError as err:
        raise DeviceError(
            f"device_target {device_target} is not available in this MindSpore installation "
            f"({ms.__version__}): install MindSpore built for {device_target} "
            f"(https://www.mindspore.cn/install) or use --device_target CPU. "
            f"MindSpore said: {str(err).splitlines()[0]}"
        ) from None
    ms.set_context(mode=mode)
