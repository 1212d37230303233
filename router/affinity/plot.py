"""PNG heatmaps of one layer's co-activation and transition, experts ordered by placement group.

With a placement, experts are reordered so each group's experts are adjacent and group boundaries are
drawn: a good affinity placement shows bright blocks on the diagonal. A replicated expert is drawn in
its first (lowest-numbered) group. Uses matplotlib's Agg canvas directly: no display, no pyplot state.
"""

from __future__ import annotations

from os import PathLike

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from switchyard.router.affinity.matrix import AffinityMatrix
from switchyard.router.affinity.placement import Placement


def group_order(placement: Placement | None, layer: int, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """(expert order [E], group boundaries [G-1] as positions in that order) for one layer."""
    if placement is None:
        return np.arange(num_experts), np.zeros(0, np.int64)
    first_group = np.argmax(placement.holds[placement.layer_index(layer)], axis=0)  # [E]
    order = np.argsort(first_group, kind="stable")
    boundaries = np.flatnonzero(np.diff(first_group[order])) + 1
    return order, boundaries


def _heatmap(ax, values: np.ndarray, rows: tuple, cols: tuple, title: str, xlabel: str, ylabel: str) -> None:
    (row_order, row_bounds), (col_order, col_bounds) = rows, cols
    image = ax.imshow(values[np.ix_(row_order, col_order)], cmap="viridis", interpolation="nearest")
    for at in row_bounds:
        ax.axhline(at - 0.5, color="white", linewidth=0.8)
    for at in col_bounds:
        ax.axvline(at - 0.5, color="white", linewidth=0.8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def plot_layer(
    matrix: AffinityMatrix, layer: int, path: str | PathLike[str], placement: Placement | None = None
) -> None:
    """Write C[layer] (and T[layer -> next], if there is a next layer) as a PNG at `path`."""
    l = matrix.layer_index(layer)
    has_next = l + 1 < matrix.num_layers
    figure = Figure(figsize=(12 if has_next else 6.5, 5.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2 if has_next else 1, squeeze=False)[0]
    here = group_order(placement, layer, matrix.num_experts)
    coactivation = matrix.coactivation[l].copy()
    np.fill_diagonal(coactivation, np.nan)  # the diagonal is p, an order larger; it would hide the pairs
    grouping = f" — {placement.strategy}, {placement.num_groups} groups" if placement else ""
    _heatmap(axes[0], coactivation, here, here, f"co-activation C, layer {layer}{grouping}", "expert j", "expert i")
    if has_next:
        next_layer = int(matrix.layers[l + 1])
        after = group_order(placement, next_layer, matrix.num_experts)
        _heatmap(
            axes[1], matrix.transition[l], here, after,
            f"transition T, layer {layer} -> {next_layer}", f"expert j at layer {next_layer}", f"expert i at layer {layer}",
        )
    figure.tight_layout()
    figure.savefig(path, format="png")
