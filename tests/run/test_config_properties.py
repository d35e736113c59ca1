"""Property-based tests of the run config: a mistake fails up front, naming its key.

- any value of the wrong type, or outside what a key allows, is a ConfigError naming it;
- an unknown key is a ConfigError naming it;
- any combination of values either is rejected with a ConfigError (by ``parse_run_config``,
  or for data-dependent checks when the data loads, still before any training), or builds
  the federation and model and trains one client without an exception: a config mistake
  never surfaces as a traceback from torch, Flower Datasets or Flower.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowerbed.core.imports import load_object
from flowerbed.run.config import KEYS, KEYS_BY_NAME, ConfigError, parse_run_config

torch.set_num_threads(1)

NAMES = sorted(KEYS_BY_NAME)


def wrong_type(default: object) -> st.SearchStrategy:
    junk = st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=2),
                                                                 st.integers(), max_size=1)
    if isinstance(default, bool):
        return junk | st.integers() | st.floats() | st.text().filter(
            lambda s: s.lower() not in ("true", "false"))
    if isinstance(default, int):
        return junk | st.booleans() | st.text() | st.floats().filter(
            lambda f: not (math.isfinite(f) and f.is_integer()))
    if isinstance(default, float):
        return junk | st.booleans() | st.text() | st.sampled_from(
            [math.nan, math.inf, -math.inf])
    return junk | st.integers() | st.floats() | st.booleans()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_value_of_the_wrong_type_names_its_key(data):
    name = data.draw(st.sampled_from(NAMES))
    value = data.draw(wrong_type(KEYS_BY_NAME[name].default))
    with pytest.raises(ConfigError) as err:
        parse_run_config({name: value})
    assert err.value.key == name and name in str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_an_out_of_range_value_names_its_key(data):
    key = data.draw(st.sampled_from([k for k in KEYS if k.check is not None]))
    if isinstance(key.default, str):
        value = data.draw(st.text(max_size=8))
    elif isinstance(key.default, int):
        value = data.draw(st.integers(-10**6, 10**6))
    else:
        value = data.draw(st.floats(-1e6, 1e6))
    if key.check(value) is None:
        return  # a valid value: the other tests cover those
    with pytest.raises(ConfigError) as err:
        parse_run_config({key.name: value})
    assert err.value.key == key.name


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=20).filter(lambda s: s not in KEYS_BY_NAME))
def test_an_unknown_key_is_named(name):
    with pytest.raises(ConfigError) as err:
        parse_run_config({name: 1})
    assert err.value.key == name and "unknown key" in str(err.value)


# Values around the edges of what works, for the keys that shape data, model and training.
COMBOS = {
    "num-clients": st.integers(1, 300),
    "dataset": st.sampled_from(["digits", "synthetic", "mnist"]),
    "partitioner": st.sampled_from(["iid", "dirichlet", "pathological", "shard",
                                    "natural-id", "linear", "square", "exponential",
                                    "size"]),
    "partitioner-alpha": st.sampled_from([1e-3, 0.1, 0.5, 100.0]),
    "classes-per-partition": st.integers(1, 12),
    "shards-per-partition": st.integers(1, 30),
    "min-partition-size": st.integers(0, 20),
    "test-fraction": st.sampled_from([0.0, 0.2, 0.9]),
    "synthetic-classes": st.integers(2, 12),
    "synthetic-samples": st.integers(1, 50),
    "synthetic-dim": st.integers(1, 20),
    "model": st.sampled_from(["logreg", "mlp", "cnn"]),
    "hidden-sizes": st.sampled_from(["", "8", "16,8"]),
    "batch-size": st.integers(1, 4000),
    "local-steps": st.integers(0, 2),
    "local-epochs": st.integers(1, 2),
    "min-replies": st.integers(1, 50),
    "failure-rate": st.sampled_from([0.0, 0.5, 0.9]),
    "corrupt-rate": st.sampled_from([0.0, 0.5]),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=COMBOS))
def test_any_combination_is_rejected_up_front_or_works(raw):
    from flowerbed.clients.data import load_federation
    from flowerbed.clients.models import build_model
    from flowerbed.clients.training import TrainParams, client_rng, local_train
    from flowerbed.core.arrays import module_state

    try:
        cfg = parse_run_config(raw)
    except ConfigError as err:
        assert err.key in KEYS_BY_NAME
        return
    try:  # data-dependent checks (e.g. clients left empty) run when data and model load
        data = load_federation(cfg)
        model = build_model(cfg, data.input_shape, data.num_classes)
    except ConfigError as err:
        assert err.key in KEYS_BY_NAME
        return
    assert len(data.x) == cfg.num_clients
    client = int(np.argmax([len(y) for y in data.y]))
    new_state, metrics = local_train(model, module_state(model), data.x[client], data.y[client],
                                 TrainParams.from_config(cfg), client_rng(cfg.seed, 1, client))
    assert math.isfinite(metrics["train_loss"]) and new_state.keys() == model.state_dict().keys()


# --- import paths --------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "needle"), [
    ("no_such_pkg.mod:Strategy", "cannot import module 'no_such_pkg.mod'"),
    ("flowerbed.strategies.fedavg:Missing", "has no attribute 'Missing'"),
    ("flowerbed.run.config:RunConfig", "must be a subclass"),
    ("flowerbed.strategies.fedavg", "or 'pkg.module:Class'"),  # no colon: a registry name
    (":FedAvg", "must look like 'pkg.module:Name'"),
    ("collections:OrderedDict", "must be a subclass"),
])
def test_a_bad_strategy_path_is_named(path, needle):
    with pytest.raises(ConfigError) as err:
        parse_run_config({"strategy": path})
    assert err.value.key == "strategy" and path in str(err.value) and needle in str(err.value)


def test_a_strategy_must_be_a_flower_strategy():
    """A class that is no Flower strategy at all is refused, naming the path (Flower's own
    strategies are adopted: tests/strategies/test_flower_native.py)."""
    path = "flowerbed.core.params:Key"
    with pytest.raises(ConfigError) as err:
        parse_run_config({"strategy": path})
    assert err.value.key == "strategy" and path in str(err.value)


@pytest.mark.parametrize("path", ["no_such_pkg:factory", "flowerbed.clients.models:nothing",
                                  "justaname:"])
def test_a_bad_model_path_is_named(path):
    with pytest.raises(ConfigError) as err:
        parse_run_config({"model": path})
    assert err.value.key == "model" and path in str(err.value)


def test_load_object_checks_the_base_class():
    from flwr.serverapp.strategy import Strategy

    assert load_object("flowerbed.strategies.fedavg:FedAvg", "strategy", Strategy).__name__ \
        == "FedAvg"
    with pytest.raises(ConfigError, match="must be a subclass of"):
        load_object("flowerbed.simulation.ledger:Ledger", "strategy", Strategy)
