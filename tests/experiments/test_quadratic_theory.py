"""The exact expected node losses on the quadratic against simulations of it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.topologies import build_topology
from flowerbed.tools.experiments.quadratic_theory import (
    dsgd_losses,
    expected_losses,
    expected_node_loss,
    teleportation_losses,
)
from tests.conftest import tiny


def _quadratic(**overrides: Any) -> dict[str, Any]:
    return tiny(**{"num_clients": 16, "num_server_rounds": 30, "lr": 0.05, "local_steps": 1,
                   "batch_size": 1, "dataset": "quadratic", "partitioner": "natural-id",
                   "model": "flowerbed.clients.quadratic:model", "synthetic_dim": 4,
                   "synthetic_samples": 8, "synthetic_alpha": 10.0, "synthetic_beta": 1.0,
                   "quadratic_offset": 2.0, "eval_nodes": 64, "final_merge": False,
                   "topology": "ring", **overrides})


@pytest.mark.parametrize("topology", ["ring", "base-2"])
def test_noiseless_dsgd_is_the_recursion_exactly(topology: str) -> None:
    """sigma^2 = 0: D-SGD is deterministic, so the run must equal the mean recursion (Base-2
    checks the time-varying W_t too)."""
    cfg = parse_run_config(_quadratic(strategy="dsgd", topology=topology, synthetic_beta=0.0,
                                      degree=1, eval_every=30))
    result = run_experiment(cfg)
    c, _ = centers_and_points(16, 4, 8, 10.0, 0.0, cfg.seed, 2.0)
    measured = 0.5 * ((result.strategy.x - c.mean(axis=0)) ** 2).sum(axis=1)
    np.testing.assert_allclose(measured, dsgd_losses(cfg), rtol=1e-4)
    assert result.records[-1]["node_loss_mean"] == pytest.approx(
        expected_node_loss(cfg), rel=1e-4)


def test_teleportation_covariance_matches_a_monte_carlo_of_random_slots() -> None:
    """n = 8 nodes, k = 3 slots on a ring, nodes drawn without replacement each round: the
    recursion's loss must match 20,000 simulated runs (4 standard errors)."""
    n, k, d, m, eta, rounds = 8, 3, 2, 5, 0.2, 25
    c, points = centers_and_points(n, d, m, 10.0, 1.0, 7, 1.0)
    cbar = c.mean(axis=0)
    ring = build_topology("ring", k).matrix(0).toarray()
    reps = 20_000
    rng = np.random.default_rng(0)
    x = np.zeros((reps, k, d))
    for _ in range(rounds):
        nodes = np.argsort(rng.random((reps, n)), axis=1)[:, :k]  # k distinct nodes
        picks = rng.integers(0, m, size=(reps, k))
        x = np.einsum("ij,rjd->rid", ring, (1 - eta) * x + eta * points[nodes, picks])
    per_run = 0.5 * ((x - cbar) ** 2).sum(axis=2).mean(axis=1)
    cfg = parse_run_config(_quadratic(strategy="teleportation", num_clients=n, k_active=k,
                                      synthetic_dim=d, synthetic_samples=m,
                                      quadratic_offset=1.0, lr=eta, num_server_rounds=rounds,
                                      seed=7))
    theory = float(teleportation_losses(cfg).mean())
    assert abs(per_run.mean() - theory) < 4 * per_run.std() / np.sqrt(reps)
    # the heterogeneity is not a bias here: without the slots' resampling it would be
    s2 = ((points - c[:, None, :]) ** 2).sum(axis=2).mean(axis=1)
    fixed = expected_losses(build_topology("ring", k), np.tile(-cbar, (k, 1)), c[:k] - cbar,
                            np.diag(s2[:k]), eta, rounds).mean()
    assert not np.isclose(fixed, theory, rtol=0.05)


def test_teleportation_runs_average_to_the_theory() -> None:
    """Teleportation k = 8 of n = 16 through the platform, 40 seeds: the mean ratio of the
    measured node_loss_mean (averaged over rounds 20..30) to its expectation is 1."""
    ratios = []
    for seed in range(40):
        cfg = parse_run_config(_quadratic(strategy="teleportation", k_active=8, seed=seed,
                                          eval_every=5))
        by_round = {r["round"]: r["node_loss_mean"] for r in run_experiment(cfg).records
                    if "node_loss_mean" in r}
        rounds = [20, 25, 30]
        measured = np.mean([by_round[t] for t in rounds])
        expected = np.mean([teleportation_losses(cfg, rounds=t).mean() for t in rounds])
        ratios.append(measured / expected)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.12)


def test_only_covered_strategies_get_a_prediction() -> None:
    assert expected_node_loss(parse_run_config(_quadratic(strategy="fedavg"))) is None
    assert expected_node_loss(parse_run_config(_quadratic(strategy="dsgd",
                                                          final_merge=True))) is None
    tuned = parse_run_config(_quadratic(strategy="teleportation-tuned", num_server_rounds=40))
    assert expected_node_loss(tuned) is None  # needs the run's chosen k
    assert expected_node_loss(tuned, {"chosen_k": 4.0}) == pytest.approx(
        teleportation_losses(tuned, 4, 20).mean())
