"""oneDNN ISA caps side by side: convolution GFLOP/s, training step and eval img/s.

    python -m benchmarks.cpu_isa [--caps none AVX2 ...] [--step-batches 64 512] [--repeats 3]

Each cap runs in its own process (oneDNN reads the cap once), the caps alternate over
``--repeats`` rounds and the table gives medians. ``none`` is oneDNN's own choice;
``project`` is what ``set_device`` picks. The step rows skip caps whose convolution falls
under 5 GFLOP/s (a reference kernel would take hours); JSON goes to ``--output``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from src.utils.device import ONEDNN_ISA_VARIABLES

WORKER = r"""
import json, sys, time
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops
from src.utils.device import set_device

task, batch = sys.argv[1], int(sys.argv[2])
set_device("CPU", ms.GRAPH_MODE if task != "conv" else ms.PYNATIVE_MODE)


def timed(fn, repeats):
    fn()  # compile / create primitives
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


if task == "conv":  # 3x3 64->64 convolution on 32x32 images, forward
    x = Tensor(np.random.randn(batch, 64, 32, 32).astype(np.float32))
    conv = nn.Conv2d(64, 64, 3, pad_mode="pad", padding=1, has_bias=False)
    seconds = timed(lambda: conv(x).asnumpy(), 3)
    print(json.dumps({"gflops": 2 * batch * 64 * 64 * 9 * 32 * 32 / seconds / 1e9}))
else:
    from types import SimpleNamespace
    from src.train.step import MoCoTrainStep, create_optimizer
    from src.models import create_moco

    args = SimpleNamespace(moco_dim=128, moco_k=4096, moco_m=0.99, moco_t=0.1, arch="resnet18",
                           bn_splits=8, symmetric=False, seed=0)
    model = create_moco(args)
    rng = np.random.default_rng(0)
    images = [Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)) for _ in range(2)]
    if task == "step":
        step = MoCoTrainStep(model, create_optimizer(model, 0.06, 5e-4))
        step.set_train(True)
        idx = Tensor(np.stack([rng.permutation(batch)] * 2).astype(np.int32))
        seconds = timed(lambda: step(*images, idx)[0].asnumpy(), 3)
    else:  # eval forward, as in feature extraction
        model.encoder_q.set_train(False)
        seconds = timed(lambda: model.encoder_q(images[0]).asnumpy(), 3)
    print(json.dumps({"img_per_s": batch / seconds}))
"""


def run(cap, task, batch):
    env = {k: v for k, v in os.environ.items() if k not in ONEDNN_ISA_VARIABLES}
    if cap not in ("none", "project"):
        env["ONEDNN_MAX_CPU_ISA"] = cap
    elif cap == "none":
        env["ONEDNN_MAX_CPU_ISA"] = "ALL"  # oneDNN's own choice, which set_device leaves alone
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, task, str(batch)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode:
        raise RuntimeError(f"{cap} {task} {batch} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--caps",
        nargs="+",
        default=["none", "project", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_BF16"],
    )
    parser.add_argument("--step-batches", type=int, nargs="*", default=[64])
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/cpu_isa.json")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    conv = {cap: [] for cap in args.caps}
    for _ in range(args.repeats):
        for cap in args.caps:
            conv[cap].append(run(cap, "conv", 32)["gflops"])
    fast = [cap for cap in args.caps if statistics.median(conv[cap]) >= 5]
    rows = [("conv 3x3 64->64, 32x32x32", "GFLOP/s", conv)]
    tasks = [("step", b, f"training step, batch {b}") for b in args.step_batches]
    tasks.append(("eval", args.eval_batch, f"eval forward, batch {args.eval_batch}"))
    for task, batch, label in tasks:
        values = {cap: [] for cap in fast}
        for _ in range(args.repeats):
            for cap in fast:
                values[cap].append(run(cap, task, batch)["img_per_s"])
        rows.append((label, "img/s", values))

    print(f"{'':28s}" + "".join(f"{cap:>18s}" for cap in args.caps))
    for label, unit, values in rows:
        cells = [
            f"{statistics.median(values[c]):10.1f} ({min(values[c]):.0f}-{max(values[c]):.0f})"
            if c in values
            else f"{'skipped':>18s}"
            for c in args.caps
        ]
        print(f"{label + ' ' + unit:28s}" + "".join(f"{cell:>18s}" for cell in cells))
    result = {
        "caps": args.caps,
        "repeats": args.repeats,
        "rows": {label: {"unit": unit, **values} for label, unit, values in rows},
        "seconds": round(time.perf_counter() - start),
    }
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(f"{result['seconds']} s; JSON: {args.output}")


if __name__ == "__main__":
    main()
