"""Teleportation's k tuning (Algorithm 2): disjoint node sets, k = n phase, best kept."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.teleportation import Teleportation
from flowerbed.strategies.teleportation_tuned import tuning_set
from tests.conftest import tiny


def test_tuning_set_fits_in_n() -> None:
    assert tuning_set(1) == [1]
    assert tuning_set(15) == [1, 2, 4, 8]
    assert tuning_set(16) == [1, 2, 4, 8]
    assert tuning_set(100) == [1, 2, 4, 8, 16, 32]
    for n in range(1, 300):
        ks = tuning_set(n)
        assert sum(ks) <= n
        # for any k* < n some k in K has k*/4 < k <= k*
        assert all(any(k_star / 4 < k <= k_star for k in ks) for k_star in range(1, n))


def test_fixed_sets_are_disjoint_blocks_then_k_equals_n() -> None:
    cfg = parse_run_config(tiny(strategy="teleportation-tuned", num_clients=15,
                                num_server_rounds=10, lr=0.3, local_steps=5,
                                tuning_sets="fixed"))
    result = run_experiment(cfg)
    strat = result.strategy
    blocks = [set(c.universe.tolist()) for c in strat.candidates]
    assert [c.k for c in strat.candidates] == [1, 2, 4, 8]
    assert [len(b) for b in blocks] == [1, 2, 4, 8]
    assert len(set().union(*blocks)) == 15  # disjoint, covering 1 + 2 + 4 + 8 nodes
    for c, b in zip(strat.candidates, blocks, strict=True):
        assert set(c.holders.tolist()) <= b  # a candidate only ever activates its block
    assert strat.full.k == 15 and set(strat.full.holders.tolist()) == set(range(15))
    last = result.records[-1]
    assert last["chosen_k"] in {1, 2, 4, 8, 15}
    assert strat.leader.k == last["chosen_k"]
    np.testing.assert_allclose(strat.x, strat.leader.x)
    assert last["test_accuracy"] > result.records[0]["test_accuracy"] + 0.2


def _spy_on_steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, np.ndarray]]:
    """(round, k, holders) after every Teleportation step of every run."""
    seen: list[tuple[int, int, np.ndarray]] = []
    step = Teleportation.step

    def spy(self: Teleportation, server_round: int, grid: Any, timeout: float) -> None:
        step(self, server_round, grid, timeout)
        seen.append((server_round, self.k, self.holders.copy()))

    monkeypatch.setattr(Teleportation, "step", spy)
    return seen


def test_per_round_sets_are_disjoint_and_drawn_from_all_nodes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy_on_steps(monkeypatch)
    cfg = parse_run_config(tiny(strategy="teleportation-tuned", num_clients=15,
                                num_server_rounds=40, lr=0.3, local_steps=1))
    assert cfg.tuning_sets == "per-round"
    run_experiment(cfg)
    for r in range(1, 21):  # the tuning phase: 1 + 2 + 4 + 8 = 15 = n nodes, all busy
        sets = [h for rr, k, h in seen if rr == r]
        assert [len(h) for h in sets] == [1, 2, 4, 8]
        assert sorted(np.concatenate(sets).tolist()) == list(range(15))  # disjoint, all
    assert {k for rr, k, _ in seen if rr > 20} == {15}  # then only k = n runs
    # unlike a fixed block, the k = 1 candidate hops over the whole network
    assert len({int(h[0]) for rr, k, h in seen if k == 1}) >= 8
    # a slot is handed to a new node when its holder changes (teleport), as in Algorithm 1
    k4 = [h for _, k, h in seen if k == 4]
    assert any((a != b).any() for a, b in itertools.pairwise(k4))


def test_per_round_sets_see_the_whole_objective() -> None:
    """Quadratic, zeta^2 = 10: with a fixed block the k = 1 candidate descends on its one
    node's f_v and ends near c_v, at loss ~ 1/2 ||c_v - c-bar||^2; drawn per round it sees
    a new node each round and stays near c-bar (an exponential average of the c_v)."""
    def k1_loss(sets: str) -> float:
        cfg = parse_run_config(tiny(
            strategy="teleportation-tuned", num_clients=15, num_server_rounds=60, lr=0.1,
            local_steps=1, batch_size=1, dataset="quadratic", partitioner="natural-id",
            model="flowerbed.clients.quadratic:model", synthetic_dim=5, synthetic_samples=4,
            synthetic_alpha=10.0, synthetic_beta=0.0, tuning_sets=sets))
        strat = run_experiment(cfg).strategy
        c = centers_and_points(15, 5, 4, 10.0, 0.0, cfg.seed)[0]
        k1 = strat.candidates[0]
        if sets == "fixed":  # 30 steps x <- x - 0.1 (x - c_0) from 0: x = (1 - 0.9^30) c_0
            np.testing.assert_allclose(k1.x[0], (1 - 0.9 ** 30) * c[0], rtol=1e-4,
                                       atol=1e-5)
        return float(0.5 * ((k1.x[0] - c.mean(0)) ** 2).sum())

    fixed, per_round = k1_loss("fixed"), k1_loss("per-round")
    assert per_round < fixed / 3


def _tuned_on_quadratic(metric: str) -> tuple[Any, Any]:
    cfg = parse_run_config(tiny(
        strategy="teleportation-tuned", num_clients=15, num_server_rounds=8, lr=0.5,
        local_steps=1, batch_size=1, dataset="quadratic", partitioner="natural-id",
        model="flowerbed.clients.quadratic:model", synthetic_dim=5, synthetic_samples=4,
        synthetic_alpha=10.0, quadratic_offset=3.0, tuning_metric=metric))
    return cfg, run_experiment(cfg)


@pytest.mark.parametrize("metric", ["xbar", "nodes"])
def test_the_kept_run_has_the_lowest_validation_loss(metric: str) -> None:
    """On the quadratic, the server's loss of a model v is 1/2 ||v - c-bar||^2 + eps: the
    kept run must minimise that of x-bar ('xbar') or its mean over the slots ('nodes')."""
    cfg, result = _tuned_on_quadratic(metric)
    strat = result.strategy
    cbar = centers_and_points(15, 5, 4, 10.0, cfg.synthetic_beta, cfg.seed, 3.0)[0].mean(0)

    def loss(run: Teleportation) -> float:
        models = run.x if metric == "nodes" else run.x.mean(axis=0, keepdims=True)
        return float(np.mean(0.5 * ((models - cbar) ** 2).sum(axis=1)))

    losses = {run.k: loss(run) for run in strat.runs()}
    assert strat.leader.k == min(losses, key=losses.__getitem__)
    assert result.records[-1]["chosen_k"] == strat.leader.k


def test_the_tuning_metric_changes_the_choice() -> None:
    """Here x-bar's loss prefers k = n (averaging 15 slots cancels noise) while the slot
    models' own loss prefers a smaller k (a 15-slot ring mixes slowly)."""
    picked = {m: _tuned_on_quadratic(m)[1].records[-1]["chosen_k"] for m in ("xbar", "nodes")}
    assert picked["xbar"] == 15 and picked["nodes"] < 15
