"""Fixtures shared by the tests; the helpers they use live in ``helpers.py``."""

import fcntl
import os
import shutil
import subprocess

import mindspore as ms
import pytest

from helpers import TINY, run_main, write_fake_cifar
from src.utils.device import set_device

# The slowest files (most seconds in all, measured), started first: under pytest-xdist none of
# them is then left running alone at the end.
SLOW_FIRST = [
    "scripts/test_main_distributed.py",
    "scripts/test_recovery.py",
    "train/test_distributed_v3.py",
    "train/test_amp.py",
    "scripts/test_main_v3.py",
    "scripts/test_main_datasets.py",
    "train/test_distributed.py",
    "equivalence/test_equivalence.py",
]


def pytest_collection_modifyitems(items):
    """``SLOW_FIRST``'s files first, in its order; the others after them, as collected."""
    order = {f"tests/{name}": rank for rank, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: order.get(item.nodeid.split("::")[0], len(order)))


# Once, before any kernel runs, as the scripts do (it also caps oneDNN's ISA on CPU). Tests run
# eagerly (no graph compilation) unless they ask for both modes through ``mode``.
set_device("CPU", ms.PYNATIVE_MODE)


@pytest.fixture
def tiny_cifar10(tmp_path):
    """Data root of a 64-train / 32-test fake CIFAR-10."""
    return write_fake_cifar(tmp_path, "cifar10")


@pytest.fixture
def tiny_cifar100(tmp_path):
    """Data root of a 64-train / 32-test fake CIFAR-100 (labels from 10 classes)."""
    return write_fake_cifar(tmp_path, "cifar100", num_classes=10)


@pytest.fixture(params=["GRAPH", "PYNATIVE"])
def mode(request):
    """Runs a test once in each MindSpore execution mode (CPU)."""
    ms.set_context(mode=getattr(ms, f"{request.param}_MODE"))
    yield request.param
    ms.set_context(mode=ms.PYNATIVE_MODE)


def shared(tmp_path_factory, name, build):
    """``build(folder)`` once per test session, also under pytest-xdist (its workers share the
    folder, one builds it under a lock); the folder."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the base folder of all the workers
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            (root / f"{name}.done").touch()
    return folder


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A tiny CIFAR-10 folder shared by the script tests."""
    build = lambda folder: write_fake_cifar(folder, n_train=48, n_test=20)  # noqa: E731
    return str(shared(tmp_path_factory, "data", build))


@pytest.fixture(scope="session")
def full_run(data_root, tmp_path_factory):
    """Two epochs in graph mode, uninterrupted: the results folder (tests only read it) and the
    process (stdout, stderr)."""

    def build(folder):
        args = ["--data-dir", data_root, "--epochs", "2", "--results-dir", str(folder / "run")]
        proc = run_main([*args, *TINY])
        assert proc.returncode == 0, proc.stderr[-3000:]
        (folder / "stdout").write_text(proc.stdout)
        (folder / "stderr").write_text(proc.stderr)

    folder = shared(tmp_path_factory, "full", build)
    outputs = ((folder / name).read_text() for name in ("stdout", "stderr"))
    return str(folder / "run"), subprocess.CompletedProcess([], 0, *outputs)


@pytest.fixture(scope="session")
def trained(full_run, data_root, tmp_path_factory):
    """``(data_root, checkpoint)`` of a copy of ``full_run``'s results folder.

    infer.py and visualize.py write beside the checkpoint; the copy keeps the
    folder that the main.py tests inspect untouched.
    """
    results = tmp_path_factory.mktemp("trained") / "run"
    shutil.copytree(full_run[0], results)
    return data_root, str(results / "model_last.ckpt")
