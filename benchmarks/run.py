"""MoCo training step, feature extraction, kNN and data pipeline: ours against PyTorch / NumPy.

    python -m benchmarks.run [--quick] [--data-dir ../shared/data] [--output FILE.json]

Each configuration runs in its own process (``--worker TASK``: clean peak RSS and compile time).
A group's processes start one after another, each timing a first unit (compile s = its seconds
minus the median unit), then take turns over the rounds, in alternating order. The table gives
medians, min-max and ratios of medians; the JSON holds every round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version

from benchmarks.report import (
    FLOPS_PER_CYCLE,
    cpu_mhz,
    format_table,
    forward_flops,
    knn_flops,
    monitor_share,
    peak_flops,
    speed_ratio,
    spread,
    step_flops,
)
from benchmarks.workers import EVAL_BATCH_SIZE, RECIPE, TASKS, TORCH_THREADS, serve

KNN_KEYS = ("knn-ours", "knn-numpy")

# Units (steps, batches, kNN passes) per round; the quick mode fits in about five minutes.
PLANS = {
    "quick": {
        "rounds": 3,
        "steps": {64: 2, 256: 1},
        "pynative": (64, 1),
        "eval": {256: 1},
        "knn": (50_000, 2_000),
        "pipeline": (512, 4),
        "loop": (64, 6),
    },
    "full": {
        "rounds": 5,
        "steps": {64: 5, 256: 2, 512: 1},
        "pynative": (64, 3),
        "eval": {256: 3, 512: 2},
        "knn": (50_000, 10_000),
        "pipeline": (512, 8),
        "loop": (64, 20),
    },
}


@dataclass
class Config:
    """One worker process: ``units`` per round of ``images`` each (0: timed in seconds)."""

    key: str
    task: str
    options: dict = field(default_factory=dict)
    units: int = 1
    images: int = 0
    flops: float = 0.0  # per image, or per unit when ``images`` is 0


class Worker:
    """A ``--worker`` child: JSON lines out, unit counts in, stderr into ``log_dir``."""

    def __init__(self, config: Config, log_dir: str):
        self.config, self.log = config, os.path.join(log_dir, config.key + ".log")
        command = [sys.executable, "-m", "benchmarks.run", "--worker", config.task]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [*command, "--options", json.dumps(config.options)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            with open(self.log) as log:
                tail = log.read()[-3000:]
            raise RuntimeError(f"{self.config.key} failed (exit {self.proc.wait()}):\n{tail}")
        return json.loads(line)

    def ask(self, units: int) -> dict:
        self.proc.stdin.write(f"{units}\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=120)


def run_group(configs: list[Config], rounds: int, log_dir: str) -> dict[str, dict]:
    """Starts the group's workers one at a time, then ``rounds`` interleaved rounds."""
    workers, results = [], {}
    try:
        for config in configs:
            workers.append(Worker(config, log_dir))
            results[config.key] = {**workers[-1].read(), "seconds": []}
            print(f"  {config.key}: ready, first unit {results[config.key]['first_s']:.1f} s")
        for round_ in range(rounds):
            for worker in workers if round_ % 2 == 0 else workers[::-1]:
                answer = worker.ask(worker.config.units)
                results[worker.config.key]["seconds"].append(answer["seconds"])
                results[worker.config.key]["rss_mib"] = answer["rss_mib"]
            done = ", ".join(f"{k} {r['seconds'][-1]:.1f} s" for k, r in results.items())
            print(f"  round {round_ + 1}/{rounds}: {done}", flush=True)
    finally:
        for worker in workers:
            worker.close()
    return results


def summarize(config: Config, result: dict, peak: float) -> dict:
    """Spread of the rounds' img/s (or seconds per unit), RSS, compile s and % of peak."""
    per_unit = [s / config.units for s in result["seconds"]]
    values = [config.images / s for s in per_unit] if config.images else per_unit
    stats, compiled = spread(values), config.task not in ("pipeline", *KNN_KEYS)
    flops_per_s = (
        config.flops * stats["median"] if config.images else config.flops / stats["median"]
    )
    return {
        **stats,
        "values": values,
        "rss_mib": result["rss_mib"],
        "compile_s": result["first_s"] - statistics.median(per_unit) if compiled else None,
        "setup_s": result["setup_s"],
        "peak_pct": 100 * flops_per_s / peak if config.flops else None,
    }


