"""Tabulates and draws our training curves beside the PyTorch reference's (docs/curve.md).

    python tests/equivalence/compare_curves.py --ours RUN_S0 RUN_S1 --reference REF_S0.json
        REF_S1.json [--figure image/curve_reduced.png]

``--ours``: results folders of main.py (their log.csv); ``--reference``: train_demo.py's JSON.
Prints a Markdown table of each run's loss and kNN top-1 per epoch, and whether ours lies within
the reference's seed range widened by our own spread at every epoch.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from src.train.log import read_curves  # noqa: E402


def our_curve(results_dir: str) -> dict[int, dict]:
    """``{epoch: {"loss", "knn_top1"}}`` of a main.py run (None where not measured)."""
    curve: dict[int, dict] = {}
    for metric, pairs in zip(("loss", "knn_top1"), read_curves(results_dir)):
        for epoch, value in pairs:
            curve.setdefault(epoch, {"loss": None, "knn_top1": None})[metric] = value
    return curve


def reference_curve(path: str) -> dict[int, dict]:
    with open(path) as f:
        result = json.load(f)
    curve = {0: {"loss": None, "knn_top1": result.get("knn_top1_init")}}
    for key, value in result.items():
        if key.startswith("epoch") and key[5:].isdigit():
            curve[int(key[5:])] = {"loss": value["loss"], "knn_top1": value["knn_top1"]}
    return curve


def within(ours: list[float], theirs: list[float]) -> bool:
    """Ours inside the reference's range widened on each side by our own spread."""
    spread = max(ours) - min(ours)
    return min(theirs) - spread <= min(ours) and max(ours) <= max(theirs) + spread


def table(ours: list[dict], theirs: list[dict], metric: str) -> tuple[list[str], bool]:
    epochs = sorted(e for e in ours[0] if ours[0][e][metric] is not None)
    names = [f"ours s{i}" for i in range(len(ours))] + [f"ref s{i}" for i in range(len(theirs))]
    lines = [f"| epoch | {' | '.join(names)} | within |", "|---" * (len(names) + 2) + "|"]
    ok = True
    for epoch in epochs:
        a = [run[epoch][metric] for run in ours]
        b = [run[epoch][metric] for run in theirs if run.get(epoch, {}).get(metric) is not None]
        inside = within(a, b) if b else None
        ok &= inside is not False
        cells = " | ".join(f"{v:.2f}" if metric == "knn_top1" else f"{v:.3f}" for v in a + b)
        lines.append(
            f"| {epoch} | {cells} | {'-' if inside is None else 'yes' if inside else 'NO'} |"
        )
    return lines, ok


def draw(ours: list[dict], theirs: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for runs, label, colour in (
        (ours, "ours (MindSpore)", "C0"),
        (theirs, "reference (PyTorch)", "C1"),
    ):
        for ax, metric in zip(axes, ("loss", "knn_top1")):
            epochs = sorted(e for e in runs[0] if runs[0][e][metric] is not None)
            values = np.array([[run[e][metric] for e in epochs] for run in runs])
            ax.plot(epochs, values.mean(axis=0), color=colour, label=label, marker=".")
            ax.fill_between(
                epochs, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.25
            )
    axes[0].set(xlabel="epoch", ylabel="training loss (epoch mean)")
    axes[1].set(xlabel="epoch", ylabel="kNN top-1 (%)")
    axes[1].legend()
    fig.suptitle("Reduced recipe (configs/cifar10_reduced.yaml): mean and range of two seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", nargs="+", required=True)
    parser.add_argument("--reference", nargs="+", required=True)
    parser.add_argument("--figure", default="")
    args = parser.parse_args()
    ours = [our_curve(path) for path in args.ours]
    theirs = [reference_curve(path) for path in args.reference]
    ok = True
    for metric in ("loss", "knn_top1"):
        lines, inside = table(ours, theirs, metric)
        print(f"\n{metric}:\n" + "\n".join(lines))
        ok &= inside
    print(f"\nours within the reference's spread widened by ours at every epoch: {ok}")
    if args.figure:
        draw(ours, theirs, args.figure)
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
