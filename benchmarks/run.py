"""MoCo training step, feature extraction, kNN and data pipeline: ours against PyTorch / NumPy.

    python -m benchmarks.run [--quick] [--data-dir ../shared/data] [--output FILE.json]

Each configuration in its own process (``run_group``); medians, min-max, ratios; JSON: all."""

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
from typing import Optional

from benchmarks import report
from benchmarks.workers import EVAL_BATCH_SIZE, RECIPE, TASKS, TORCH_THREADS, serve

# (quick, full) modes: rounds; units (steps, batches, kNN passes) per round, by batch or as
# (batch, units); the kNN's (bank, queries). The quick mode takes about four minutes.
PLANS = {
    "rounds": (3, 5),
    "steps": ({64: 2, 256: 1}, {64: 5, 256: 2, 512: 1}),
    "pynative": ((64, 1), (64, 3)),
    "eval": ({256: 1}, {256: 3, 512: 2}),
    "knn": ((50_000, 2_000), (50_000, 10_000)),
    "pipeline": ((512, 4), (512, 8)),
    "loop": ((64, 6), (64, 20)),
}
STEP_ROW = "train step: graph vs PyTorch"


@dataclass
class Config:
    """One worker process: ``units`` per round of ``images`` each (0: timed in seconds)."""

    key: str
    task: str
    options: dict = field(default_factory=dict)
    units: int = 1
    images: int = 0
    flops: float = 0.0  # per image, or per unit when ``images`` is 0
    env: Optional[dict] = None  # the process's environment; None: ours


