"""``python -m benchmarks.gpu``: refuses clearly without CUDA; its plan and its table,
checked on the CPU path with the measurements stubbed (the real run is minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

gpu = pytest.importorskip("benchmarks.gpu")


def test_refuses_without_cuda(monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and "--device cpu --quick" in err


def test_plan_runs_w0_w1_w4_reference_first() -> None:
    assert gpu.plan(("cuda",), quick=False) == [
        ("cuda", s, w, 0) for w in ("W0", "W1", "W4") for s in "fc"]
    assert gpu.plan(("cuda", "cpu"), quick=True) == [
        ("cuda", "f", "W0", 3), ("cuda", "c", "W0", 3),
        ("cpu", "f", "W0", 3), ("cpu", "c", "W0", 3)]


def test_cpu_check_writes_the_table_with_its_targets(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    harness = pytest.importorskip("benchmarks.run")  # needs psutil
    seen: list[tuple[str, str, str | None]] = []

    def fake_measure(system: str, workload: str, rounds: int, timeout: float
                     ) -> dict[str, Any]:
        import os

        seen.append((system, workload, os.environ.get("BENCH_DEVICE")))
        per_round = 0.025 if system == "f" else 0.03125  # in-process at 0.8x the reference
        return harness.derive({"system": system, "workload": workload,
                               "rounds_override": rounds, "total_wall_s": 1.0,
                               "peak_rss_gib": 0.5, "round1_end_s": 1.0,
                               "final_accuracy": 0.5, "round_times": [0.1] + [per_round] * 2})

    monkeypatch.setattr(harness, "measure", fake_measure)
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    assert gpu.main(["--device", "cpu", "--quick"]) == 0
    assert seen == [("f", "W0", "cpu"), ("c", "W0", "cpu")]
    out = json.loads((tmp_path / "gpu-check.json").read_text())
    assert [r["note"] for r in out["results"]] == ["device cpu; --quick: 3 rounds"] * 2
    assert ["W0: in-process >= 0.8x pure vmap", "0.80x (3200 / 4000 client-rounds/s)",
            "met"] in out["targets_median"]
    assert "| W0 | (c) flowerbed in-process engine | 3200 |" in \
        (tmp_path / "gpu-check.md").read_text()
