"""Datasets in their Hub schemas (offline fixtures, tests/hub_fixtures.py) through the
``hf:<folder>`` path users take: images kept as uint8, text as LEAF character ids,
natural-id clients on any column, presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowerbed.clients.data import load_federation, to_float_batch
from flowerbed.clients.natural_id import NaturalIdGrouping
from flowerbed.clients.stored import QuantizedArray, flat_tensor
from flowerbed.clients.text import LEAF_LETTERS
from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config
from flowerbed.run.presets import PRESETS
from tests.conftest import tiny
from tests.hub_fixtures import write_all


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these tiny batches gain nothing from intra-op threads, and on a
    busy machine two threads per op made the LSTM's 160 steps 16x slower here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("hub"))


def source(folder: Path, split: str = "train"):  # the fixture as datasets reads it
    import datasets

    return datasets.load_dataset(str(folder))[split]


def femnist(hub: dict[str, Path], **over):
    cfg = tiny(**{"preset": "femnist", "dataset": f"hf:{hub['femnist']}", "num_clients": 12,
                  **over})
    return parse_run_config(cfg)


def test_femnist_one_client_per_writer_and_uint8_pixels(hub: dict[str, Path]) -> None:
    d = load_federation(femnist(hub))
    assert d.input_shape == (1, 28, 28) and d.num_classes == 62
    assert isinstance(d.x_flat, QuantizedArray) and d.x_flat.raw.dtype == np.uint8
    assert d.x_flat.nbytes == len(d.y_flat) * 28 * 28  # one byte a pixel in memory
    src = source(hub["femnist"])
    writers = np.asarray(src["writer_id"])
    pixels = np.stack([np.asarray(im) for im in src["image"]])
    # every client holds the training rows of exactly one writer; rows match the source
    seen = set()
    for i in range(d.num_clients):
        x = np.asarray(d.x[i], np.float32)  # what training sees: float32 in [0, 1]
        assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
        rows = [int(np.flatnonzero((pixels == np.round(v[0] * 255)).all(axis=(1, 2)))[0])
                for v in x]
        owners = set(writers[rows])
        assert len(owners) == 1 and not owners & seen
        seen |= owners
    assert len(seen) == 12
    assert "features image, input shape (1, 28, 28), 62 classes, 12 clients" in d.describe()


def test_cifar10_channels_first_and_standardised_per_channel(hub: dict[str, Path]) -> None:
    base = tiny(dataset=f"hf:{hub['cifar10']}", num_clients=4)
    raw = load_federation(parse_run_config(base))
    std = load_federation(parse_run_config({**base, "preset": "cifar10-dirichlet"}))
    assert std.input_shape == (3, 32, 32)  # the preset standardises (as niid_bench does)
    images = np.stack([np.asarray(im) for im in source(hub["cifar10"], "test")["img"]])
    assert raw.input_shape == (3, 32, 32) and raw.num_classes == 10
    assert images.shape[1:] == (32, 32, 3)  # PIL gives (H, W, C); the model takes (C, H, W)
    chw = images.transpose(0, 3, 1, 2) / 255
    got = np.asarray(raw.test_x)  # Flower Datasets shuffles the split: match row by row
    assert all(np.abs(chw - v).max(axis=(1, 2, 3)).min() < 1e-6 for v in got)
    assert std.x_flat.raw.dtype == np.uint8  # standardising keeps the uint8 storage
    train = np.asarray(std.x_flat, np.float64)
    np.testing.assert_allclose(train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=(0, 2, 3)), 1, atol=1e-5)
    r = np.asarray(raw.x_flat, np.float64)
    mean, sd = r.mean(axis=(0, 2, 3), keepdims=True), r.std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(np.asarray(std.test_x), (np.asarray(raw.test_x) - mean) / sd,
                               atol=1e-4)  # the training split's statistics


def test_shakespeare_next_character_ids(hub: dict[str, Path]) -> None:
    cfg = parse_run_config(tiny(preset="shakespeare", dataset=f"hf:{hub['shakespeare']}",
                                num_clients=6))
    d = load_federation(cfg)
    assert len(LEAF_LETTERS) == 80 and d.num_classes == 80 and d.input_shape == (80,)
    src = source(hub["shakespeare"])
    text = {(x, y) for x, y in zip(src["x"], src["y"], strict=True)}
    ids = np.asarray(d.x_flat, np.float32).astype(int)
    decoded = {("".join(LEAF_LETTERS[i] for i in row), LEAF_LETTERS[y])
               for row, y in zip(ids, d.y_flat, strict=True)}
    assert decoded <= text and len(decoded) > 100
    assert d.num_clients == 6 and len(set(map(len, d.y))) > 1  # roles of unequal sizes


def test_natural_id_matches_flowers_partitioner_and_samples_ids() -> None:
    import datasets
    from flwr_datasets.partitioner import NaturalIdPartitioner

    rng = np.random.default_rng(3)
    ids = rng.choice(["w3", "w1", "w7", "w2", "w9"], size=200)
    ds = datasets.Dataset.from_dict({"writer": ids.tolist(), "v": np.arange(200).tolist()})
    ours, flower = NaturalIdGrouping(5, "writer", 0), NaturalIdPartitioner(partition_by="writer")
    ours.dataset, flower.dataset = ds, ds
    for i in range(5):
        assert ours.load_partition(i)["v"] == flower.load_partition(i)["v"]
    some = NaturalIdGrouping(3, "writer", 0)
    some.dataset = ds
    parts = [some.load_partition(i)["writer"] for i in range(3)]
    assert all(len(set(p)) == 1 for p in parts) and len({p[0] for p in parts}) == 3
    too_many = NaturalIdGrouping(6, "writer", 0)
    too_many.dataset = ds
    with pytest.raises(ConfigError, match="has 5 distinct ids; set num-clients <= 5"):
        too_many.load_partition(0)


def test_natural_id_errors_name_the_key(hub: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="partition-by"):
        load_federation(femnist(hub, partition_by="author"))
    with pytest.raises(ConfigError, match="num-clients"):
        load_federation(femnist(hub, num_clients=13))  # the fixture has 12 writers


def test_quantized_batches_convert_after_the_gather() -> None:
    raw = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(6, 2, 2, 1).repeat(2, axis=3)
    q = QuantizedArray.of(raw[:, :1], 0.5, 1.0)  # (6, 1, 2, 2)
    rows = torch.tensor([[4, 0], [2, 2]])
    batch = flat_tensor(q)[rows]
    assert batch.dtype == torch.float32 and batch.shape == (2, 2, 1, 2, 2)
    np.testing.assert_array_equal(batch.numpy(), raw[:, :1][rows.numpy()] * 0.5 + 1.0)
    np.testing.assert_array_equal(np.asarray(q[2:4]), raw[2:4, :1] * 0.5 + 1.0)
    raw_rows = torch.from_numpy(raw[:, :1][[1, 5]])
    data = type("D", (), {"x_flat": q})()
    assert torch.equal(to_float_batch(raw_rows, data), torch.from_numpy(np.asarray(q[[1, 5]])))
    floats = torch.ones(2, 3)
    assert to_float_batch(floats) is floats and flat_tensor(np.ones((2, 3))).dtype == torch.float32


def test_presets_fill_in_and_explicit_keys_win() -> None:
    cfg = parse_run_config({"preset": "femnist", "num-clients": 50, "lr": 0.1})
    assert (cfg.model, cfg.partitioner, cfg.partition_by, cfg.label_column) == (
        "femnist-cnn", "natural-id", "writer_id", "character")
    assert cfg.batch_size == 10 and cfg.num_clients == 50
    assert cfg.lr == 0.004  # 0.1 is the default: plain flwr run passes it for every key
    assert parse_run_config({"preset": "femnist", "lr": 0.02}).lr == 0.02
    again = parse_run_config(cfg.as_dict())
    assert again.as_dict() == cfg.as_dict()  # the resolved config parses to itself
    lstm = parse_run_config({"preset": "shakespeare"})
    assert (lstm.model, lstm.lr, lstm.num_server_rounds) == ("char-lstm", 0.8, 80)
    assert set(PRESETS) == {"femnist", "cifar10-dirichlet", "shakespeare"}
    with pytest.raises(ConfigError, match="preset"):
        parse_run_config({"preset": "mnist"})


@pytest.mark.parametrize(("preset", "clients", "rounds"), [
    ("femnist", 3, 1), ("cifar10-dirichlet", 4, 2), ("shakespeare", 2, 1)])
def test_each_fixture_trains_with_its_preset(hub: dict[str, Path], preset: str, clients: int,
                                             rounds: int) -> None:
    from flowerbed.run.runner import run_experiment

    name = {"femnist": "femnist", "cifar10-dirichlet": "cifar10",
            "shakespeare": "shakespeare"}[preset]
    cfg = parse_run_config(tiny(preset=preset, dataset=f"hf:{hub[name]}", num_clients=clients,
                                num_server_rounds=rounds, local_steps=1, batch_size=4))
    assert cfg.model == PRESETS[preset]["model"]
    result = run_experiment(cfg)
    last = result.records[-1]
    assert last["round"] == rounds and np.isfinite(last["test_loss"])
    assert last["participants"] == clients
    assert result.final_state is not None and all(
        np.isfinite(v).all() for v in result.final_state.values())
