"""Figures of evaluation results: a retrieval grid, training curves and an embedding map.

Built on ``matplotlib.figure.Figure``, not ``pyplot`` (no global state, no display); each has a
fixed size in inches and is saved at :data:`DPI` uncropped, so its pixel size is known.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

DPI = 100
# Retrieval grid layout, in inches: square image tiles, each under a two-line title at 8.5 pt.
TILE_INCHES, TITLE_INCHES = 1.05, 0.4
COLUMN_PITCH = 1.2  # tile plus the space to the next tile
ROW_PITCH = TILE_INCHES + TITLE_INCHES + 0.1
GROUP_GAP = 0.45  # extra space between the query, nearest and farthest groups
MARGIN, HEADER_INCHES = 0.15, 0.75  # header: figure title and group headers
_TITLE_COLOURS = {None: "black", True: "#1a7f37", False: "#cf222e"}  # by Tile.same_class


@dataclass
class Tile:
    """One image of the grid (uint8 H x W x 3 RGB) under its title; ``same_class``: whether it
    shows the query's class (green or red title), None for the query itself."""

    image: np.ndarray
    title: str
    same_class: Optional[bool] = None


@dataclass
class RetrievalRow:
    """A query with its most and least similar bank images, in rank order."""

    query: Tile
    nearest: Sequence[Tile]
    farthest: Sequence[Tile]


def retrieval_grid_size(num_queries: int, topk: int) -> tuple[float, float]:
    """Width and height in inches of :func:`retrieval_grid_figure`'s figure."""
    width = 2 * MARGIN + (1 + 2 * topk) * COLUMN_PITCH + 2 * GROUP_GAP
    return width, HEADER_INCHES + num_queries * ROW_PITCH + MARGIN


def retrieval_grid_figure(rows: Sequence[RetrievalRow], topk: int, title: str = "") -> Figure:
    """One row per query: the query, its ``topk`` nearest and ``topk`` farthest images, at fixed
    positions in inches (titles never overlap the row above, whatever the number of rows)."""
    width, height = retrieval_grid_size(len(rows), topk)
    figure = Figure(figsize=(width, height))
    tile_w, tile_h = TILE_INCHES / width, TILE_INCHES / height  # in figure fractions
    nearest = MARGIN + COLUMN_PITCH + GROUP_GAP  # left edge of the first nearest tile, inches
    starts = (MARGIN, nearest, nearest + topk * COLUMN_PITCH + GROUP_GAP)  # of the three groups
    columns = [[x + i * COLUMN_PITCH for i in range(n)] for x, n in zip(starts, (1, topk, topk))]
    for r, row in enumerate(rows):
        bottom = height - HEADER_INCHES - r * ROW_PITCH - TITLE_INCHES - TILE_INCHES
        for lefts, tiles in zip(columns, ([row.query], row.nearest, row.farthest)):
            for left, tile in zip(lefts, tiles):
                axes = figure.add_axes((left / width, bottom / height, tile_w, tile_h))
                axes.imshow(tile.image, interpolation="nearest")
                colour = _TITLE_COLOURS[tile.same_class]
                axes.set_title(tile.title, fontsize=8.5, color=colour, pad=3, linespacing=1.1)
                axes.set(xticks=[], yticks=[])
                if tile.same_class is None:
                    axes.spines[:].set_linewidth(2.5)  # frame the query
    centred, header_y = dict(ha="center", va="center"), 1.0 - 0.7 * HEADER_INCHES / height
    headers = ("query (test)", "most similar (train)", "most dissimilar (train)")
    for text, lefts in zip(headers, columns):
        centre = (lefts[0] + lefts[-1] + TILE_INCHES) / 2
        figure.text(centre / width, header_y, text, **centred, fontsize=11, fontweight="bold")
    if title:
        figure.text(0.5, 1.0 - 0.25 * HEADER_INCHES / height, title, **centred, fontsize=10)
    return figure


