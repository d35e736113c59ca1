"""One process builds the federation, the others load it (FLOWERBED_DATA_CACHE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowerbed.clients import data, data_cache
from flowerbed.run.config import parse_run_config
from tests.conftest import tiny


def test_stored_federation_loads_equal_with_views(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data_cache.ENV, str(tmp_path / "cache"))
    cfg = parse_run_config(tiny(num_clients=7, seed=3))
    key = data._data_key(cfg)
    built = data._build(cfg)
    data_cache.store(key, built)
    assert len(list((tmp_path / "cache").glob("*.pkl"))) == 1
    loaded = data_cache.load(key)
    assert loaded is not None
    assert len(loaded.x) == 7
    for a, b in zip(built.x, loaded.x, strict=True):
        np.testing.assert_array_equal(a, b)
        assert np.shares_memory(b, loaded.x_flat)  # views, as built
    np.testing.assert_array_equal(built.test_y, loaded.test_y)
    assert loaded.input_shape == built.input_shape
    other = parse_run_config(tiny(num_clients=7, seed=4))
    assert data_cache.load(data._data_key(other)) is None  # another config: built anew


def test_no_cache_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data_cache.ENV, raising=False)
    cfg = parse_run_config(tiny(num_clients=7))
    data_cache.store(data._data_key(cfg), data._build(cfg))  # a no-op
    assert data_cache.load(data._data_key(cfg)) is None
