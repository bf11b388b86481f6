"""MoCo v3 training step, ResNet-18 and ViT-Tiny: ours (graph; PyNative for the ViT) against the
official code in PyTorch, speed and peak memory.

    python -m benchmarks.mocov3 [--quick] [--output FILE.json]

Each configuration in its own process (``benchmarks.run.run_group``); the recipes' settings."""

import argparse
import json

from benchmarks import report
from benchmarks.run import Config, build_rows, run_group
from benchmarks.workers import VIT_PARTS

ARCHS = {"resnet18": "ResNet-18", "vit_tiny": "ViT-Tiny"}
PLANS = {"quick": ((32,), 2), "full": ((32, 64), 3)}  # batches, rounds (one step per round)
PART_BATCH, PART_UNITS = 64, 5  # ViT-Tiny block parts: images, forward+backward passes per round


def plan(batches) -> tuple[list[list[Config]], list[tuple]]:
    """A group per (arch, batch): our graph step, our PyNative step (ViT) and PyTorch's; one group
    of the parts of a ViT-Tiny block, each ours (graph) and PyTorch's."""
    groups, rows = [], []
    for arch, name in ARCHS.items():
        for batch in batches:
            options = {"batch": batch, "arch": arch}
            ours = Config(f"{arch}-graph-{batch}", "v3-ours", options, 1, batch)
            torch = Config(f"{arch}-torch-{batch}", "v3-torch", options, 1, batch)
            groups.append([ours, torch])
            rows.append((f"v3 {name} step: graph vs PyTorch", batch, "img/s", ours, torch))
            if arch.startswith("vit"):
                key, mode = f"{arch}-pynative-{batch}", {**options, "mode": "pynative"}
                groups[-1].insert(1, Config(key, "v3-ours", mode, 1, batch))
                rows.append(
                    (f"v3 {name} step: PyNative vs PyTorch", batch, "img/s", groups[-1][1], torch)
                )
    groups.append([])
    for part in VIT_PARTS:
        options = {"batch": PART_BATCH, "part": part}
        ours, torch = (
            Config(f"{part}-{side}", f"vit-part-{side}", options, PART_UNITS)
            for side in ("ours", "torch")
        )
        groups[-1] += [ours, torch]
        rows.append((f"ViT-Tiny {part} fwd+bwd (graph)", PART_BATCH, "s", ours, torch))
    return groups, rows


def memory_per_image(table: list[dict]) -> list[str]:
    """Peak RSS growth per image between the smallest and largest batch of each row."""
    lines = []
    for what in dict.fromkeys(row["what"] for row in table):
        rows = sorted((r for r in table if r["what"] == what), key=lambda r: r["batch"])
        if len(rows) < 2:
            continue
        first, last, images = rows[0], rows[-1], rows[-1]["batch"] - rows[0]["batch"]
        ours, theirs = (
            (last[side]["rss_mib"] - first[side]["rss_mib"]) / images for side in ("ours", "theirs")
        )
        lines.append(
            f"{what}: {ours:.0f} / {theirs:.0f} MiB per image of the batch ({ours / theirs:.1f}x)"
        )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 32 only, 2 rounds")
    parser.add_argument("--output", default="", help="JSON file (default: none)")
    args = parser.parse_args(argv)
    batches, rounds = PLANS["quick" if args.quick else "full"]
    groups, rows = plan(batches)
    results = {k: r for group in groups for k, r in run_group(group, rounds).items()}
    table = build_rows(rows, results, peak=1.0)
    memory = memory_per_image(table)
    print(f"\n{report.format_table(table)}\n", *memory, sep="\n")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"rows": table, "raw": results, "memory": memory}, f, indent=1)


if __name__ == "__main__":
    main()