class Worker:
    """A ``--worker`` child: unit counts in, JSON lines out, stderr into a temporary file."""

    def __init__(self, config: Config):
        self.config, self.log = config, tempfile.TemporaryFile("w+")
        command = [sys.executable, "-m", "benchmarks.run", "--worker", config.task]
        command += ["--options", json.dumps(config.options)]
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": self.log}
        self.proc = subprocess.Popen(command, **pipes, env=config.env, text=True)

    def ask(self, units: int = 0) -> dict:
        """Asks for ``units`` units (0: just reads the next answer); the JSON answer."""
        if units:
            self.proc.stdin.write(f"{units}\n")
            self.proc.stdin.flush()
        if line := self.proc.stdout.readline():
            return json.loads(line)
        code = self.proc.wait()
        self.log.seek(0)
        raise RuntimeError(f"{self.config.key} failed (exit {code}):\n{self.log.read()[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
        self.log.close()


def run_group(configs: list[Config], rounds: int) -> dict[str, dict]:
    """Starts the group's workers one after another, each timing a first unit (compile s = its
    seconds minus the median unit), then ``rounds`` rounds of turns, in alternating order."""
    workers, results = [], {}
    print(f"group: {', '.join(c.key for c in configs)}", flush=True)
    try:
        for config in configs:
            workers.append(Worker(config))
            results[config.key] = {**workers[-1].ask(), "seconds": []}
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
    stats = report.spread(values)
    rate = stats["median"] if config.images else 1 / stats["median"]  # images or units per s
    compiled = config.task not in ("pipeline", "knn")
    compile_s = result["first_s"] - statistics.median(per_unit) if compiled else None
    peak_pct = 100 * config.flops * rate / peak if config.flops else None
    summary = {**stats, "values": values, "rss_mib": result["rss_mib"], "compile_s": compile_s}
    return {**summary, "setup_s": result["setup_s"], "peak_pct": peak_pct}


def plan(p: dict, data_dir: str, encoder: int) -> tuple[list[list[Config]], list[tuple]]:
    """Groups of configurations and the table's rows ``(what, batch, unit, ours, theirs)`` of a
    mode's plan ``p``, with ``encoder`` the forward FLOPs of encoder_q per image."""
    dim, groups, rows = RECIPE["dim"], [], []

    def add(key: str, task: str, units: int, batch: int, flops=0.0, **options) -> Config:
        groups[-1].append(Config(key, task, {"batch": batch, **options}, units, batch, flops))
        return groups[-1][-1]

    for batch, units in p["steps"].items():
        groups.append([])
        flops = report.step_flops(encoder, batch, dim, RECIPE["K"]) / batch
        ours = add(f"step-ours-graph-{batch}", "step-ours", units, batch, flops)
        torch = add(f"step-torch-{batch}", "step-torch", units, batch, flops)
        rows.append((STEP_ROW, batch, "img/s", ours, torch))
        if batch == p["pynative"][0]:
            key, units = f"step-ours-pynative-{batch}", p["pynative"][1]
            pynative = add(key, "step-ours", units, batch, flops, mode="pynative")
            rows.append(("train step: PyNative vs PyTorch", batch, "img/s", pynative, torch))
        if batch == p["loop"][0]:
            loop = add(f"loop-{batch}", "loop", p["loop"][1], batch, flops, data_dir=data_dir)
            rows.append(("train loop (pipeline+step) vs step alone", batch, "img/s", loop, ours))
        if batch == max(p["steps"]):
            size, units = p["pipeline"]
            pipeline = add(f"pipeline-{size}", "pipeline", units, size, data_dir=data_dir)
            rows.append((f"two-view pipeline vs step b{batch}", size, "img/s", pipeline, ours))
    for batch, units in p["eval"].items():
        groups.append([])
        ours = add(f"eval-ours-{batch}", "eval-ours", units, batch, encoder)
        theirs = add(f"eval-torch-{batch}", "eval-torch", units, batch, encoder)
        rows.append(("feature extraction (eval) vs PyTorch", batch, "img/s", ours, theirs))
    bank, queries = p["knn"]
    flops, options = report.knn_flops(queries, bank, dim), {"bank": bank, "queries": queries}
    ours, theirs = (
        Config(f"knn-{k}", "knn", {**options, "numpy": k == "numpy"}, 1, 0, flops)
        for k in ("ours", "numpy")
    )
    groups.append([ours, theirs])
    rows.append((f"kNN {bank}x{dim} bank, {queries} queries vs NumPy", 0, "s", ours, theirs))
    return groups, rows


def assumed_peak() -> tuple[float, str]:
    """This CPU's FP32 peak (FLOP/s) and how it was assumed."""
    cores = len(os.sched_getaffinity(0))
    with open("/proc/cpuinfo") as f:
        mhz = report.cpu_mhz(f.read())
    if not mhz:
        mhz = report.cpu_mhz("", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
    peak = report.peak_flops(cores, mhz)
    text = f"{cores} cores x {mhz:.0f} MHz x {report.FLOPS_PER_CYCLE} FLOP/cycle"
    return peak, f"{text} (AVX2: 2 FMA x 8 x 2) = {peak / 1e9:.1f} GFLOP/s"


def build_rows(rows: list[tuple], results: dict, peak: float) -> list[dict]:
    """The table's rows: both sides summarised and the speed ratio of their medians."""
    table = []
    for what, batch, unit, *configs in rows:
        ours, theirs = (summarize(c, results[c.key], peak) for c in configs)
        ratio = report.speed_ratio(ours["median"], theirs["median"], unit)
        row = dict(what=what, batch=batch, unit=unit, ours=ours, theirs=theirs, ratio=ratio)
        table.append({**row, "ours_key": configs[0].key, "theirs_key": configs[1].key})
    return table


def monitor_cost(table: list[dict]) -> dict:
    """The kNN monitor's cost per CIFAR-10 epoch from the eval row at ``EVAL_BATCH_SIZE`` (what
    the monitor runs) and the step row at the largest batch measured."""
    evals = {r["batch"]: r for r in table if r["what"].startswith("feature extraction")}
    step = max((r for r in table if r["what"] == STEP_ROW), key=lambda r: r["batch"])
    eval_img_s = evals[EVAL_BATCH_SIZE]["ours"]["median"]
    cost = report.monitor_share(eval_img_s, step["ours"]["median"])
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches, steps and rounds")
    parser.add_argument("--data-dir", default="../shared/data", help="holds cifar-10-batches-py")
    parser.add_argument("--output", default="", help="JSON file (default: none)")
    parser.add_argument("--worker", choices=[*TASKS, "layers"], help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return serve(args.worker, json.loads(args.options))
    if not os.path.isdir(os.path.join(args.data_dir, "cifar-10-batches-py")):
        parser.error(f"no CIFAR-10 (cifar-10-batches-py) in --data-dir {args.data_dir}")
    start, mode = time.perf_counter(), "quick" if args.quick else "full"
    peak, peak_text = assumed_peak()
    print(f"{mode} mode; FP32 peak assumed: {peak_text}", flush=True)
    layers = Worker(Config("layers", "layers"))  # forward FLOPs of encoder_q per image
    encoder = report.forward_flops(layers.ask()["layers"])
    layers.close()
    p = {key: plans[not args.quick] for key, plans in PLANS.items()}
    groups, rows = plan(p, os.path.abspath(args.data_dir), encoder)
    results = {k: r for group in groups for k, r in run_group(group, p["rounds"]).items()}
    table = build_rows(rows, results, peak)
    monitor = monitor_cost(table)
    step = report.step_flops(encoder, 1, RECIPE["dim"], RECIPE["K"]) / 1e9
    notes = NOTES.format(
        torch=version("torch"), threads=TORCH_THREADS, step=step, eval=encoder / 1e9, peak=peak_text
    )
    seconds = time.perf_counter() - start
    print(f"\n{report.format_table(table)}\n\n{notes}\n{monitor['text']}")
    print(f"{mode} mode: {seconds:.0f} s in total")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        document = {"mode": mode, "plan": p, "peak": peak_text, "peak_flops": peak}
        document.update(encoder_flops=encoder, rows=table, raw=results, seconds=round(seconds))
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({**document, "monitor": monitor}, f, indent=1)
        print(f"JSON: {args.output}")


if __name__ == "__main__":
    main()
