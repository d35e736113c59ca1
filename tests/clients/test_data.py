"""Datasets and partitions: sizes, label skew, determinism, the HF path on a local dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowerbed.clients.data import load_federation, synthetic_clients
from flowerbed.run.config import parse_run_config
from tests.conftest import tiny


def test_digits_partitions_cover_the_train_split_exactly() -> None:
    data = load_federation(parse_run_config(tiny(num_clients=20, partitioner="iid")))
    assert data.num_clients == 20
    assert data.sizes.sum() + len(data.test_y) == 1797
    assert len(data.test_y) == 360  # 20% held out on the server
    assert data.input_shape == (1, 8, 8)
    assert data.x[0].shape[1:] == (1, 8, 8)
    assert max(data.sizes) - min(data.sizes) <= 1  # IID = equal sizes


def test_dirichlet_is_skewed_and_deterministic() -> None:
    cfg = parse_run_config(tiny(num_clients=10, partitioner="dirichlet", partitioner_alpha=0.1,
                                seed=3))
    a, b = load_federation(cfg), load_federation(cfg.replace(test_fraction=0.2000001))
    assert all(np.array_equal(x, y) for x, y in zip(a.y, b.y, strict=True))
    counts = a.label_counts()
    # alpha = 0.1: most clients are dominated by few labels
    top_share = counts.max(axis=1) / counts.sum(axis=1)
    assert np.median(top_share) > 0.4
    c = load_federation(cfg.replace(seed=4))
    assert any(not np.array_equal(x, y) for x, y in zip(a.y, c.y, strict=True))


def test_pathological_gives_each_client_at_most_k_labels() -> None:
    data = load_federation(parse_run_config(tiny(num_clients=10, partitioner="pathological",
                                                 classes_per_partition=2)))
    for y in data.y:
        assert 1 <= len(np.unique(y)) <= 2


def test_shard_and_size_partitioners() -> None:
    data = load_federation(parse_run_config(tiny(num_clients=10, partitioner="shard",
                                                 shards_per_partition=2)))
    assert data.sizes.sum() <= 1437 and data.sizes.min() > 0
    lin = load_federation(parse_run_config(tiny(num_clients=5, partitioner="linear")))
    assert list(lin.sizes) == sorted(lin.sizes)  # sizes grow with the partition id
    assert lin.sizes[-1] > 3 * lin.sizes[0]


def test_synthetic_natural_id_recovers_the_generating_clients() -> None:
    cfg = parse_run_config(tiny(dataset="synthetic", partitioner="natural-id", num_clients=7,
                                synthetic_samples=40, synthetic_iid_size=True))
    data = load_federation(cfg)
    assert data.num_clients == 7
    assert data.input_shape == (60,)
    assert data.num_classes == 10
    assert all(s == 32 for s in data.sizes)  # 40 each, 20% held out
    _, ys = synthetic_clients(7, 1.0, 1.0, 60, 10, 40, True, cfg.seed)
    assert sum(len(y) for y in ys) == 280


def test_synthetic_heterogeneity_grows_with_alpha_beta() -> None:
    def label_entropy_spread(alpha: float, beta: float) -> float:
        _, ys = synthetic_clients(30, alpha, beta, 20, 5, 200, True, 0)
        dists = np.stack([np.bincount(y, minlength=5) / len(y) for y in ys])
        return float(np.abs(dists - dists.mean(0)).sum(1).mean())

    assert label_entropy_spread(0.0, 0.0) < label_entropy_spread(2.0, 2.0)


def test_hf_path_on_a_locally_saved_dataset(tmp_path: Path) -> None:
    """The real FederatedDataset path, on parquet files instead of the Hub."""
    import datasets

    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("test", 50)):
        ds = datasets.Dataset.from_dict({
            "pixels": rng.random((n, 12)).astype(np.float32),
            "label": rng.integers(0, 3, n)})
        ds.to_parquet(str(tmp_path / f"{split}.parquet"))
    cfg = parse_run_config(tiny(dataset=f"hf:{tmp_path}", feature_column="pixels",
                                num_clients=4, partitioner="iid"))
    data = load_federation(cfg)
    assert data.num_clients == 4
    assert data.sizes.sum() == 200
    assert len(data.test_y) == 50
    assert data.input_shape == (12,)
    assert data.num_classes == 3


def test_too_many_clients_for_dirichlet_fails_clearly() -> None:
    from flowerbed.run.config import ConfigError

    with pytest.raises(ConfigError, match="no data"):
        load_federation(parse_run_config(tiny(num_clients=1000, partitioner="dirichlet",
                                              partitioner_alpha=0.01)))
