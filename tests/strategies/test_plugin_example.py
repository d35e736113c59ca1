"""The README's plug-in examples run by import path, and a plug-in's own parameters work."""

import numpy as np
import pytest

from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config, strategy_keys
from flowerbed.strategies.base import ClientUpdate
from flowerbed.strategies.contract import Services, build
from flowerbed.strategies.registry import strategy_class

TRIMMED = "examples.my_strategy:TrimmedMean"


def updates(*values):
    return [ClientUpdate(i, {"w": np.array(v, np.float32)}, 1.0, {})
            for i, v in enumerate(values)]


def built(path, **values):
    cfg = parse_run_config({"strategy": path, **values})
    return build(strategy_class(path), cfg, Services(num_nodes=cfg.num_clients, seed=0))


def test_median_ignores_one_outlier():
    x = {"w": np.zeros(2, np.float32)}
    ups = updates([1.0, 2.0], [2.0, 3.0], [1e6, -1e6])
    got = built("examples.my_strategy:FedMedian").aggregate(1, x, ups)
    np.testing.assert_allclose(got["w"], [2.0, 2.0])


def test_trimmed_mean_reads_its_own_parameters():
    x = {"w": np.zeros(1, np.float32)}
    ups = updates([1.0], [2.0], [3.0], [10.0], [100.0])
    # 5 values, trim 0.2: drop 1 at each end -> mean(2, 3, 10) = 5
    s = built(TRIMMED, **{"trim-fraction": 0.2, "min-kept": 1})
    assert (s.params.trim_fraction, s.params.min_kept) == (0.2, 1)
    np.testing.assert_allclose(s.aggregate(1, x, ups)["w"], [5.0])
    # trim 0.4 drops 2 at each end -> 3; with min-kept 3 only 1 at each end -> 5
    s = built(TRIMMED, **{"trim-fraction": 0.4, "min-kept": 1})
    np.testing.assert_allclose(s.aggregate(1, x, ups)["w"], [3.0])
    s = built(TRIMMED, **{"trim-fraction": 0.4, "min-kept": 3})
    np.testing.assert_allclose(s.aggregate(1, x, ups)["w"], [5.0])
    s = built(TRIMMED, **{"trim-fraction": 0.0})
    np.testing.assert_allclose(s.aggregate(1, x, ups)["w"], [23.2])  # the plain mean


def test_strategy_params_key_sets_the_same_values():
    flat = parse_run_config({"strategy": TRIMMED, "trim-fraction": 0.3, "min-kept": 2})
    folded = parse_run_config({"strategy": TRIMMED,
                               "strategy-params": "trim-fraction = 0.3, min-kept = 2"})
    assert flat == folded
    # what flowerbed hands plain flwr run: only pyproject keys, the plug-in's folded in
    out = flat.for_flower()
    assert "trim-fraction" not in out
    assert parse_run_config(out) == flat


@pytest.mark.parametrize(("raw", "key", "fragment"), [
    ({"trim-fraction": 0.7}, "trim-fraction", "must be in [0, 0.5)"),
    ({"min-kept": 0}, "min-kept", "must be > 0"),
    ({"min-kept": "many"}, "min-kept", "must be an integer"),
    ({"trim-fractin": 0.2}, "trim-fractin", "did you mean 'trim-fraction'"),
    ({"strategy-params": "trim-fraction = 0.9"}, "trim-fraction", "must be in [0, 0.5)"),
    ({"strategy-params": "trim = 0.1"}, "trim", "not a parameter of"),
    ({"strategy-params": "trim-fraction = "}, "strategy-params", "key = value pairs"),
    ({"strategy-params": "min-kept = 2", "min-kept": 3}, "min-kept", "also set in"),
])
def test_bad_plugin_values_name_the_key(raw, key, fragment):
    with pytest.raises(ConfigError) as err:
        parse_run_config({"strategy": TRIMMED, **raw})
    assert err.value.key == key and fragment in str(err.value)


def test_a_plugins_keys_are_only_accepted_for_it():
    with pytest.raises(ConfigError, match="unknown key"):
        parse_run_config({"strategy": "fedavg", "trim-fraction": 0.2})
    names = [k.name for k in strategy_keys(TRIMMED)]
    assert names[-2:] == ["trim-fraction", "min-kept"] and "fraction-train" in names


def test_runs_by_import_path(run):
    res = run(strategy="examples.my_strategy:FedMedian", num_clients=10,
              num_server_rounds=4, fraction_train=1.0, model="logreg", local_steps=5,
              partitioner="iid")
    assert type(res.strategy).__name__ == "FedMedian"
    assert res.summary["status"] == "completed"
    acc = [r["test_accuracy"] for r in res.records]
    assert acc[-1] > acc[0] + 0.3  # it learns
