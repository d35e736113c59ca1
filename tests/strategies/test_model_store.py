"""Stacked node models beyond the RAM budget: memory-mapped, chunked, same results."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.model_store import GIB, ModelStore
from tests.conftest import tiny


def test_within_budget_is_plain_ram() -> None:
    store = ModelStore(budget_gib=1.0)
    arr = store.empty(10, 100)
    assert type(arr) is np.ndarray and arr.shape == (10, 100) and arr.dtype == np.float32
    assert store.row_chunks(10, 100) == [slice(0, 10)]


def test_over_budget_is_a_memory_map_without_a_file(tmp_path: Path) -> None:
    store = ModelStore(budget_gib=1000 / GIB, directory=str(tmp_path))  # 1,000 bytes
    arr = store.tile(np.arange(50, dtype=np.float32), 40)  # 8,000 bytes
    assert isinstance(arr, np.memmap)
    assert os.listdir(tmp_path) == []  # unlinked once mapped
    np.testing.assert_array_equal(arr[39], np.arange(50))
    # chunks: 1,000 // (8 copies * 4 bytes * 50 cols) = 0 -> at least one row per chunk
    assert store.chunk_rows(50) == 1
    chunks = store.row_chunks(40, 50)
    assert len(chunks) == 40 and chunks[-1] == slice(39, 40)
    copy = store.copy(arr)
    assert isinstance(copy, np.memmap) and np.array_equal(copy, arr)
    cols = store.col_chunks(40, 50)  # 1,000 // (8 * 4 * 40 rows) = 0 -> one column each
    assert len(cols) == 50


def test_default_budget_is_a_quarter_of_ram() -> None:
    store = ModelStore()
    assert store.budget == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


@pytest.mark.parametrize("variance_correction", [False, True])
def test_dsgd_out_of_core_equals_in_memory(variance_correction: bool) -> None:
    """Memory-mapped models, trained 3 nodes and mixed 25 columns at a time, give the
    same node models and metrics as the in-RAM run."""
    base = tiny(strategy="dsgd", num_clients=30, topology="ring", num_server_rounds=3,
                local_steps=2, batch_size=8, final_merge=False,
                variance_correction=variance_correction, model="logreg")
    ram = run_experiment(parse_run_config(base))
    p = ram.strategy.x.shape[1]
    # 3 rows of working copies (8 copies of 4-byte floats): chunks of 3 nodes; the 30
    # models (30 * 4 * p bytes) are over that budget (3 * 8 * 4 * p), so memory-mapped
    budget = 3 * 8 * 4 * p / GIB
    mapped = run_experiment(parse_run_config({**base, "models-memory-gib": budget}))
    assert isinstance(mapped.strategy.x, np.memmap)
    assert mapped.strategy.store.chunk_rows(p) == 3
    np.testing.assert_allclose(mapped.strategy.x, ram.strategy.x, atol=1e-5)
    for a, b in zip(ram.records, mapped.records, strict=True):
        for k in ("test_accuracy", "consensus_distance"):
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6)
    assert mapped.records[-1]["cum_messages"] == ram.records[-1]["cum_messages"]