# The PyTorch demo's published log (facebookresearch/moco, colab notebook, asymmetric loss, cosine,
# batch 512): (epoch, loss, kNN top-1) rows.
DEMO_CURVE = tuple(
    zip(
        (1, 2, 10, 20, 50, 100, 150, 200),
        (6.9569, 7.2502, 5.9910, 4.3413, 3.1945, 2.7264, 2.4265, 2.2716),
        (31.98, 33.52, 48.03, 61.38, 73.30, 78.06, 81.18, 82.58),
    )
)
DEMO_LABEL = "PyTorch demo (published log)"
Curve = Sequence[tuple[int, float]]  # (epoch, value) pairs


def training_curves_figure(
    loss: Curve, knn: Curve, title: str = "", reference: bool = False
) -> Figure:
    """The training loss and the kNN top-1 (epoch 0: initialisation) side by side, 10 x 4 inches;
    ``reference`` adds ``DEMO_CURVE`` (dashed) up to this run's last epoch, or to epoch 10 for a
    shorter run (the demo's first ten epochs give its trend)."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    panels = figure.subplots(1, 2)
    epochs = [e for e, _ in loss] + [e for e, _ in knn]
    if reference:
        demo = [row for row in DEMO_CURVE if row[0] <= max([10, *epochs])]
        demo_epochs, *demo_values = zip(*demo)
        for axes, values in zip(panels, demo_values):
            axes.plot(demo_epochs, values, "s--", color="#6e7781", label=DEMO_LABEL)
        epochs += demo_epochs
    styles = (
        (loss, "#0969da", "InfoNCE loss (mean over the epoch)", "training loss"),
        (knn, "#bc4c00", "kNN top-1 (%)", "kNN monitor (test set)"),
    )
    for axes, (points, colour, ylabel, name) in zip(panels, styles):
        x, y = [e for e, _ in points], [v for _, v in points]
        axes.plot(x, y, marker="o", color=colour, label="this run")
        axes.set(xlabel="epoch", ylabel=ylabel, title=name)
        if epochs:  # the same epoch axis on both panels, even for a single point
            axes.set_xlim(min(epochs) - 0.3, max(epochs) + 0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if reference:
            axes.legend(fontsize=8)
    init = [v for e, v in knn if e == 0]
    if init:
        panels[1].annotate("init", (0, init[0]), textcoords="offset points", xytext=(6, -12))
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


EMBEDDING_INCHES = (11.0, 8.0)  # the map, with the legend to its right
LEGEND_ROWS = 25  # legend entries per column (CIFAR-100: four columns)


def class_colours(num_classes: int) -> np.ndarray:
    """RGBA colour per class: tab10 or tab20 while they suffice, else evenly along turbo."""
    if num_classes <= 20:
        return colormaps["tab10" if num_classes <= 10 else "tab20"].colors[:num_classes]
    return colormaps["turbo"](np.linspace(0.0, 1.0, num_classes))


def embedding_figure(
    points_2d: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str = ""
) -> Figure:
    """A 2-D map of ``points_2d`` (N x 2) coloured by ``labels``, drawn in the given order
    (one scatter, so no class hides the others), with a legend of ``class_names`` outside the
    axes; :data:`EMBEDDING_INCHES` in size. The axes have no scale: only neighbours matter."""
    figure = Figure(figsize=EMBEDDING_INCHES, layout="constrained")
    axes = figure.subplots()
    colours = np.asarray(class_colours(len(class_names)))
    axes.scatter(points_2d[:, 0], points_2d[:, 1], c=colours[labels], s=7, alpha=0.7, linewidths=0)
    axes.set_aspect("equal", adjustable="datalim")
    axes.set(xticks=[], yticks=[])
    handles = [
        Line2D([], [], linestyle="", marker="o", markersize=7, color=colour, label=name)
        for colour, name in zip(colours, class_names)
    ]
    n = -(-len(handles) // LEGEND_ROWS)  # legend columns
    outside = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.legend(handles=handles, **outside, ncols=n, fontsize=10 if n <= 1 else 7, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def save_figure(figure: Figure, path: str) -> str:
    """Writes ``figure`` as a PNG at :data:`DPI` (creating the folder); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path
