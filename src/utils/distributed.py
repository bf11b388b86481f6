"""Data-parallel runs launched by ``msrun``: this process's rank and the group's size."""

import functools
import os
import signal
import socket
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from .device import DeviceError

# msrun exports MS_ROLE (MS_SCHED for its scheduler process, MS_WORKER for the workers) and
# MS_WORKER_NUM to every process it starts; a plain ``python main.py`` has neither.
_ROLE, _WORKER_NUM = "MS_ROLE", "MS_WORKER_NUM"


@dataclass(frozen=True)
class Group:
    """Rank of this process among ``size`` data-parallel workers; rank 0 writes the results."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


ONE_DEVICE = Group()


def is_scheduler() -> bool:
    """True in msrun's scheduler process, which runs the script too but only coordinates."""
    return os.environ.get(_ROLE) == "MS_SCHED"


def check_master_port() -> None:
    """In msrun's scheduler: a busy ``--master_port`` stops the job now with a clear error (the
    workers would retry it for ``--cluster_time_out``, 600 s by default)."""
    host, port = os.environ.get("MS_SCHED_HOST", "127.0.0.1"), int(os.environ["MS_SCHED_PORT"])
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            _stop_sibling_processes()
            raise DeviceError(
                f"msrun --master_port {port} on {host} is in use (OSError: {err.strerror}): "
                "another job is listening there; choose a free port"
            ) from err


def _stop_sibling_processes() -> None:
    """SIGTERMs the other children of msrun (its workers): msrun then ends the job non-zero."""
    parent = os.getppid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            os.kill(int(entry), signal.SIGTERM)


def init_distributed(distribute: bool) -> Group:
    """``--distribute``: joins msrun's workers (after ``set_device``); else a group of one.
    DeviceError if the flag and the launcher disagree. In the scheduler process ``init()``
    serves the workers and exits when they are done."""
    workers = int(os.environ.get(_WORKER_NUM, "1"))
    if not distribute:
        if workers > 1:
            raise DeviceError(
                f"started by msrun with {workers} workers but without --distribute: "
                "each would train alone on the whole batch; add --distribute"
            )
        return ONE_DEVICE
    if _ROLE not in os.environ:
        raise DeviceError(
            "--distribute needs the msrun launcher, e.g. msrun --worker_num=2 "
            "--local_worker_num=2 --master_port=8118 --join=True main.py ... --distribute"
        )
    from mindspore.communication import get_group_size, get_rank, init

    if is_scheduler():
        check_master_port()
    init()
    return Group(get_rank(), get_group_size())


def shard_indices(length: int, group: Group) -> np.ndarray:
    """This device's ``ceil(length / size)`` indices of ``range(length)``, a contiguous block;
    the last device's block is padded with ``length - 1`` so every block has one shape."""
    block = -(-length // group.size)
    return np.minimum(np.arange(group.rank * block, (group.rank + 1) * block), length - 1)


@functools.cache
def _all_gather() -> nn.Cell:
    return _AllGather()  # one cell: graph mode compiles each new cell


class _AllGather(nn.Cell):
    def __init__(self):
        super().__init__()
        self.all_gather = ops.AllGather()

    def construct(self, x):
        return self.all_gather(x)


def gather_shards(shard: np.ndarray, length: int, group: Group) -> np.ndarray:
    """Undoes :func:`shard_indices`: the blocks of every device, in order, ``length`` rows."""
    if group.size == 1:
        return shard[:length]
    return _all_gather()(ms.Tensor(shard)).asnumpy()[:length]


def broadcast_text(text: str, group: Group, max_bytes: int = 4096) -> str:
    """Broadcasts the main device's ``text`` to every device (e.g. a name made from the time)."""
    if group.size == 1:
        return text
    data = text.encode()
    if len(data) > max_bytes:
        raise ValueError(f"text longer than {max_bytes} bytes: {text[:80]}...")
    codes = np.zeros((1, max_bytes), np.int32)
    codes[0, : len(data)] = np.frombuffer(data, np.uint8)
    main = gather_shards(codes, group.size, group)[0]
    return bytes(main[main > 0].astype(np.uint8)).decode()
