"""Test helper: keep the matplotlib figures that code under test saves, to inspect them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def capture_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every figure saved from now on (until the test ends), by file name."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    saved: dict[str, Any] = {}
    original = Figure.savefig

    def spy(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        saved[Path(fname).name] = self
        original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved
