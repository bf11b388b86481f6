"""Where the training step's time goes: its parts and variants, ours against PyTorch.

    python -m benchmarks.profile_step [--batch 64] [--rounds 3] [--steps 3] [--output FILE]

Each part a compiled graph of its own (PyTorch: eager code), workers as in ``benchmarks.run``."""

import argparse
import json

from benchmarks.report import spread
from benchmarks.run import Config, run_group

# The whole step; encoder_q's forward and backward; encoder_k's forward (train-mode BN); the
# momentum update of encoder_k; the SGD update.
PARTS = ("step", "q_fwd_bwd", "k_fwd", "momentum", "sgd")
CELL = "{median:6.3f} ({min:.3f}-{max:.3f})"  # seconds per step: median (min-max)
VARIANTS = {  # our whole step, changed; the first is the step as run
    "split BN 8 (as run)": {},
    "plain BN (bn-splits 1)": {"bn_splits": 1},
    "no finiteness check": {"finite_check": False},
    "jit_level O1": {"context": {"jit_config": {"jit_level": "O1"}}},
    "runtime_num_threads 1": {"context": {"runtime_num_threads": 1}},
    "inter_op_parallel_num 1": {"context": {"inter_op_parallel_num": 1}},
    "float16 (amp O2)": {"amp_level": "O2"},
    "96 px, ImageNet stem (STL-10)": {"stem": "imagenet", "image_size": 96},
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and worker")
    parser.add_argument("--output", default="")
    args = parser.parse_args(argv)
    batch, steps, medians = args.batch, args.steps, {}
    parts = [
        Config(f"{side}-{part}", f"step-{side}", {"batch": batch, "part": part}, steps, batch)
        for part in PARTS
        for side in ("ours", "torch")
    ]
    variants = [Config(k, "step-ours", {"batch": batch, **v}, steps) for k, v in VARIANTS.items()]
    for group in (parts, variants):
        for key, result in run_group(group, args.rounds).items():
            seconds = [s / steps for s in result["seconds"]]
            medians[key] = {**spread(seconds), "rss_mib": result["rss_mib"]}
    print(f"\nseconds per step at batch {batch} (median, min-max of {args.rounds} rounds)")
    step = {side: medians[f"{side}-step"]["median"] for side in ("ours", "torch")}
    for part in PARTS:
        ours, torch = medians[f"ours-{part}"], medians[f"torch-{part}"]
        share = f"{ours['median'] / step['ours']:5.0%} / {torch['median'] / step['torch']:4.0%}"
        print(
            f"  {part:10} ours {CELL.format(**ours)}  PyTorch {torch['median']:6.3f}  ours/PyTorch"
            f" time {ours['median'] / torch['median']:.2f}  share of the step {share}"
        )
    for name in VARIANTS:
        ratio = medians[name]["median"] / medians[next(iter(VARIANTS))]["median"]
        print(f"  {name:24} {CELL.format(**medians[name])}  {ratio:.2f} x the step as run")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"batch": batch, "seconds_per_step": medians}, f, indent=1)


if __name__ == "__main__":
    main()
