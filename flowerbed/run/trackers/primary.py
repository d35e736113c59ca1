"""A run's primary metric in its records: final and best value, summary entry, names.

The strategy declares which metric it is judged by (:class:`~flowerbed.strategies.contract.
Primary`); everything that shows "the" number of a run (console, summary.json, curves.png,
reports) reads it through these helpers, so they all show the same one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from flowerbed.strategies.contract import Primary

# what a metric key is called on a plot axis or in a table when no strategy names it
LABELS = {
    "test_accuracy": "test accuracy",
    "test_loss": "test loss",
    "ensemble_accuracy": "routed ensemble accuracy",
    "averaged_accuracy": "experts' average accuracy",
    "router_accuracy": "router accuracy",
    "node_accuracy_mean": "mean per-node accuracy",
    "node_loss_mean": "mean node loss, f(x_j) - f*",
    "consensus_distance": "consensus distance",
    "train_loss": "train loss",
}


def metric_label(metric: str) -> str:
    return LABELS.get(metric, metric.replace("_", " "))


def is_accuracy(metric: str) -> bool:
    """Accuracies live in [0, 1] (plots clip bands and error bars to it)."""
    return "accuracy" in metric or metric.endswith("_acc")


def maximize(metric: str) -> bool:
    return "loss" not in metric and "distance" not in metric


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def final_value(records: Iterable[Mapping[str, Any]], metric: str) -> float | None:
    """The last finite value of ``metric`` (the run's last evaluated round)."""
    out = None
    for r in records:
        v = _number(r.get(metric))
        if v is not None:
            out = v
    return out


def best_value(records: Iterable[Mapping[str, Any]], metric: str
               ) -> tuple[float | None, int | None]:
    """The best value of ``metric`` (max for accuracies, min for losses) and its round."""
    best: tuple[float | None, int | None] = (None, None)
    sign = 1.0 if maximize(metric) else -1.0
    for r in records:
        v = _number(r.get(metric))
        if v is not None and (best[0] is None or sign * v > sign * best[0]):
            best = (v, r.get("round"))
    return best


def primary_summary(primary: Primary, records: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's ``primary``: the metric, its final value, its name on screen, and the
    final values of the metrics shown next to it (those the run logged)."""
    return {"metric": primary.metric, "value": final_value(records, primary.metric),
            "label": primary.label,
            "companions": {k: v for k in primary.companions
                           if (v := final_value(records, k)) is not None}}


def primary_from(summary: Mapping[str, Any]) -> Primary:
    """The primary metric a summary (or results.jsonl line) names; test accuracy for one
    written before runs declared it."""
    p = summary.get("primary") or {}
    metric = p.get("metric") or "test_accuracy"
    return Primary(metric, p.get("label") or metric_label(metric),
                   tuple(p.get("companions") or ()))


__all__ = ["LABELS", "best_value", "final_value", "is_accuracy", "maximize", "metric_label",
           "primary_from", "primary_summary"]
