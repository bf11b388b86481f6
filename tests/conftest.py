"""Fixtures shared by the tests; the helpers they use live in ``helpers.py``."""

import shutil

import mindspore as ms
import pytest

from helpers import TINY, run_main, write_fake_cifar
from src.utils.device import set_device

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


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A tiny CIFAR-10 folder shared by the script tests."""
    return str(write_fake_cifar(tmp_path_factory.mktemp("data"), n_train=48, n_test=20))


@pytest.fixture(scope="session")
def full_run(data_root, tmp_path_factory):
    """Two epochs in graph mode, uninterrupted."""
    results = str(tmp_path_factory.mktemp("full") / "run")
    proc = run_main(["--data-dir", data_root, "--epochs", "2", "--results-dir", results, *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results, proc


@pytest.fixture(scope="session")
def trained(full_run, data_root, tmp_path_factory):
    """``(data_root, checkpoint)`` of a copy of ``full_run``'s results folder.

    infer.py and visualize.py write beside the checkpoint; the copy keeps the
    folder that the main.py tests inspect untouched.
    """
    results = tmp_path_factory.mktemp("trained") / "run"
    shutil.copytree(full_run[0], results)
    return data_root, str(results / "model_last.ckpt")
