"""Selecting the MindSpore device, with a clear error where it is not available."""

import mindspore as ms

from src.config import ConfigError


def set_device(device_target: str, mode: int) -> None:
    """Selects the device and execution mode before any kernel runs.

    Args:
        device_target: ``"CPU"``, ``"GPU"`` or ``"Ascend"``.
        mode: ``mindspore.GRAPH_MODE`` (0) or ``mindspore.PYNATIVE_MODE`` (1).

    Raises:
        ConfigError: If the installed MindSpore cannot run on ``device_target``
            (e.g. the CPU-only wheel asked for ``GPU``).
    """
    try:
        ms.set_device(device_target)
    except RuntimeError as err:
        raise ConfigError(
            f"device_target {device_target} is not available in this MindSpore installation "
            f"({ms.__version__}): install MindSpore built for {device_target} "
            f"(https://www.mindspore.cn/install) or use --device_target CPU. "
            f"MindSpore said: {str(err).splitlines()[0]}") from None
    ms.set_context(mode=mode)
