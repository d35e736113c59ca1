"""Decentralized strategies against hand-built references (small sizes, exact equalities)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flowerbed.clients.data import load_federation
from flowerbed.clients.models import build_model
from flowerbed.clients.training import TrainParams, client_rng, local_train
from flowerbed.core.arrays import flatten, module_state, unflatten
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.contract import Services
from flowerbed.strategies.dsgd import DSGD
from flowerbed.strategies.teleportation import Teleportation
from flowerbed.strategies.topologies import build_topology
from tests.conftest import tiny


class FixedTeleportation(Teleportation):
    """Teleportation without resampling: slot i always lives on node i."""

    def __init__(self, params: Any, services: Services) -> None:
        super().__init__(params, services, resample=False)


def dsgd(n: int, topology: str, **params: Any) -> DSGD:
    return DSGD(DSGD.Params(topology=topology, final_merge=False, **params),
                Services(num_nodes=n, seed=0))


def _run(**overrides: Any) -> Any:
    return run_experiment(parse_run_config(tiny(**overrides)))


def test_teleportation_with_k_equal_n_and_no_resampling_is_dsgd() -> None:
    common = dict(num_clients=6, num_server_rounds=3, local_steps=2, topology="ring",
                  final_merge=False, partitioner="iid")
    dsgd = _run(strategy="dsgd", **common)
    tele = _run(strategy="tests.strategies.test_decentralized:FixedTeleportation",
                k_active=6, **common)
    np.testing.assert_allclose(tele.strategy.x, dsgd.strategy.x, atol=1e-6)
    assert [r["test_accuracy"] for r in tele.records] == pytest.approx(
        [r["test_accuracy"] for r in dsgd.records], abs=1e-9)


def test_teleportation_with_k_one_is_sgd_hopping_across_nodes() -> None:
    overrides = dict(strategy="teleportation", k_active=1, num_clients=8, num_server_rounds=4,
                     local_steps=3, partitioner="iid")
    result = _run(**overrides)
    cfg = parse_run_config(tiny(**overrides))
    data = load_federation(cfg)
    model = build_model(cfg, data.input_shape, data.num_classes)
    state = module_state(model)
    rng = np.random.default_rng([cfg.seed, 271828])  # the strategy's sampling stream
    params = TrainParams.from_config(cfg)
    hops = []
    for r in range(1, 5):
        v = int(rng.choice(np.arange(8), size=1, replace=False)[0])
        hops.append(v)
        state, _ = local_train(model, state, data.x[v], data.y[v], params,
                               client_rng(cfg.seed, r, v))
    assert len(set(hops)) > 1  # it really hopped
    np.testing.assert_allclose(result.strategy.x[0], flatten(state), atol=1e-6)


def test_dsgd_on_the_complete_graph_is_fedavg_with_one_local_step() -> None:
    """Equal partition sizes make FedAvg's example weights uniform, as W = 11^T / n."""
    common = dict(dataset="synthetic", partitioner="natural-id", synthetic_iid_size=True,
                  synthetic_samples=30, num_clients=5, num_server_rounds=3, local_steps=1,
                  batch_size=8, fraction_train=1.0)
    fedavg = _run(strategy="fedavg", **common)
    dsgd = _run(strategy="dsgd", topology="complete", **common)
    for a, b in zip(fedavg.records, dsgd.records, strict=True):
        assert a["test_loss"] == pytest.approx(b["test_loss"], abs=1e-5)
    ref = flatten(fedavg.final_state)
    np.testing.assert_allclose(dsgd.strategy.x, np.tile(ref, (5, 1)), atol=1e-5)


def test_gossip_mixing_contracts_at_the_spectral_gap_rate() -> None:
    """With no training, consensus distance shrinks by lambda_2^2 per ring step."""
    n = 16
    ring = build_topology("ring", n)
    strat = dsgd(n, "ring")
    strat.like = {"w": np.zeros(8, np.float32)}
    x = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float64)
    dists = []
    for t in range(60):
        x = ring.mix(x, t)
        dists.append(((x - x.mean(0)) ** 2).sum(1).mean())
    lam2 = (1 + 2 * np.cos(2 * np.pi / n)) / 3
    assert dists[-1] / dists[-2] == pytest.approx(lam2 ** 2, rel=1e-3)
    assert 1 - ring.spectral_gap() == pytest.approx(lam2, rel=1e-9)


