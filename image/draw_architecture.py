"""Draws image/moco_architecture.png: MoCo's training step as boxes and arrows.

    python image/draw_architecture.py [--output image/moco_architecture.png]

Follows src/models/moco.py and src/train/step.py: two augmented views,
a query encoder trained by SGD, a key encoder that is a momentum average of
it (with shuffle BN), a queue of K negative keys, logits N x (1 + K) and the
InfoNCE (cross-entropy) loss with the positive key at index 0.
"""

import argparse
import os

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

WIDTH, HEIGHT = 13.0, 6.2  # inches; coordinates below are in these units

BLUE, ORANGE, GREEN, GREY, PURPLE = "#ddeeff", "#ffe8cc", "#ddf4dd", "#eeeeee", "#eadcf8"


def box(axes, x, y, w, h, text, colour, bold_first_line=True, fontsize=10):
    """A rounded box with its centre at (x, y); returns its edges for arrows."""
    axes.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            facecolor=colour,
            edgecolor="#333333",
            linewidth=1.3,
        )
    )
    lines = text.split("\n")
    line_height = 0.19 * fontsize / 10
    title_y = y + (len(lines) - 1) * line_height / 2
    if bold_first_line:
        axes.text(
            x,
            title_y,
            lines[0],
            ha="center",
            va="center",
            fontsize=fontsize + 0.5,
            fontweight="bold",
        )
        if len(lines) > 1:  # the other lines, smaller, right under the title
            axes.text(
                x,
                title_y - line_height * len(lines) / 2 - 0.04,
                "\n".join(lines[1:]),
                ha="center",
                va="center",
                fontsize=fontsize - 1.5,
                linespacing=1.25,
            )
    else:
        axes.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return {
        "left": (x - w / 2, y),
        "right": (x + w / 2, y),
        "top": (x, y + h / 2),
        "bottom": (x, y - h / 2),
    }


def arrow(
    axes,
    start,
    end,
    text="",
    dashed=False,
    colour="#333333",
    text_offset=(0, 0.15),
    connection="arc3",
):
    axes.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=16,
            linewidth=1.5,
            color=colour,
            linestyle="--" if dashed else "-",
            connectionstyle=connection,
            shrinkA=2,
            shrinkB=2,
        )
    )
    if text:
        middle = (
            (start[0] + end[0]) / 2 + text_offset[0],
            (start[1] + end[1]) / 2 + text_offset[1],
        )
        axes.text(
            *middle, text, ha="center", va="center", fontsize=8.5, color=colour, style="italic"
        )


def draw():
    figure = Figure(figsize=(WIDTH, HEIGHT))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, WIDTH)
    axes.set_ylim(0, HEIGHT)
    axes.axis("off")
    top, bottom = 4.45, 1.75  # query path, key path

    image = box(axes, 0.95, (top + bottom) / 2, 1.35, 0.9, "image x\nN per batch", GREY)
    view_q = box(
        axes, 2.75, top, 1.55, 0.95, "view x_q\nrandom crop, flip,\ncolour jitter, grayscale", GREY
    )
    view_k = box(axes, 2.75, bottom, 1.55, 0.95, "view x_k\nanother random\naugmentation", GREY)
    arrow(axes, image["top"], view_q["left"], connection="arc3,rad=-0.25")
    arrow(axes, image["bottom"], view_k["left"], connection="arc3,rad=0.25")

    encoder_q = box(
        axes, 5.05, top, 2.1, 1.05, "encoder_q\nResNet-18 + fc (SplitBN)\nupdated by SGD", BLUE
    )
    encoder_k = box(
        axes,
        5.05,
        bottom,
        2.1,
        1.05,
        "encoder_k\nsame net, no gradient\nshuffle BN: permute batch",
        ORANGE,
    )
    arrow(axes, view_q["right"], encoder_q["left"])
    arrow(axes, view_k["right"], encoder_k["left"])
    arrow(
        axes,
        encoder_q["bottom"],
        encoder_k["top"],
        dashed=True,
        colour="#b35900",
        text="momentum update\nθ_k ← m·θ_k + (1−m)·θ_q\n(m = 0.99, before the step)",
        text_offset=(1.25, 0.0),
    )

    q = box(axes, 7.35, top, 1.35, 0.8, "q\nN × C, L2-norm", BLUE)
    k = box(axes, 7.35, bottom, 1.35, 0.9, "k₊\nN × C, L2-norm\nstop-gradient", ORANGE)
    arrow(axes, encoder_q["right"], q["left"])
    arrow(axes, encoder_k["right"], k["left"])

    queue = box(
        axes,
        7.35,
        0.55,
        3.1,
        0.72,
        "queue: K negative keys (K × C)\nkeys of earlier batches; oldest N replaced",
        PURPLE,
        fontsize=9.5,
    )
    arrow(
        axes,
        k["bottom"],
        (k["bottom"][0], 0.91),
        dashed=True,
        colour="#6a3d9a",
        text="enqueue k₊\nafter the step",
        text_offset=(0.68, 0.0),
    )

    logits = box(
        axes,
        9.75,
        (top + bottom) / 2 + 0.25,
        2.05,
        1.35,
        "logits N × (1+K)\nl_pos = q·k₊   (N × 1)\nl_neg = q·queueᵀ (N × K)\n"
        "concat, divide by T = 0.1",
        GREEN,
    )
    arrow(axes, q["right"], logits["top"], connection="arc3,rad=-0.2")
    arrow(
        axes, k["right"], (logits["left"][0], logits["left"][1] - 0.3), connection="arc3,rad=0.15"
    )
    arrow(axes, queue["right"], logits["bottom"], connection="arc3,rad=0.3")

    loss = box(
        axes,
        12.05,
        (top + bottom) / 2 + 0.25,
        1.5,
        1.0,
        "InfoNCE\ncross-entropy,\npositive = class 0",
        GREEN,
    )
    arrow(axes, logits["right"], loss["left"])
    arrow(
        axes,
        loss["top"],
        (encoder_q["top"][0] + 0.4, encoder_q["top"][1]),
        colour="#1f6feb",
        text="gradient to encoder_q only",
        connection="arc3,rad=0.25",
        text_offset=(0.3, 0.95),
    )

    axes.text(
        WIDTH / 2,
        HEIGHT - 0.22,
        "MoCo training step (src/train/step.py): momentum update, loss and SGD on "
        "encoder_q, enqueue",
        ha="center",
        va="center",
        fontsize=12,
        fontweight="bold",
    )
    return figure


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "moco_architecture.png"),
    )
    args = parser.parse_args()
    draw().savefig(args.output, dpi=110)
    print(args.output)


if __name__ == "__main__":
    main()
