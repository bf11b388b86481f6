"""The oneDNN ISA cap: the user's choice wins, and on AVX-512 CPUs convolutions leave the
reference kernel (checked in a fresh process, through the scripts' own set-up)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO_ROOT
from src.utils.device import ONEDNN_ISA_CAP, ONEDNN_ISA_VARIABLES, cap_onednn_isa

# One 3x3 64->64 convolution on 32 images of 32x32, and a matmul of the same 2.4 GFLOP.
CONV_VS_MATMUL = """
import time
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops
from src.utils.device import set_device

set_device("CPU", ms.PYNATIVE_MODE)
x = Tensor(np.random.randn(32, 64, 32, 32).astype(np.float32))
conv = nn.Conv2d(64, 64, 3, pad_mode="pad", padding=1, has_bias=False)
a = Tensor(np.random.randn(1024, 1024).astype(np.float32))
b = Tensor(np.random.randn(1024, 1152).astype(np.float32))

def seconds(f):
    f().asnumpy()  # primitive creation
    start = time.perf_counter()
    f().asnumpy()
    return time.perf_counter() - start

print("RATIO", seconds(lambda: conv(x)) / seconds(lambda: ops.matmul(a, b)))
"""


def test_cap_is_set_when_the_user_chose_none():
    environ = {}
    assert cap_onednn_isa(environ).startswith(ONEDNN_ISA_CAP)
    assert environ == {"ONEDNN_MAX_CPU_ISA": ONEDNN_ISA_CAP}


@pytest.mark.parametrize("name", ONEDNN_ISA_VARIABLES)
def test_the_users_cap_wins(name):
    environ = {name: "AVX512_CORE"}
    assert cap_onednn_isa(environ) == f"AVX512_CORE (from {name})"
    assert environ == {name: "AVX512_CORE"}


def _cpu_has_avx512():
    try:
        return " avx512f " in Path("/proc/cpuinfo").read_text() + " "
    except OSError:
        return False


@pytest.mark.skipif(
    not _cpu_has_avx512(),
    reason="this CPU has no AVX-512: oneDNN never takes its reference convolution",
)
def test_convolution_runs_a_jit_kernel_on_avx512():
    env = {k: v for k, v in os.environ.items() if k not in ONEDNN_ISA_VARIABLES}
    env["ONEDNN_VERBOSE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", CONV_VS_MATMUL],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # onednn_verbose,v1,primitive,exec,cpu,convolution,<implementation>,...
    kernels = {
        line.split(",")[6]
        for line in proc.stdout.splitlines()
        if line.startswith("onednn_verbose") and ",exec,cpu,convolution," in line
    }
    assert kernels and not any("ref" in kernel for kernel in kernels), kernels
    ratio = float(proc.stdout.split("RATIO")[-1])
    # Measured: about 1.3 with the cap, about 100 on the reference kernel.
    assert ratio < 10, f"convolution {ratio:.0f}x slower than a matmul of the same FLOPs"
