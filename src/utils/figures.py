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
# Layout of the retrieval grid, in inches: square image tiles with a two-line title above each.
TILE_INCHES = 1.05
TITLE_INCHES = 0.4  # class name and score, two lines at 8.5 pt
COLUMN_PITCH = 1.2  # tile plus the space to the next tile
ROW_PITCH = TILE_INCHES + TITLE_INCHES + 0.1
GROUP_GAP = 0.45  # extra space between the query, nearest and farthest groups
MARGIN = 0.15
HEADER_INCHES = 0.75  # figure title and group headers
MATCH_COLOUR, MISMATCH_COLOUR, NEUTRAL_COLOUR = "#1a7f37", "#cf222e", "black"


@dataclass
class Tile:
    """One image of the grid.

    Attributes:
        image: uint8 (H, W, 3) RGB.
        title: Shown above the image (e.g. class name and score).
        same_class: Whether it shows the query's class (green or red
            title); ``None`` for the query itself.
    """

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
    """Draws one row per query: the query, its ``topk`` nearest and ``topk`` farthest images.

    Tiles are placed at fixed positions in inches, so titles never overlap
    the row above whatever the number of rows.

    Args:
        rows: The queries and their ranked tiles (at most ``topk`` of each).
        topk: Number of tile columns per group.
        title: Figure title.

    Returns:
        The figure, of size :func:`retrieval_grid_size`.
    """
    width, height = retrieval_grid_size(len(rows), topk)
    figure = Figure(figsize=(width, height))
    # Left edge (inches) of every tile column of each group.
    first_nearest = MARGIN + COLUMN_PITCH + GROUP_GAP
    first_farthest = first_nearest + topk * COLUMN_PITCH + GROUP_GAP
    group_columns = {
        "query": [MARGIN],
        "nearest": [first_nearest + i * COLUMN_PITCH for i in range(topk)],
        "farthest": [first_farthest + i * COLUMN_PITCH for i in range(topk)],
    }
    for row_index, row in enumerate(rows):
        bottom = height - HEADER_INCHES - row_index * ROW_PITCH - TITLE_INCHES - TILE_INCHES
        for group, tiles in (
            ("query", [row.query]),
            ("nearest", row.nearest),
            ("farthest", row.farthest),
        ):
            for left, tile in zip(group_columns[group], tiles):
                axes = figure.add_axes(
                    (left / width, bottom / height, TILE_INCHES / width, TILE_INCHES / height)
                )
                _draw_tile(axes, tile)

    header_y = 1.0 - 0.7 * HEADER_INCHES / height
    for group, text in (
        ("query", "query (test)"),
        ("nearest", "most similar (train)"),
        ("farthest", "most dissimilar (train)"),
    ):
        columns = group_columns[group]
        centre = (columns[0] + columns[-1] + TILE_INCHES) / 2
        figure.text(
            centre / width, header_y, text, ha="center", va="center", fontsize=11, fontweight="bold"
        )
    if title:
        figure.text(
            0.5, 1.0 - 0.25 * HEADER_INCHES / height, title, ha="center", va="center", fontsize=10
        )
    return figure


def _draw_tile(axes, tile: Tile) -> None:
    axes.imshow(tile.image, interpolation="nearest")
    colour = {None: NEUTRAL_COLOUR, True: MATCH_COLOUR, False: MISMATCH_COLOUR}[tile.same_class]
    axes.set_title(tile.title, fontsize=8.5, color=colour, pad=3, linespacing=1.1)
    axes.set_xticks([])
    axes.set_yticks([])
    if tile.same_class is None:  # frame the query
        for spine in axes.spines.values():
            spine.set_linewidth(2.5)


# The PyTorch demo's published log (facebookresearch/moco, colab notebook, asymmetric loss, cosine,
# batch 512): epoch, loss, kNN top-1.
DEMO_CURVE = ((1, 6.9569, 31.98), (2, 7.2502, 33.52), (10, 5.9910, 48.03), (20, 4.3413, 61.38),
              (50, 3.1945, 73.30), (100, 2.7264, 78.06), (150, 2.4265, 81.18),
              (200, 2.2716, 82.58))  # fmt: skip
DEMO_LABEL = "PyTorch demo (published log)"


def training_curves_figure(
    loss: Sequence[tuple[int, float]],
    knn: Sequence[tuple[int, float]],
    title: str = "",
    reference: bool = False,
) -> Figure:
    """The training loss and the kNN top-1 (epoch 0: initialisation), ``(epoch, value)`` pairs,
    side by side, 10 x 4 inches; ``reference`` adds ``DEMO_CURVE`` (dashed) up to this run's
    last epoch, or to epoch 10 for a shorter run (the demo's first ten epochs give its trend)."""
    loss_epochs, losses = [e for e, _ in loss], [v for _, v in loss]
    knn_epochs, knn_top1 = [e for e, _ in knn], [v for _, v in knn]
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, knn_axes = figure.subplots(1, 2)
    if reference:
        last = max([10, *loss_epochs, *knn_epochs])
        demo = [row for row in DEMO_CURVE if row[0] <= last]
        epochs = [row[0] for row in demo]
        for axes, column in ((loss_axes, 1), (knn_axes, 2)):
            values = [row[column] for row in demo]
            axes.plot(epochs, values, "s--", color="#6e7781", label=DEMO_LABEL)
    loss_axes.plot(loss_epochs, losses, marker="o", color="#0969da", label="this run")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("InfoNCE loss (mean over the epoch)")
    loss_axes.set_title("training loss")
    knn_axes.plot(knn_epochs, knn_top1, marker="o", color="#bc4c00", label="this run")
    if 0 in list(knn_epochs):
        index = list(knn_epochs).index(0)
        knn_axes.annotate("init", (0, knn_top1[index]), textcoords="offset points", xytext=(6, -12))
    knn_axes.set_xlabel("epoch")
    knn_axes.set_ylabel("kNN top-1 (%)")
    knn_axes.set_title("kNN monitor (test set)")
    all_epochs = list(loss_epochs) + list(knn_epochs) + (epochs if reference else [])
    for axes in (loss_axes, knn_axes):
        if all_epochs:  # the same epoch axis on both panels, even for a single point
            axes.set_xlim(min(all_epochs) - 0.3, max(all_epochs) + 0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if reference:
            axes.legend(fontsize=8)
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
    axes.set_xticks([])
    axes.set_yticks([])
    handles = [
        Line2D([], [], linestyle="", marker="o", markersize=7, color=colour, label=name)
        for colour, name in zip(colours, class_names)
    ]
    axes.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        ncols=-(-len(handles) // LEGEND_ROWS),
        fontsize=10 if len(handles) <= LEGEND_ROWS else 7,
        frameon=False,
    )
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def save_figure(figure: Figure, path: str) -> str:
    """Writes ``figure`` as a PNG at :data:`DPI` (creating the folder); returns ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path
