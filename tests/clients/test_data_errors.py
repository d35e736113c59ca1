"""A dataset that cannot be loaded, or a column that is not there, is a ConfigError naming the
key and value (and the columns that exist), never a traceback from datasets or pyarrow."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowerbed.clients.data import load_federation
from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config
from tests.conftest import tiny

ROWS = "".join(f"{i % 5}.5,{i}.0,{i % 2}\n" for i in range(12))


def _csv(folder: Path, header: str = "a,b,y\n", rows: str = ROWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.csv"
    path.write_text(header + rows)
    return path


def _load(**overrides: object) -> object:
    cfg = {"num_clients": 2, "partitioner": "iid", "test_fraction": 0.25, **overrides}
    return load_federation(parse_run_config(tiny(**cfg)))


def _error(**overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(**overrides)
    return info.value


def test_a_missing_absolute_path_fails_in_the_config_check(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        parse_run_config(tiny(dataset=f"hf:{missing}"))
    assert info.value.key == "dataset" and "no such local folder or file" in str(info.value)
    with pytest.raises(ConfigError, match="dataset = 'hf:/nonexistent'"):
        parse_run_config(tiny(dataset="hf:/nonexistent"))


def test_a_name_neither_local_nor_reachable_on_the_hub(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # 'missing_folder' is no local folder here
    err = _error(dataset="hf:missing_folder")
    assert err.key == "dataset" and err.value == "hf:missing_folder"
    assert "cannot load it" in str(err)


def test_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    err = _error(dataset=f"hf:{tmp_path / 'empty'}")
    assert err.key == "dataset" and "cannot load it" in str(err)


def test_a_csv_with_only_a_header_has_no_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path, rows="")
    err = _error(dataset=f"hf:{path}", label_column="y")
    assert err.key == "dataset"


def test_a_csv_without_the_label_column_lists_its_columns(tmp_path: Path) -> None:
    _csv(tmp_path / "data")
    err = _error(dataset=f"hf:{tmp_path / 'data'}")  # label-column = 'label'
    assert err.key == "label-column" and err.value == "label"
    assert "its columns are 'a', 'b', 'y'" in str(err)


@pytest.mark.parametrize("key", ["feature-column", "label-column"])
def test_a_column_key_naming_no_column(tmp_path: Path, key: str) -> None:
    path = _csv(tmp_path)
    err = _error(dataset=f"hf:{path}", **{"label-column": "y", key: "zz"})
    assert err.key == key and err.value == "zz"
    assert "'a', 'b', 'y'" in str(err)


def test_partition_by_must_be_a_column_for_label_partitioners(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    err = _error(dataset=f"hf:{path}", label_column="y", partitioner="dirichlet")
    assert err.key == "partition-by" and err.value == "label"


def test_a_single_csv_file_loads(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    data = _load(dataset=f"hf:{path}", label_column="y", feature_column="b")
    assert data.num_classes == 2
    assert int(data.sizes.sum()) + len(data.test_y) == 12
