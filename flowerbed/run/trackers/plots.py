"""curves.png: the primary metric per round (its companions beside it), loss per round, the
primary metric vs cumulative bytes. Follows :mod:`flowerbed.run.trackers.plot_rules`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowerbed.run.trackers.base import RunInfo, Tracker
from flowerbed.run.trackers.plot_rules import integer_rounds, legend_below, split_panels
from flowerbed.run.trackers.primary import is_accuracy, metric_label
from flowerbed.strategies.contract import Primary


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["round"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [p[0] for p in pts], [p[1] for p in pts]


def metric_keys(records: list[dict[str, Any]], primary: Primary) -> list[str]:
    """The per-round metrics of the first panel: the primary one, its companions, and test
    accuracy when it is not the primary (what the platform evaluated); those logged, and
    each series once (Paris' averaged_accuracy is its test_accuracy)."""
    out: list[str] = []
    seen: list[tuple[list[int], list[float]]] = []
    for k in dict.fromkeys([primary.metric, *primary.companions, "test_accuracy"]):
        series = _series(records, k)
        if series[0] and series not in seen:
            out.append(k)
            seen.append(series)
    return out


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "",
                primary: Primary | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = primary or Primary()
    keys = metric_keys(records, primary)
    panels = split_panels(keys) or [[]]
    timed = any("sim_time_s" in r for r in records)  # virtual time: one more panel
    extra = 3 if timed else 2
    fig, axes = plt.subplots(1, len(panels) + extra, figsize=(5 * (len(panels) + extra), 4.4),
                             squeeze=False)
    axes = list(axes[0])
    label = {k: primary.label if k == primary.metric else metric_label(k) for k in keys}
    for ax, part in zip(axes, panels, strict=False):
        for k in part:
            ax.plot(*_series(records, k), marker=".", label=label[k],
                    linewidth=2.0 if k == primary.metric else 1.0)
        shown = [label[k] for k in part]
        ylabel = "accuracy" if part and all(is_accuracy(k) for k in part) else ", ".join(shown)
        ax.set(xlabel="round", ylabel=ylabel, title=f"{primary.label} per round")
        if part and all(is_accuracy(k) for k in part):
            ax.set_ylim(0.0, 1.0)
        if part:
            legend_below(ax)
    loss_ax, bytes_ax = axes[len(panels)], axes[len(panels) + 1]
    loss_ax.plot(*_series(records, "test_loss"), marker=".", label="test")
    loss_ax.plot(*_series(records, "train_loss"), marker=".", label="train")
    loss_ax.set(xlabel="round", ylabel="cross-entropy", title="loss")
    legend_below(loss_ax)
    ev = [r for r in records if isinstance(r.get(primary.metric), int | float)]
    mib = [(r.get("cum_bytes_down", 0) + r.get("cum_bytes_up", 0) + r.get("cum_bytes_p2p", 0))
           / 2**20 for r in ev]
    bytes_ax.plot(mib, [r[primary.metric] for r in ev], marker=".")
    bytes_ax.set(xlabel="cumulative MiB sent (all links)", ylabel=primary.label,
                 title=f"{primary.label} vs communication")
    if timed:
        time_ax = axes[len(panels) + 2]
        time_ax.plot([r.get("sim_time_s", 0.0) for r in ev], [r[primary.metric] for r in ev],
                     marker=".")
        time_ax.set(xlabel="simulated time (s)", ylabel=primary.label,
                    title=f"{primary.label} vs simulated time")
    for ax in axes:
        ax.grid(alpha=0.3)
    for ax in [*axes[:len(panels)], loss_ax]:
        integer_rounds(ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # the legends below the panels
    plt.close(fig)
    return path


class PlotTracker(Tracker):
    def on_train_begin(self, info: RunInfo) -> None:
        self.info = info
        self.records: list[dict[str, Any]] = []

    def after_round(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def on_train_end(self, summary: dict[str, Any]) -> None:
        records = summary.get("records") or self.records
        path = plot_curves(records, Path(self.info.run_dir) / "curves.png", self.info.name,
                           self.info.primary)
        summary.setdefault("artifacts", {})["curves"] = str(path)