def test_base2_reaches_exact_consensus_after_its_period() -> None:
    n = 12  # not a power of 2
    g = build_topology("base-2", n)
    x = np.random.default_rng(1).normal(size=(n, 5))
    mean = x.mean(0)
    for t in range(g.period):
        x = g.mix(x, t)
    np.testing.assert_allclose(x, np.tile(mean, (n, 1)), atol=1e-10)


def test_dsgd_ring_ledger_counts_two_messages_per_node_per_step() -> None:
    result = _run(strategy="dsgd", topology="ring", num_clients=8, num_server_rounds=3,
                  final_merge=True, local_steps=1)
    model_bytes = result.strategy.model_bytes
    assert model_bytes == (64 * 64 + 64 + 64 * 10 + 10) * 4
    for rec in result.records[1:3]:
        assert rec["round_messages"] == 16
        assert rec["round_bytes_p2p"] == 16 * model_bytes
        assert rec["round_bytes_down"] == rec["round_bytes_up"] == 0  # routing not counted
        assert rec["round_max_node_bytes_sent"] == 2 * model_bytes
    # the last round adds the naive all-reduce: n (n - 1) messages
    assert result.records[3]["round_messages"] == 16 + 8 * 7
    # per-node models before the merge differ; after it every node holds x-bar
    assert result.records[3]["premerge_consensus_distance"] > 0
    assert result.records[3]["consensus_distance"] < 1e-10
    assert result.summary["totals"]["cum_messages"] == 3 * 16 + 56


def test_decentralized_metrics_and_learning() -> None:
    result = _run(strategy="dsgd", topology="ring", num_clients=10, num_server_rounds=5,
                  lr=0.3, eval_nodes=4, final_merge=False)
    last = result.records[-1]
    for key in ("consensus_distance", "node_accuracy_mean", "node_accuracy_std"):
        assert key in last
    assert last["consensus_distance"] > 0
    assert last["test_accuracy"] > result.records[0]["test_accuracy"] + 0.3
    xbar = result.strategy.x.mean(0)
    np.testing.assert_allclose(flatten(result.final_state), xbar, atol=1e-6)
    assert unflatten(xbar, result.strategy.like).keys() == result.final_state.keys()


@pytest.mark.parametrize("name", ["gossip", "teleportation", "modest"])
def test_other_decentralized_strategies_learn(name: str) -> None:
    result = _run(strategy=name, num_clients=12, num_server_rounds=6, lr=0.3, k_active=4,
                  trainers=4, aggregators=2)
    assert result.records[-1]["test_accuracy"] > result.records[0]["test_accuracy"] + 0.2
    assert result.summary["totals"]["cum_bytes_p2p"] > 0
    assert result.summary["totals"]["cum_bytes_down"] == 0
    assert 0 < result.records[-1]["node_accuracy_mean"] <= 1


def test_teleportation_keeps_only_k_models() -> None:
    result = _run(strategy="teleportation", num_clients=50, k_active=4, num_server_rounds=2)
    assert result.strategy.x.shape[0] == 4


def test_variance_correction_restores_each_tensors_variance() -> None:
    """Averaging independent models shrinks each weight tensor's variance; the corrected
    average keeps the plain average's per-tensor mean and has the averaged models' mean
    variance again (Tian et al. 2024, our reading)."""
    n = 4
    strat = dsgd(n, "complete", variance_correction=True)
    strat.like = {"w": np.zeros((5, 6), np.float32), "b": np.zeros(5, np.float32)}
    x = np.random.default_rng(0).normal(size=(n, 35)).astype(np.float32)
    plain = x.mean(axis=0)
    mixed = strat.mix(build_topology("complete", n), x, 0)
    for s in strat.tensor_slices():
        target = x[:, s].var(axis=1).mean()
        assert plain[s].var() < 0.5 * target  # the vanishing variance being corrected
        np.testing.assert_allclose(mixed[:, s].var(axis=1), target, rtol=1e-4)
        np.testing.assert_allclose(mixed[:, s].mean(axis=1), plain[s].mean(), atol=1e-6)
    off = dsgd(n, "complete")
    off.like = strat.like
    np.testing.assert_allclose(off.mix(build_topology("complete", n), x, 0),
                               np.tile(plain, (n, 1)), atol=1e-6)