def step_group(p: dict, batch: int, units: int, flops: float, data_dir: str):
    """The training step at ``batch``, ours (graph) and PyTorch, with the PyNative step, the
    loop and the pipeline where the plan puts them; returns ``(group, rows)``."""
    ours, torch = f"step-ours-graph-{batch}", f"step-torch-{batch}"
    group = [Config(ours, "step-ours", {"batch": batch, "mode": "graph"}, units, batch, flops)]
    group.append(Config(torch, "step-torch", {"batch": batch}, units, batch, flops))
    rows = [("train step: graph vs PyTorch", batch, "img/s", ours, torch)]
    data = {"batch": batch, "data_dir": data_dir}
    if batch == p["pynative"][0]:
        options, key = {"batch": batch, "mode": "pynative"}, f"step-ours-pynative-{batch}"
        group.append(Config(key, "step-ours", options, p["pynative"][1], batch, flops))
        rows.append(("train step: PyNative vs PyTorch", batch, "img/s", key, torch))
    if batch == p["loop"][0]:
        group.append(Config(f"loop-{batch}", "loop", data, p["loop"][1], batch, flops))
        rows.append(
            ("train loop (pipeline+step) vs step alone", batch, "img/s", f"loop-{batch}", ours)
        )
    if batch == max(p["steps"]):
        size, key = p["pipeline"][0], f"pipeline-{p['pipeline'][0]}"
        group.append(Config(key, "pipeline", {**data, "batch": size}, p["pipeline"][1], size))
        rows.append((f"two-view pipeline vs step b{batch}", size, "img/s", key, ours))
    return group, rows


def plan(mode: str, data_dir: str, encoder: int) -> tuple[list[list[Config]], list[tuple]]:
    """Groups of configurations and the table's rows ``(what, batch, unit, ours, theirs)``;
    ``encoder``: forward FLOPs of encoder_q per image."""
    p, dim, queue = PLANS[mode], RECIPE["dim"], RECIPE["K"]
    groups, rows = [], []
    for batch, units in p["steps"].items():
        flops = step_flops(encoder, batch, dim, queue) / batch
        group, group_rows = step_group(p, batch, units, flops, data_dir)
        groups.append(group)
        rows += group_rows
    for batch, units in p["eval"].items():
        keys = {f"eval-ours-{batch}": "eval-ours", f"eval-torch-{batch}": "eval-torch"}
        groups.append(
            [Config(k, t, {"batch": batch}, units, batch, encoder) for k, t in keys.items()]
        )
        rows.append(("feature extraction (eval) vs PyTorch", batch, "img/s", *keys))
    bank, queries = p["knn"]
    options, flops = {"bank": bank, "queries": queries}, knn_flops(queries, bank, dim)
    groups.append([Config(k, k, options, 1, 0, flops) for k in KNN_KEYS])
    rows.append((f"kNN {bank}x{dim} bank, {queries} queries vs NumPy", 0, "s", *KNN_KEYS))
    return groups, rows


