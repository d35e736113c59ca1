"""curves.png: accuracy and loss per round, accuracy vs cumulative bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowerbed.run.trackers.base import RunInfo, Tracker


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = [r for r in records if r.get("test_accuracy") is not None]
    rounds = [r["round"] for r in ev]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(rounds, [r["test_accuracy"] for r in ev], marker=".", label="test (x-bar)"
                 if any("node_accuracy_mean" in r for r in ev) else "test")
    node = [r for r in ev if r.get("node_accuracy_mean") is not None]
    if node:
        axes[0].plot([r["round"] for r in node], [r["node_accuracy_mean"] for r in node],
                     marker=".", label="per-node mean")
    axes[0].set(xlabel="round", ylabel="accuracy", title="test accuracy")
    axes[0].legend()
    axes[1].plot(rounds, [r["test_loss"] for r in ev], marker=".", label="test")
    tr = [r for r in records if r.get("train_loss") is not None]
    axes[1].plot([r["round"] for r in tr], [r["train_loss"] for r in tr], marker=".",
                 label="train")
    axes[1].set(xlabel="round", ylabel="cross-entropy", title="loss")
    axes[1].legend()
    mb = [(r.get("cum_bytes_down", 0) + r.get("cum_bytes_up", 0) + r.get("cum_bytes_p2p", 0))
          / 2**20 for r in ev]
    axes[2].plot(mb, [r["test_accuracy"] for r in ev], marker=".")
    axes[2].set(xlabel="cumulative MiB sent (all links)", ylabel="accuracy",
                title="accuracy vs communication")
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
        path = plot_curves(records, Path(self.info.run_dir) / "curves.png", self.info.name)
        summary.setdefault("artifacts", {})["curves"] = str(path)
