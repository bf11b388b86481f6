"""oneDNN ISA caps side by side: convolution GFLOP/s, training step and eval img/s.

    python -m benchmarks.cpu_isa [--caps none AVX2 ...] [--step-batches 64 512] [--repeats 3]

A new process per cap and round (oneDNN reads the cap once), caps in turn; medians."""

import argparse
import json
import os
import statistics
import time

from benchmarks.report import layer_flops
from benchmarks.run import Config, run_group
from src.utils.device import ONEDNN_ISA_VARIABLES

CAPS = ["none", "project", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_BF16"]
CONV_FLOPS = 32 * layer_flops((64, 32, 32), (64, 64, 3, 3))  # the "conv" task at batch 32


def measure(cap: str, task: str, batch: int) -> float:
    """GFLOP/s of the convolution, else img/s: 3 units in a new process, after a first one."""
    env = {k: v for k, v in os.environ.items() if k not in ONEDNN_ISA_VARIABLES}
    if cap != "project":  # project: set_device's own cap; ALL, which set_device leaves alone
        env["ONEDNN_MAX_CPU_ISA"] = "ALL" if cap == "none" else cap
    config = Config(f"{cap} {task} {batch}", task, {"batch": batch}, units=3, env=env)
    seconds = run_group([config], rounds=1)[config.key]["seconds"][0] / 3
    return CONV_FLOPS / seconds / 1e9 if task == "conv" else batch / seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", nargs="+", default=CAPS, help="none: oneDNN's own choice")
    parser.add_argument("--step-batches", type=int, nargs="*", default=[64])
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/cpu_isa.json")
    args = parser.parse_args(argv)
    start, caps, rows = time.perf_counter(), args.caps, {}
    tasks = [("conv 3x3 64->64, 32x32x32", "GFLOP/s", "conv", 32)]
    tasks += [(f"training step, batch {b}", "img/s", "step-ours", b) for b in args.step_batches]
    tasks.append((f"eval forward, batch {args.eval_batch}", "img/s", "eval-ours", args.eval_batch))
    for label, unit, task, batch in tasks:
        rows[label] = {"unit": unit, **{cap: [] for cap in caps}}
        for _ in range(args.repeats):
            for cap in caps:
                rows[label][cap].append(measure(cap, task, batch))
        # Under 5 GFLOP/s a cap runs the reference convolution: a step would take hours.
        caps = [cap for cap in caps if statistics.median(rows[tasks[0][0]][cap]) >= 5]
    print(f"{'':28s}" + "".join(f"{cap:>18s}" for cap in args.caps))
    for label, values in rows.items():
        cells = [values.get(cap) for cap in args.caps]
        cells = [
            f"{statistics.median(v):10.1f} ({min(v):.0f}-{max(v):.0f})" if v else "skipped"
            for v in cells
        ]
        print(f"{label + ' ' + values['unit']:28s}" + "".join(f"{cell:>18s}" for cell in cells))
    seconds = round(time.perf_counter() - start)
    result = {"caps": args.caps, "repeats": args.repeats, "rows": rows, "seconds": seconds}
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(f"{seconds} s; JSON: {args.output}")


if __name__ == "__main__":
    main()