def assumed_peak() -> tuple[float, str]:
    """This CPU's FP32 peak (FLOP/s) and how it was assumed."""
    cores = len(os.sched_getaffinity(0))
    with open("/proc/cpuinfo") as f:
        mhz = cpu_mhz(f.read())
    if not mhz:
        mhz = cpu_mhz("", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
    peak = peak_flops(cores, mhz)
    text = f"{cores} cores x {mhz:.0f} MHz x {FLOPS_PER_CYCLE} FLOP/cycle (AVX2: 2 FMA x 8 x 2)"
    return peak, f"{text} = {peak / 1e9:.1f} GFLOP/s"


def encoder_flops(log_dir: str) -> int:
    """Forward FLOPs per image of ours encoder_q, from its layer shapes (a PyNative child)."""
    worker = Worker(Config("layers", "layers"), log_dir)
    try:
        return forward_flops(worker.read()["layers"])
    finally:
        worker.close()


def build_rows(rows: list[tuple], configs: dict[str, Config], results: dict, peak: float):
    """The table's rows: both sides summarised and the speed ratio of their medians."""
    table = []
    for what, batch, unit, ours, theirs in rows:
        sides = {
            s: summarize(configs[k], results[k], peak)
            for s, k in (("ours", ours), ("theirs", theirs))
        }
        ratio = speed_ratio(sides["ours"]["median"], sides["theirs"]["median"], unit)
        table.append({"what": what, "batch": batch, "unit": unit, **sides, "ratio": ratio})
        table[-1].update(ours_key=ours, theirs_key=theirs)
    return table


def monitor_cost(table: list[dict]) -> dict:
    """The kNN monitor's cost per CIFAR-10 epoch from the eval row at ``EVAL_BATCH_SIZE`` (what
    the monitor runs) and the step row at the largest batch measured."""
    evals = {r["batch"]: r for r in table if r["what"].startswith("feature extraction")}
    steps = [r for r in table if r["what"] == "train step: graph vs PyTorch"]
    step = max(steps, key=lambda r: r["batch"])
    eval_img_s = evals[EVAL_BATCH_SIZE]["ours"]["median"]
    cost = monitor_share(eval_img_s, step["ours"]["median"])
    text = (
        f"kNN monitor per CIFAR-10 epoch: 60,000 images at {eval_img_s:.0f} img/s (batch "
        f"{EVAL_BATCH_SIZE}) = {cost['monitor_s']:.0f} s, {cost['share']:.0%} of an epoch with "
        f"{cost['train_s']:.0f} s of training (batch {step['batch']})"
    )
    return {**cost, "text": text}


NOTES = """\
ratio: ours/theirs as speed (> 1: ours faster; s rows: theirs s / ours s); pipeline and loop
rows: their img/s over the step alone (graph) at the batch given. theirs = PyTorch {torch}
eager on {threads} threads (own oneDNN ISA choice), NumPy baseline, or the step alone.
compile s: first unit minus the median unit (PyTorch, PyNative: first-call overhead; none for
the pipeline and kNN).
% of peak: conv + matmul FLOPs/s ({step:.2f} GFLOP per image per step = 3 x query side + key
forward; eval {eval:.2f} GFLOP per image) over {peak}
(the clock as /proc/cpuinfo reports it: under boost the true peak is higher)."""


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches, steps and rounds")
    parser.add_argument("--data-dir", default="../shared/data", help="holds cifar-10-batches-py")
    parser.add_argument("--output", default="", help="JSON file (default: none)")
    parser.add_argument("--worker", choices=[*TASKS, "layers"], help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.worker and not os.path.isdir(os.path.join(args.data_dir, "cifar-10-batches-py")):
        parser.error(f"no CIFAR-10 (cifar-10-batches-py) in --data-dir {args.data_dir}")
    args.data_dir = os.path.abspath(args.data_dir)
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        serve(args.worker, json.loads(args.options))
        return
    start, mode = time.perf_counter(), "quick" if args.quick else "full"
    peak, peak_text = assumed_peak()
    print(f"{mode} mode; FP32 peak assumed: {peak_text}", flush=True)
    results, configs = {}, {}
    with tempfile.TemporaryDirectory(prefix="moco-bench-") as log_dir:
        encoder = encoder_flops(log_dir)
        groups, rows = plan(mode, args.data_dir, encoder)
        for group in groups:
            print(f"group: {', '.join(c.key for c in group)}", flush=True)
            configs.update({c.key: c for c in group})
            results.update(run_group(group, PLANS[mode]["rounds"], log_dir))
    table = build_rows(rows, configs, results, peak)
    step = step_flops(encoder, 1, RECIPE["dim"], RECIPE["K"]) / 1e9
    notes = NOTES.format(
        torch=version("torch"), threads=TORCH_THREADS, step=step, eval=encoder / 1e9, peak=peak_text
    )
    monitor = monitor_cost(table)
    seconds = time.perf_counter() - start
    print(f"\n{format_table(table)}\n\n{notes}\n{monitor['text']}")
    print(f"{mode} mode: {seconds:.0f} s in total")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        document = {"mode": mode, "plan": PLANS[mode], "peak": peak_text, "peak_flops": peak}
        document.update(encoder_flops=encoder, rows=table, raw=results, seconds=round(seconds))
        document["monitor"] = monitor
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
        print(f"JSON: {args.output}")


if __name__ == "__main__":
    main()
