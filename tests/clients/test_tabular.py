"""Tabular data in its real schema: every numeric column is a feature (or the chosen ones),
standardised on request with the training split's statistics."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from flowerbed.clients.data import load_federation, standardize
from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config
from tests.conftest import tiny

SCALES = np.array([1.0, 10.0, 100.0, 1000.0, 1.0])


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 rows: five numeric columns of very different scales, a text column, a label."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * SCALES
    y = (x[:, 0] + x[:, 3] / 1000 > 0).astype(int)
    path = tmp_path_factory.mktemp("tab") / "data.csv"
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["a", "b", "c", "d", "e", "name", "label"])
        out.writerows([*x[i], f"row{i}", y[i]] for i in range(200))
    return path


def data(path: Path, **over):
    return load_federation(parse_run_config(tiny(dataset=f"hf:{path}", num_clients=4,
                                                 partitioner="iid", **over)))


def test_every_numeric_column_is_a_feature(table: Path) -> None:
    d = data(table)
    assert d.input_shape == (5,) and d.feature_columns == ("a", "b", "c", "d", "e")
    assert d.num_classes == 2 and sum(len(v) for v in d.y) + len(d.test_y) == 200
    rows = np.concatenate([d.x_flat, d.test_x])
    assert np.abs(rows[:, 3]).max() > 100 * np.abs(rows[:, 0]).max()  # raw: as in the file
    assert "features a, b, c, d, e, input shape (5,), 2 classes" in d.describe()


def test_chosen_columns_and_bad_ones(table: Path) -> None:
    d = data(table, feature_columns="d, a")
    assert d.input_shape == (2,) and d.feature_columns == ("d", "a")
    with pytest.raises(ConfigError, match="has no column 'z'"):
        data(table, feature_columns="a, z")
    with pytest.raises(ConfigError, match="not a number"):
        data(table, feature_columns="a, name")


def test_standardize_uses_the_training_split_only(table: Path) -> None:
    raw, std = data(table), data(table, normalize="standardize")
    mean, sd = raw.x_flat.mean(axis=0), raw.x_flat.std(axis=0)
    np.testing.assert_allclose(std.x_flat, (raw.x_flat - mean) / sd, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std.test_x, (raw.test_x - mean) / sd, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std.x_flat.mean(axis=0), 0, atol=1e-5)
    assert abs(std.test_x.mean(axis=0)).max() > 1e-3  # the test set's own mean is not used


def test_standardize_images_per_channel() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(50, 3, 4, 4)).astype(np.float32) * np.array(
        [1.0, 5.0, 20.0], np.float32)[None, :, None, None] + 7
    a, b = standardize(train, train[:5])
    np.testing.assert_allclose(a.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(a.std(axis=(0, 2, 3)), 1, atol=1e-5)
    np.testing.assert_allclose(b, a[:5], atol=1e-6)


def test_standardised_features_train_better(table: Path) -> None:
    from flowerbed.run.runner import run_experiment

    acc = {}
    for norm in ("none", "standardize"):
        cfg = parse_run_config(tiny(dataset=f"hf:{table}", num_clients=4, partitioner="iid",
                                    model="logreg", num_server_rounds=5, normalize=norm))
        acc[norm] = run_experiment(cfg).records[-1]["test_accuracy"]
    assert acc["standardize"] > acc["none"] + 0.1, acc
