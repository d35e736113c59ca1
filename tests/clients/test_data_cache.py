"""One process builds the federation, the others load it (FLOWERBED_DATA_CACHE)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
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


# --- kept between runs (FLOWERBED_CACHE_DIR) -----------------------------------------------


@pytest.fixture
def kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "kept"
    monkeypatch.setenv(data_cache.KEEP_ENV, str(folder))
    monkeypatch.delenv(data_cache.ENV, raising=False)
    data._load_cached.cache_clear()
    yield folder
    data._load_cached.cache_clear()


def test_a_built_in_dataset_is_kept_and_loaded_equal(kept: Path) -> None:
    cfg = parse_run_config(tiny(num_clients=7, seed=5))
    old = os.umask(0o022)
    try:
        built = data.load_federation(cfg)
    finally:
        os.umask(old)
    files = list((kept / "data").glob("*.pkl"))
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o777 == 0o644  # the user's umask, not mkstemp's 0600
    data._load_cached.cache_clear()
    loaded = data.load_federation(cfg)
    assert loaded is not built
    for a, b in zip(built.x, loaded.x, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(built.test_x, loaded.test_x)
    # another data key, or other data code / library versions: built anew
    assert data_cache.load_kept(data._data_key(parse_run_config(tiny(num_clients=7)))) is None
    data_cache.code_fingerprint.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(data_cache, "BUILDERS", (*data_cache.BUILDERS, "torch"))
            assert data_cache.load_kept(data._data_key(cfg)) is None
    finally:
        data_cache.code_fingerprint.cache_clear()
    assert data_cache.load_kept(data._data_key(cfg)) is not None


def test_a_kept_dataset_loads_without_the_builders_imports(kept: Path) -> None:
    """The point of keeping it: no scikit-learn, datasets or Flower Datasets import."""
    cfg = tiny(num_clients=9, seed=2)
    data.load_federation(parse_run_config(cfg))
    code = ("import sys\nfrom flowerbed.clients.data import load_federation\n"
            "from flowerbed.run.config import parse_run_config\n"
            f"d = load_federation(parse_run_config({cfg!r}))\n"
            "print(d.num_clients, sorted(m for m in ('sklearn', 'datasets', 'flwr_datasets')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, data_cache.KEEP_ENV: str(kept)}, check=True)
    assert out.stdout.split("\n")[0] == "9 []"


def test_a_damaged_kept_file_is_built_again(kept: Path) -> None:
    cfg = parse_run_config(tiny(num_clients=6))
    built = data.load_federation(cfg)
    (path,) = (kept / "data").glob("*.pkl")
    path.write_bytes(path.read_bytes()[:100])  # cut short
    data._load_cached.cache_clear()
    again = data.load_federation(cfg)
    np.testing.assert_array_equal(built.y_flat, again.y_flat)
    assert data_cache.load_kept(data._data_key(cfg)) is not None  # written anew


def test_off_keeps_nothing_and_hub_data_is_never_kept(kept: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data_cache.KEEP_ENV, "off")
    assert data_cache.kept_folder() is None
    data.load_federation(parse_run_config(tiny(num_clients=6)))
    assert not kept.exists()
    monkeypatch.setenv(data_cache.KEEP_ENV, str(kept))
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "train.csv").write_text("a,b,label\n" + "".join(
        f"{i % 5},{i % 3},{i % 2}\n" for i in range(40)))
    data.load_federation(parse_run_config(tiny(num_clients=4, dataset=f"hf:{folder}",
                                               partitioner="iid")))
    assert not list(kept.rglob("*.pkl"))  # a folder's data may change: never kept


def test_only_the_most_recent_entries_are_kept(kept: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_cache, "KEEP_FILES", 2)
    for seed in (1, 2, 3):
        data.load_federation(parse_run_config(tiny(num_clients=5, seed=seed)))
    assert len(list((kept / "data").glob("*.pkl"))) == 2
    first = data._data_key(parse_run_config(tiny(num_clients=5, seed=1)))
    assert data_cache.load_kept(first) is None  # the oldest went
