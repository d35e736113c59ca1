"""The plot rules: <= 8 curves a panel, clipped bands, integer round ticks, curves.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowerbed.run.trackers.plot_rules import (
    MAX_CURVES,
    clip_band,
    clipped_yerr,
    facet,
    split_panels,
)
from flowerbed.strategies.contract import Primary
from tests.figures import capture_figures


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return capture_figures(monkeypatch)


def test_split_panels_keeps_order_and_at_most_eight() -> None:
    items = list(range(23))
    panels = split_panels(items)
    assert [len(p) for p in panels] == [8, 8, 7]
    assert [x for p in panels for x in p] == items
    assert [len(p) for p in split_panels(list(range(9)))] == [5, 4]
    assert split_panels(list(range(8))) == [list(range(8))]
    assert split_panels([]) == []
    with pytest.raises(ValueError):
        split_panels([1], 0)


def test_facet_groups_by_value_then_splits_big_groups() -> None:
    keys = [f"c{i}" for i in range(12)]
    of = {k: ("n=16" if i < 10 else "n=64") for i, k in enumerate(keys)}
    panels = facet(keys, of)
    assert [(t, len(p)) for t, p in panels] == [("n=16 (1/2)", 5), ("n=16 (2/2)", 5),
                                                 ("n=64", 2)]
    assert all(len(p) <= MAX_CURVES for _, p in panels)


def test_bands_stay_inside_the_metric_range() -> None:
    lo, hi = clip_band("test_accuracy", np.array([0.05, 0.5, 0.97]), np.array([0.1, 0.1, 0.1]))
    np.testing.assert_allclose(lo, [0.0, 0.4, 0.87])
    np.testing.assert_allclose(hi, [0.15, 0.6, 1.0])
    lo, hi = clip_band("node_loss_mean", np.array([0.02, 2.0]), np.array([0.05, 0.5]))
    np.testing.assert_allclose(lo, [0.0, 1.5])
    np.testing.assert_allclose(hi, [0.07, 2.5])
    lo, hi = clip_band("chosen_k", np.array([1.0]), np.array([2.0]))  # no known range
    np.testing.assert_allclose([lo[0], hi[0]], [-1.0, 3.0])
    # error bars (below, above the mean) end at 1.0
    np.testing.assert_allclose(clipped_yerr("ensemble_accuracy", np.array([0.96]),
                                            np.array([0.07])), [[0.07], [0.04]])


def _records() -> list[dict[str, Any]]:
    out = []
    for t in range(4):
        out.append({"round": t, "test_accuracy": 0.2 + 0.1 * t, "test_loss": 2.0 - 0.3 * t,
                    "train_loss": None if t == 0 else 1.5 - 0.2 * t,
                    "ensemble_accuracy": 0.3 + 0.2 * t, "averaged_accuracy": 0.2 + 0.1 * t,
                    "cum_bytes_down": 1000 * t, "cum_bytes_up": 1000 * t})
    return out


def test_curves_png_plots_the_primary_metric(tmp_path: Path,
                                             saved_figures: dict[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    from flowerbed.run.trackers.plots import plot_curves

    primary = Primary("ensemble_accuracy", "routed ensemble accuracy", ("averaged_accuracy",))
    path = plot_curves(_records(), tmp_path / "curves.png", "t", primary)
    assert path.stat().st_size > 10_000
    fig = saved_figures["curves.png"]
    metric_ax, loss_ax, bytes_ax = fig.axes
    labels = [line.get_label() for line in metric_ax.get_lines()]
    # test accuracy is the experts' average here: drawn once
    assert labels == ["routed ensemble accuracy", "experts' average accuracy"]
    np.testing.assert_allclose(metric_ax.get_lines()[0].get_ydata(), [0.3, 0.5, 0.7, 0.9])
    assert metric_ax.get_ylim() == (0.0, 1.0)
    assert bytes_ax.get_ylabel() == "routed ensemble accuracy"
    np.testing.assert_allclose(bytes_ax.get_lines()[0].get_ydata(), [0.3, 0.5, 0.7, 0.9])
    for ax in (metric_ax, loss_ax):
        locator = ax.xaxis.get_major_locator()
        assert isinstance(locator, MaxNLocator) and locator._integer
        assert all(float(t).is_integer() for t in ax.get_xticks())
