"""Flower's own message-API strategies, and one written for a vanilla Flower app, run by
import path on the virtual grid, with the platform's participation, faults and ledger."""

from __future__ import annotations

import math

import pytest
import torch

from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config, strategy_keys
from flowerbed.run.runner import run_experiment
from tests.conftest import tiny

torch.set_num_threads(1)
FLOWER = "flwr.serverapp.strategy:"
LISTED = ["FedAvg", "FedAvgM", "FedProx", "FedAdam", "FedYogi", "FedAdagrad", "QFedAvg",
          "FedMedian", "FedTrimmedAvg", "Krum", "MultiKrum", "Bulyan"]
EXTRA = {"QFedAvg": {"client-learning-rate": 0.1}, "Bulyan": {"num-clients": 12}}


def test_flowers_fedavg_is_flowerbeds_fedavg() -> None:
    """Every client trains, so sampling (Flower's uses Python's seeded `random`) plays no
    part: the two implementations of FedAvg give the same model, round by round."""
    common = dict(num_clients=10, num_server_rounds=3, fraction_train=1.0, seed=1)
    ours = run_experiment(parse_run_config(tiny(strategy="fedavg", **common)))
    theirs = run_experiment(parse_run_config(tiny(strategy=FLOWER + "FedAvg", **common)))
    assert type(theirs.strategy).native.__module__.startswith("flwr.serverapp.strategy")
    for a, b in zip(ours.records, theirs.records, strict=True):
        for key in ("test_accuracy", "test_loss", "train_loss", "participants",
                    "cum_bytes_up", "cum_bytes_down"):
            if a.get(key) is None:
                assert b.get(key) is None
            else:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), key


@pytest.mark.parametrize("name", LISTED)
def test_each_flower_strategy_runs_with_faults(name: str) -> None:
    cfg = parse_run_config(tiny(**{"strategy": FLOWER + name, "num-clients": 8,
                                   "num-server-rounds": 3, "fraction-train": 1.0,
                                   "failure-rate": 0.2, "seed": 1, **EXTRA.get(name, {})}))
    res = run_experiment(cfg)
    assert type(res.strategy).__name__ == name
    assert res.summary["status"] == "completed"
    assert res.summary["totals"]["failed"] > 0  # the platform's faults reached it
    totals = res.summary["totals"]
    assert totals["participants"] + totals["failed"] == cfg.num_clients * 3
    assert all(math.isfinite(r["test_loss"]) for r in res.records)
    assert res.records[-1]["cum_bytes_up"] > 0  # the ledger counted it


def test_constructor_parameters_are_keys() -> None:
    names = {k.name: k for k in strategy_keys(FLOWER + "FedAdam")}
    assert {"eta", "eta-l", "beta-1", "beta-2", "tau", "min-available-nodes"} <= set(names)
    assert names["eta"].default == 0.1  # Flower's default
    assert names["fraction-train"].default == 0.2  # shared with the built-ins: theirs
    cfg = parse_run_config(tiny(strategy=FLOWER + "FedAdam", eta=0.05, num_server_rounds=1,
                                **{"strategy-params": "tau = 0.01"}))
    built = run_experiment(cfg).strategy
    assert (built.eta, built.tau, built.fraction_train) == (0.05, 0.01, 1.0)


@pytest.mark.parametrize(("over", "key", "fragment"), [
    ({"strategy": FLOWER + "FedAdam", "eta": "fast"}, "eta", "must be a number"),
    ({"strategy": FLOWER + "FedAdam", "etaa": 0.1}, "etaa", "did you mean 'eta'"),
    ({"strategy": FLOWER + "QFedAvg"}, "client-learning-rate", "QFedAvg requires it"),
    ({"strategy": FLOWER + "FedAvg", "min-available-nodes": 50}, "min-available-nodes",
     "would wait forever"),
    ({"strategy": FLOWER + "DifferentialPrivacyServerSideFixedClipping"}, "strategy",
     "has no default"),
    ({"strategy": FLOWER + "Strategy"}, "strategy", "abstract"),
])
def test_bad_flower_strategy_settings_are_named(over: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config(tiny(**over))
    assert err.value.key == key and fragment in str(err.value)


def test_a_vanilla_flower_subclass_runs_unchanged() -> None:
    cfg = parse_run_config(tiny(strategy="examples.flower_quickstart:FedAvgWithHistory",
                                num_clients=6, num_server_rounds=3, failure_rate=0.3, seed=2))
    res = run_experiment(cfg)
    assert res.summary["status"] == "completed"
    assert res.strategy.history == {r["round"]: r["participants"] for r in res.records[1:]}
    assert min(res.strategy.history.values()) < 6  # failed clients were not aggregated


def test_resuming_a_flower_strategy_is_refused_clearly(tmp_path) -> None:
    over = dict(strategy=FLOWER + "FedAvg", num_server_rounds=2, tracking=True,
                checkpoint_every=1, output_dir=str(tmp_path), run_name="r")
    run_experiment(parse_run_config(tiny(**over)))
    with pytest.raises(ConfigError) as err:
        run_experiment(parse_run_config(tiny(**{**over, "num_server_rounds": 3,
                                                "resume_from": str(tmp_path / "r")})))
    assert err.value.key == "resume-from" and "cannot resume" in str(err.value)
