"""Where the training step's time goes: its parts and variants, ours against PyTorch.

    python -m benchmarks.profile_step [--batch 64] [--rounds 3] [--steps 3] [--output FILE]

Parts (each a compiled graph of its own, or the reference's eager code): the whole step, the
query encoder's forward and backward, the key encoder's forward (train-mode BN), the momentum
update of the key encoder, the SGD update. Variants of our whole step: plain BN instead of 8
split groups, no gradient finiteness check, MindSpore's ``jit_level`` O1, thread settings,
float16 (``--amp-level O2``), and STL-10's 96-pixel images with the ImageNet stem. Workers and
rounds as in ``benchmarks.run``.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from benchmarks.report import spread
from benchmarks.run import Config, run_group

PARTS = ("step", "q_fwd_bwd", "k_fwd", "momentum", "sgd")
VARIANTS = {  # our whole step, changed
    "split BN 8 (as run)": {},
    "plain BN (bn-splits 1)": {"bn_splits": 1},
    "no finiteness check": {"finite_check": False},
    "jit_level O1": {"jit_level": "O1"},
    "runtime_num_threads 1": {"context": {"runtime_num_threads": 1}},
    "inter_op_parallel_num 1": {"context": {"inter_op_parallel_num": 1}},
    "float16 (amp O2)": {"amp_level": "O2"},
    "96 px, ImageNet stem (STL-10)": {"stem": "imagenet", "image_size": 96},
}


def groups(batch: int, steps: int) -> list[list[Config]]:
    """The parts (ours and PyTorch side by side), then our step's variants."""
    parts = [
        Config(f"{side}-{part}", f"part-{side}", {"batch": batch, "part": part}, steps, batch)
        for part in PARTS
        for side in ("ours", "torch")
    ]
    variants = [
        Config(name, "part-ours", {"batch": batch, "part": "step", **options}, steps, batch)
        for name, options in VARIANTS.items()
    ]
    return [parts, variants]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and worker")
    parser.add_argument("--output", default="")
    args = parser.parse_args(argv)
    medians = {}
    with tempfile.TemporaryDirectory(prefix="moco-profile-") as log_dir:
        for group in groups(args.batch, args.steps):
            for key, result in run_group(group, args.rounds, log_dir).items():
                seconds = [s / args.steps for s in result["seconds"]]
                medians[key] = {**spread(seconds), "rss_mib": result["rss_mib"]}
    print(f"\nseconds per step at batch {args.batch} (median, min-max of {args.rounds} rounds)")
    step = {side: medians[f"{side}-step"]["median"] for side in ("ours", "torch")}
    for part in PARTS:
        ours, torch = medians[f"ours-{part}"], medians[f"torch-{part}"]
        share = f"{ours['median'] / step['ours']:5.0%} / {torch['median'] / step['torch']:4.0%}"
        ratio = ours["median"] / torch["median"]
        print(f"  {part:10} ours {ours['median']:6.3f} ({ours['min']:.3f}-{ours['max']:.3f})"
              f"  PyTorch {torch['median']:6.3f}  ours/PyTorch time {ratio:.2f}"
              f"  share of the step {share}")  # fmt: skip
    base = medians["split BN 8 (as run)"]["median"]
    for name in VARIANTS:
        value = medians[name]
        print(f"  {name:24} {value['median']:6.3f} ({value['min']:.3f}-{value['max']:.3f})"
              f"  {value['median'] / base:.2f} x the step as run")  # fmt: skip
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"batch": args.batch, "seconds_per_step": medians}, f, indent=1)


if __name__ == "__main__":
    main()
