"""Reports on simulated time: accuracy vs simulated seconds, time to a target, stability.

Runs on the virtual clock (:mod:`flowerbed.simulation.clock`) record ``sim_time_s`` in every
round; runs of different strategies evaluate at different simulated times (a synchronous
round lasts as long as its slowest client, FedAsync makes a model version per reply). So
seeds and strategies are compared on simulated time, not on rounds: a run's metric at time
t is its last evaluation at or before t (a step function, what a deployment would serve).

``[report]`` keys of a sweep file (all optional; without ``time-target`` and
``time-horizon-s`` nothing here is added, the plot is drawn whenever runs are timed):

- ``time-target``: the metric's target; the table gives the first simulated time at which
  each seed's evaluation reaches it (>= for accuracies, <= otherwise), mean ± std over the
  seeds that reached it, and how many did;
- ``time-horizon-s`` H: the metric at H (mean ± std over seeds) and its *jitter*: the mean
  absolute change of the metric between consecutive points of the grid H/2, H/2 + g, ...,
  H (g = ``time-grid-s``, default H / 40), a measure of how much the served model's quality
  moves once training has settled (lower = more stable; Fraboni et al., JMLR 2023, compare
  the stability of asynchronous and synchronous aggregation by such curves).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from flowerbed.run.trackers.plot_rules import clip_band, facet, legend_below, panel_grid
from flowerbed.run.trackers.primary import is_accuracy, metric_label

Timeline = tuple[np.ndarray, np.ndarray]  # (simulated seconds, metric), increasing times


def timeline(run_dir: Path, metric: str) -> Timeline | None:
    """(sim_time_s, metric) of every evaluated round of a run; None if it is not timed."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    ts, vs = [], []
    for line in path.read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        v, t = rec.get(metric), rec.get("sim_time_s")
        if isinstance(v, int | float) and isinstance(t, int | float) and math.isfinite(v):
            ts.append(float(t))
            vs.append(float(v))
    if not ts:
        return None
    return np.asarray(ts), np.asarray(vs)


def value_at(tl: Timeline, t: np.ndarray | float) -> np.ndarray:
    """The metric of the last evaluation at or before each t (the first one before it)."""
    times, values = tl
    i = np.searchsorted(times, np.asarray(t, dtype=np.float64), side="right") - 1
    return values[np.clip(i, 0, len(values) - 1)]


def time_to_target(tl: Timeline, target: float, higher: bool = True) -> float | None:
    """The first simulated time at which an evaluation reaches ``target`` (None: never)."""
    times, values = tl
    hit = values >= target if higher else values <= target
    return float(times[np.argmax(hit)]) if hit.any() else None


def jitter(tl: Timeline, horizon: float, step: float) -> float:
    """Mean |change| of the metric between consecutive grid points in [H/2, H]."""
    grid = np.arange(horizon / 2, horizon + step / 2, step)
    return float(np.mean(np.abs(np.diff(value_at(tl, grid))))) if len(grid) > 1 else 0.0


def timelines(results: list[dict[str, Any]], metric_of: Any, sweep_dir: Path
              ) -> dict[str, list[Timeline]]:
    """Per configuration label, the timelines of its seeds (untimed runs left out)."""
    out: dict[str, list[Timeline]] = {}
    for r in results:
        tl = timeline(sweep_dir / r["run_dir"], metric_of(r))
        if tl is not None:
            out.setdefault(r["label"], []).append(tl)
    return out


def _pm(values: list[float], digits: int) -> str:
    if not values:
        return "n/a"
    a = np.asarray(values)
    std = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():.{digits}f} ± {std:.{digits}f}"


def time_table(data: dict[str, list[Timeline]], metric: str, rep: dict[str, Any]) -> str:
    """The Markdown table of the ``[report]`` time keys (module docstring)."""
    target, horizon = rep.get("time-target"), rep.get("time-horizon-s")
    higher = is_accuracy(metric)
    head = ["configuration", "seeds"]
    if target is not None:
        head += [f"time to {metric} {'>=' if higher else '<='} {target} (s)", "reached"]
    if horizon is not None:
        step = float(rep.get("time-grid-s", horizon / 40))
        head += [f"{metric} at {horizon:g} s", f"jitter in [{horizon / 2:g}, {horizon:g}] s"]
    head.append("simulated s run")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, tls in data.items():
        cells = [label, str(len(tls))]
        if target is not None:
            hits = [t for tl in tls if (t := time_to_target(tl, float(target), higher))
                    is not None]
            cells += [_pm(hits, 0), f"{len(hits)}/{len(tls)}"]
        if horizon is not None:
            short = [tl for tl in tls if tl[0][-1] < horizon]
            at = [float(value_at(tl, horizon)) for tl in tls]
            cells += [_pm(at, 4) + (" (ran shorter)" if short else ""),
                      _pm([jitter(tl, float(horizon), step) for tl in tls], 4)]
        cells.append(_pm([float(tl[0][-1]) for tl in tls], 0))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def time_plot(data: dict[str, list[Timeline]], metric: str, out_dir: Path, title: str,
              stem: str, horizon: float | None = None, points: int = 200) -> Path:
    """``<stem>_vs_time.png``: mean ± std over seeds of the step functions, on a common
    grid of simulated time (up to the horizon, or the shortest run of each configuration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = facet(list(data))
    fig, axes = panel_grid(len(panels), width=9.0 if len(panels) == 1 else 6.0)
    ylabel = metric_label(metric)
    for ax, (ptitle, labels) in zip(axes, panels, strict=False):
        for label in labels:
            tls = data[label]
            end = min(float(tl[0][-1]) for tl in tls)
            if horizon is not None:
                end = min(end, float(horizon))
            grid = np.linspace(0.0, end, points)
            vals = np.array([value_at(tl, grid) for tl in tls])
            mean = vals.mean(axis=0)
            std = vals.std(axis=0, ddof=1) if len(tls) > 1 else np.zeros(points)
            line, = ax.plot(grid, mean, label=label, drawstyle="steps-post")
            lo, hi = clip_band(metric, mean, std)
            ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2, step="post")
        ax.set(xlabel="simulated time (s)", ylabel=ylabel, title=ptitle)
        ax.grid(alpha=0.3)
        if labels:
            legend_below(ax)
    fig.suptitle(f"{title}: {ylabel} vs simulated time, mean ± std over seeds")
    fig.tight_layout()
    path = out_dir / f"{stem}_vs_time.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["Timeline", "jitter", "time_plot", "time_table", "time_to_target", "timeline",
           "timelines", "value_at"]
