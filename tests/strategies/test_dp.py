"""Flower's DP wrappers around flowerbed's and Flower's strategies: the clipping is visible
in the update norms, server- and client-side clipping agree, the noise has its scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowerbed.clients.data import load_federation
from flowerbed.clients.models import build_model
from flowerbed.core.arrays import State, module_state
from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import RunResult, run_experiment, seed_everything
from tests.conftest import tiny

torch.set_num_threads(1)
CLIP = 0.05


def run(**over) -> tuple[RunResult, State]:
    cfg = parse_run_config(tiny(**{"num-clients": 8, "num-server-rounds": 1,
                                   "fraction-train": 1.0, "dp-clipping-norm": CLIP, **over}))
    seed_everything(cfg.seed)  # the initial model, as the runner builds it
    data = load_federation(cfg)
    x0 = module_state(build_model(cfg, data.input_shape, data.num_classes))
    return run_experiment(cfg), x0


def norm(a: State, b: State) -> float:
    return math.sqrt(sum(float(((a[k].astype(np.float64) - b[k]) ** 2).sum()) for k in a))


@pytest.mark.parametrize("strategy", ["fedavg", "flwr.serverapp.strategy:FedAvg"])
def test_clipping_bounds_the_update_and_both_sides_agree(strategy: str) -> None:
    plain, x0 = run(strategy=strategy)
    assert norm(plain.final_state, x0) > 5 * CLIP  # without DP the update is large
    server, _ = run(strategy=strategy, dp="server-fixed", **{"dp-noise-multiplier": 0.0})
    client, _ = run(strategy=strategy, dp="client-fixed", **{"dp-noise-multiplier": 0.0})
    # the mean of updates clipped to CLIP has norm <= CLIP
    assert 0 < norm(server.final_state, x0) <= CLIP * (1 + 1e-5)
    assert norm(client.final_state, server.final_state) < 1e-6  # clipped where it happens
    assert server.records[-1]["dp_clipping_norm"] == CLIP


def test_the_noise_has_the_gaussian_mechanisms_scale() -> None:
    clean, _ = run(dp="server-fixed", **{"dp-noise-multiplier": 0.0})
    noisy, _ = run(dp="server-fixed", **{"dp-noise-multiplier": 2.0})
    diff = np.concatenate([(noisy.final_state[k] - clean.final_state[k]).ravel()
                           for k in clean.final_state])
    expected = 2.0 * CLIP / 8  # noise multiplier x clipping norm / sampled clients
    assert diff.size > 1000
    assert np.std(diff) == pytest.approx(expected, rel=0.1)
    assert abs(np.mean(diff)) < 5 * expected / math.sqrt(diff.size)


def test_adaptive_clipping_moves_the_norm_towards_the_quantile() -> None:
    """Flower 1.41's rule: norm <- norm exp(-lr (clipped fraction - target)). Every update
    is above the norm (all clipped), and there is no noise on the count, so it shrinks by
    exp(-0.2 (1 - 0.5)) a round. (Andrew et al. 2021 use the unclipped fraction, under
    which it would grow; the wrapper is Flower's, run as it is.)"""
    res, _ = run(dp="client-adaptive", **{"dp-noise-multiplier": 0.0, "num-server-rounds": 2,
                                         "dp-clip-norm-lr": 0.2, "dp-target-quantile": 0.5})
    norms = [r["dp_clipping_norm"] for r in res.records]
    assert norms == pytest.approx([CLIP, CLIP * math.exp(-0.1), CLIP * math.exp(-0.2)])


def test_dp_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="must be one of"):
        parse_run_config(tiny(dp="fancy"))
    with pytest.raises(ConfigError, match="applies to centralized strategies"):
        parse_run_config(tiny(strategy="dsgd", dp="server-fixed"))
    with pytest.raises(ConfigError, match="must be > 0"):
        parse_run_config(tiny(dp="server-fixed", **{"dp-clipping-norm": 0.0}))
    with pytest.raises(ConfigError) as err:  # Flower's own check, before anything starts
        parse_run_config(tiny(dp="client-adaptive", **{"dp-noise-multiplier": 2.0,
                                                      "num-clients": 8}))
    assert err.value.key == "dp-noise-multiplier" and "clipped_count_stddev" in str(err.value)


def rdp_epsilon_full_participation(sigma: float, rounds: int, delta: float) -> float:
    """By hand: the Gaussian mechanism (sensitivity 1, std sigma) is (a, a / (2 sigma^2))-RDP;
    T rounds compose to T a / (2 sigma^2); to (eps, delta) by Balle et al. (2020, Thm. 21),
    minimised over the orders a = 1.1, 1.2, ..., 10.9, 12, ..., 63."""
    orders = [1 + x / 10 for x in range(1, 100)] + list(range(12, 64))
    return min(rounds * a / (2 * sigma**2) - (math.log(delta) + math.log(a)) / (a - 1)
               + math.log((a - 1) / a) for a in orders)


def test_privacy_spent_is_accounted_per_release() -> None:
    over = {"dp-noise-multiplier": 2.0, "num-server-rounds": 3, "dp-delta": 1e-5}
    res, _ = run(dp="server-fixed", **over)  # every client trains: sampling rate 1
    eps = [r["dp_epsilon"] for r in res.records]
    assert eps[0] == 0.0 and eps[1] < eps[2] < eps[3]
    for t in (1, 2, 3):
        assert eps[t] == pytest.approx(rdp_epsilon_full_participation(2.0, t, 1e-5), rel=1e-9)
    sampled, _ = run(dp="client-fixed", **over, **{"fraction-train": 0.25})
    assert 0 < sampled.records[-1]["dp_epsilon"] < eps[-1]  # subsampling amplifies
    assert res.summary["privacy"]["sample_rate"] == 1.0
    assert res.summary["privacy"]["epsilon"] == eps[-1] and res.summary["notes"] == []
    adaptive, _ = run(dp="server-adaptive", **{**over, "dp-noise-multiplier": 0.1})
    assert "dp_epsilon" not in adaptive.records[-1]  # not accounted, and said so
    assert adaptive.summary["privacy"]["epsilon"] is None
    assert any("not accounted" in note for note in adaptive.summary["notes"])
