"""FedSAM and DFedSAM(-MGS) through the platform equal NumPy references on the quadratic
(one data point per node, so every gradient is y - c_i exactly)."""

from __future__ import annotations

import numpy as np

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from tests.conftest import tiny

N, D, K, LR, RHO = 6, 3, 3, 0.2, 0.3


def quadratic(strategy: str, **over) -> dict:
    return tiny(strategy=strategy, dataset="quadratic", model="flowerbed.clients.quadratic:model",
                num_clients=N, synthetic_dim=D, synthetic_samples=1, synthetic_alpha=1.0,
                synthetic_beta=0.0, quadratic_offset=2.0, local_steps=K, batch_size=1, lr=LR,
                fraction_train=1.0, partitioner="natural-id", sam_rho=RHO, **over)


def sam_steps(y: np.ndarray, a: np.ndarray) -> np.ndarray:
    for _ in range(K):
        g = y - a
        y = y - LR * (g + RHO * g / (np.linalg.norm(g) + 1e-12))
    return y


def centers(cfg) -> np.ndarray:
    return centers_and_points(N, D, 1, 1.0, 0.0, cfg.seed, 2.0)[0]


def test_fedsam_equals_numpy_reference() -> None:
    cfg = parse_run_config(quadratic("fedsam", num_server_rounds=2))
    got = run_experiment(cfg).final_state["x"]
    c, x = centers(cfg), np.zeros(D)
    for _ in range(2):  # equal sizes: FedAvg's weights are uniform
        x = np.mean([sam_steps(x, c[i]) for i in range(N)], axis=0)
    np.testing.assert_allclose(got, x, atol=1e-5)


def test_dfedsam_mgs_gossips_q_times_and_counts_each_step() -> None:
    q = 3
    cfg = parse_run_config(quadratic("dfedsam", num_server_rounds=1, gossip_steps=q,
                                     final_merge=False, topology="ring"))
    result = run_experiment(cfg)
    strategy = result.strategy
    c = centers(cfg)
    x = np.stack([sam_steps(np.zeros(D), c[i]) for i in range(N)])
    for step in range(q):
        x = strategy.topology.mix(x, step)
    np.testing.assert_allclose(strategy.x, x, atol=1e-5)
    src, _ = strategy.topology.edges(0)
    assert result.records[-1]["round_bytes_p2p"] == q * len(src) * D * 4
