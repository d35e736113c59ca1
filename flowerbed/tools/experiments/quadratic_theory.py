"""Exact expected node losses of D-SGD and Teleportation on the quadratic stand-in.

On f_i(x) = 1/2 ||x - c_i||^2 (``flowerbed.clients.quadratic``) every update is linear in
the models, so the mean and covariance of the node models' error e_i = x_i - c-bar follow
closed recursions and the expected ``node_loss_mean`` after T rounds can be computed
exactly, with no sampling. One round (one SGD step of batch 1, then one mixing step W_t):

    e^{t+1} = W_t ((1 - eta) e^t + eta (drift + u^t)),   E u^t = 0,  Cov u^t = C,

- D-SGD: model i stays on node i, drift_i = c_i - c-bar (the heterogeneity is a bias that
  mixing must undo), C = diag(s_i^2) with s_i^2 = E||xi||^2 over node i's noise points;
- Teleportation with k slots: slot i is on a node drawn without replacement each round, so
  drift = 0 and the heterogeneity becomes noise correlated across slots:
  C = s-bar^2 I + Z (n/(n-1) I - 1 1^T/(n-1)), Z = (1/n) sum_i ||c_i - c-bar||^2. Along
  1 (what x-bar sees) the heterogeneity's share is Z (n - k)/(n - 1), the paper's factor
  1 - (k-1)/(n-1): zero when k = n.

So mu^{t+1} = W_t((1 - eta) mu^t + eta drift), S^{t+1} = W_t((1 - eta)^2 S^t + eta^2 C) W_t^T,
and E 1/2 ||e_i^T||^2 = 1/2 (||mu_i^T||^2 + S^T_ii), all summed over the d coordinates.
This checks the simulation against arithmetic (tests/experiments/test_quadratic_theory.py)
and puts a prediction next to every measured point of the teleportation-scaling report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.core.params import build_params
from flowerbed.strategies.decentralized import TopologyParams, eval_rows, topology_of
from flowerbed.strategies.topologies import Topology

if TYPE_CHECKING:
    from flowerbed.run.config import RunConfig


def expected_losses(topology: Topology, mu0: np.ndarray, drift: np.ndarray,
                    noise_cov: np.ndarray, eta: float, rounds: int) -> np.ndarray:
    """E 1/2 ||e_i||^2 per model after ``rounds`` rounds of the recursion above.

    ``mu0`` and ``drift`` are (models, d); ``noise_cov`` is (models, models), the noise
    covariance summed over the d coordinates (they are independent and enter the loss only
    through their sum)."""
    mu = np.asarray(mu0, np.float64)
    drift = np.asarray(drift, np.float64)
    cov = np.zeros_like(noise_cov, dtype=np.float64)
    for t in range(rounds):
        w = topology.matrix(t).astype(np.float64)  # sparse: O(nnz * models) per product
        mu = w @ ((1.0 - eta) * mu + eta * drift)
        half = w @ ((1.0 - eta) ** 2 * cov + eta ** 2 * noise_cov)
        cov = (w @ half.T).T
    return 0.5 * ((mu ** 2).sum(axis=1) + np.diag(cov))


def _data(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """The run's centres c (n, d) and each node's noise energy s_i^2 = mean_j ||xi_ij||^2."""
    c, points = centers_and_points(cfg.num_clients, cfg.synthetic_dim, cfg.synthetic_samples,
                                   cfg.synthetic_alpha, cfg.synthetic_beta, cfg.seed,
                                   cfg.quadratic_offset)
    s2 = ((points - c[:, None, :]) ** 2).sum(axis=2).mean(axis=1)
    return c, s2


def _topology(cfg: RunConfig, n: int) -> Topology:
    """The run's topology over n nodes (or slots), as the strategies build it."""
    return topology_of(build_params(TopologyParams, cfg), n, cfg.seed)


def dsgd_losses(cfg: RunConfig) -> np.ndarray:
    """Expected loss of every node model after ``num-server-rounds`` rounds of D-SGD."""
    c, s2 = _data(cfg)
    cbar = c.mean(axis=0)
    mu0 = np.tile(-cbar, (cfg.num_clients, 1))
    return expected_losses(_topology(cfg, cfg.num_clients), mu0, c - cbar,
                           np.diag(s2), cfg.lr, cfg.num_server_rounds)


def teleportation_losses(cfg: RunConfig, k: int | None = None,
                         rounds: int | None = None) -> np.ndarray:
    """Expected loss of every slot model after ``rounds`` rounds of Teleportation with k
    slots (default: ``k-active`` and ``num-server-rounds``), all nodes available."""
    c, s2 = _data(cfg)
    n = cfg.num_clients
    k = min(cfg.k_active, n) if k is None else k
    rounds = cfg.num_server_rounds if rounds is None else rounds
    cbar = c.mean(axis=0)
    z = float(((c - cbar) ** 2).sum(axis=1).mean())
    ones = np.ones((k, k))
    hetero = (n / (n - 1) * np.eye(k) - ones / (n - 1)) if n > 1 else np.zeros((k, k))
    cov = float(s2.mean()) * np.eye(k) + z * hetero
    return expected_losses(_topology(cfg, k), np.tile(-cbar, (k, 1)),
                           np.zeros((k, c.shape[1])), cov, cfg.lr, rounds)


def expected_node_loss(cfg: RunConfig, final: dict[str, Any] | None = None) -> float | None:
    """E ``node_loss_mean`` at the end of a run of ``cfg`` on the quadratic, or None for a
    strategy this model does not cover. D-SGD: averaged over the run's sampled eval nodes
    (as the run reports it). teleportation-tuned: the chosen k's run (``final['chosen_k']``),
    trained for half the rounds (T of the 2T), as the kept run is."""
    if cfg.dataset != "quadratic" or cfg.local_steps != 1 or cfg.batch_size != 1:
        return None
    if cfg.strategy == "dsgd" and not cfg.final_merge:
        losses = dsgd_losses(cfg)
        return float(losses[eval_rows(cfg.seed, cfg.num_clients, cfg.eval_nodes)].mean())
    if cfg.strategy == "teleportation":
        return float(teleportation_losses(cfg).mean())
    if (cfg.strategy == "teleportation-tuned" and cfg.tuning_sets == "per-round" and final
            and final.get("chosen_k")):
        return float(teleportation_losses(cfg, int(final["chosen_k"]),
                                          max(cfg.num_server_rounds // 2, 1)).mean())
    return None


__all__ = ["dsgd_losses", "expected_losses", "expected_node_loss", "teleportation_losses"]
