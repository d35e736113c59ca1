"""The rules every flowerbed plot follows (curves.png and the reports' plots).

- at most :data:`MAX_CURVES` curves per panel: more are split into panels (facets);
- round axes get integer ticks;
- a ± std band (or error bar) of an accuracy never leaves [0, 1], of a loss never goes
  below 0;
- the y axis names the metric that is plotted (:func:`~flowerbed.run.trackers.primary.
  metric_label`), and the final values get a bar chart with error bars per configuration.

Matplotlib is imported lazily (only these helpers that draw need it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from flowerbed.run.trackers.primary import is_accuracy

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_CURVES = 8
T = TypeVar("T")


def split_panels(items: Sequence[T], max_per_panel: int = MAX_CURVES) -> list[list[T]]:
    """``items`` in order, cut into as few panels as needed, of near-equal size, each of at
    most ``max_per_panel`` (e.g. 23 curves -> panels of 8, 8, 7; 9 -> 5 and 4)."""
    if max_per_panel < 1:
        raise ValueError("max_per_panel must be >= 1")
    n = len(items)
    if n == 0:
        return []
    panels = -(-n // max_per_panel)
    size, extra = divmod(n, panels)
    out, i = [], 0
    for p in range(panels):
        k = size + (p < extra)
        out.append(list(items[i:i + k]))
        i += k
    return out


def facet(keys: Sequence[T], facet_of: dict[T, Any] | None = None,
          max_per_panel: int = MAX_CURVES) -> list[tuple[str, list[T]]]:
    """Panels of curve keys: one per distinct ``facet_of`` value (first-seen order, title
    the value), each split further to at most ``max_per_panel``; without ``facet_of``,
    :func:`split_panels` (titles empty)."""
    groups: dict[str, list[T]] = {}
    for k in keys:
        groups.setdefault("" if facet_of is None else str(facet_of[k]), []).append(k)
    out = []
    for title, members in groups.items():
        parts = split_panels(members, max_per_panel)
        for i, part in enumerate(parts):
            suffix = f" ({i + 1}/{len(parts)})" if len(parts) > 1 else ""
            out.append((f"{title}{suffix}" if title else suffix.strip(" ()"), part))
    return out


def clip_band(metric: str, mean: np.ndarray | float, std: np.ndarray | float
              ) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of mean ± std, inside the metric's range: [0, 1] for accuracies, >= 0 for
    losses and distances."""
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    lo, hi = m - s, m + s
    if is_accuracy(metric):
        return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
    if "loss" in metric or "distance" in metric:
        return np.maximum(lo, 0.0), hi
    return lo, hi


def clipped_yerr(metric: str, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Asymmetric error bars (2, n) for matplotlib: mean ± std clipped like the bands."""
    lo, hi = clip_band(metric, mean, std)
    m = np.asarray(mean, dtype=np.float64)
    return np.vstack([m - lo, hi - m])


def integer_rounds(ax: Axes) -> None:
    """Rounds are whole numbers: integer ticks only on the x axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def panel_grid(n: int, width: float = 6.0, height: float = 4.2, max_cols: int = 3
               ) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels (rows of at most ``max_cols``), shared y; the unused
    cells of the last row are removed, so ``len(fig.axes) == n``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(math.ceil(math.sqrt(max(n, 1))), max_cols)  # near-square: 4 -> 2 x 2
    rows = -(-max(n, 1) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(width * cols, height * rows), sharey=True,
                             squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:max(n, 1)]


def legend_below(ax: Axes) -> None:
    """The legend under the panel, off the data (save with ``bbox_inches="tight"``)."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1,
              frameon=False)


def final_bars(ax: Axes, labels: Sequence[str], means: Sequence[float],
               stds: Sequence[float], metric: str, xlabel: str, log: bool = False) -> None:
    """One horizontal bar per configuration (top to bottom in order) with its ± std error
    bar, clipped to the metric's range."""
    m = np.asarray(means, dtype=np.float64)
    y = np.arange(len(labels))
    ax.barh(y, m, xerr=clipped_yerr(metric, m, np.asarray(stds, dtype=np.float64)),
            capsize=3, color="tab:blue", alpha=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, xscale="log" if log else "linear")
    if is_accuracy(metric) and not log:
        ax.set_xlim(0.0, 1.0)
    ax.grid(alpha=0.3, axis="x", which="both")


__all__ = ["MAX_CURVES", "clip_band", "clipped_yerr", "facet", "final_bars",
           "integer_rounds", "legend_below", "panel_grid", "split_panels"]
