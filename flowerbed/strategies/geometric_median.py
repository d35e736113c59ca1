"""Robust federated averaging with the geometric median (RFA; Pillutla, Kakade, Harchaoui,
"Robust Aggregation for Federated Learning", IEEE TSP 2022).

The server replaces the weighted mean of the updates by their weighted geometric median
argmin_v sum_i alpha_i ||v - Delta_i||, computed approximately by the smoothed Weiszfeld
algorithm: starting from the weighted mean, repeat T times

    beta_i = alpha_i / max(nu, ||v - Delta_i||),   v <- sum_i beta_i Delta_i / sum_i beta_i,

nu > 0 the smoothing that keeps a weight finite when v sits on an update. alpha_i is
proportional to the client's number of examples, as in the paper. The iteration also stops
when the objective improves by less than a relative ``rfa-ftol`` (the paper's official code,
krishnap25/RFA, stops on a relative tolerance too; its exact defaults were not verified here:
T = 4 and nu = 1e-6 follow the paper's remark that a few Weiszfeld steps suffice).
Karimireddy et al.'s implementation (epfml/byzantine-robust-optimizer) starts from v = 0
with nu = 0.1; starting from the mean converges in fewer steps and has the same fixed point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowerbed.core.arrays import State
from flowerbed.core.params import non_negative, param, positive
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate
from flowerbed.strategies.robust_common import deltas, example_weights, step


@dataclass(frozen=True)
class GeometricMedianParams(CentralizedParams):
    rfa_iterations: int = param(4, "RFA: smoothed Weiszfeld iterations T", positive)
    rfa_nu: float = param(1e-6, "RFA: smoothing nu of the Weiszfeld weights", positive)
    rfa_ftol: float = param(1e-6, "RFA: stop when the objective improves by less (relative)",
                            non_negative)


def objective(points: np.ndarray, alphas: np.ndarray, v: np.ndarray) -> float:
    return float(alphas @ np.linalg.norm(points - v, axis=1))


def smoothed_weiszfeld(points: np.ndarray, alphas: np.ndarray, iterations: int, nu: float,
                       ftol: float = 0.0) -> np.ndarray:
    """The approximate weighted geometric median of the rows of ``points``."""
    v = alphas @ points
    value = objective(points, alphas, v)
    for _ in range(iterations):
        beta = alphas / np.maximum(nu, np.linalg.norm(points - v, axis=1))
        v = beta @ points / beta.sum()
        new = objective(points, alphas, v)
        if abs(value - new) <= ftol * max(new, 1e-12):
            break
        value = new
    return v


class GeometricMedian(CentralizedStrategy):
    """RFA: x <- x + eta_g * GM_alpha(Delta_1..Delta_m); see the module docstring."""

    Params = GeometricMedianParams

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        p = self.params
        v = smoothed_weiszfeld(deltas(global_state, updates), example_weights(updates),
                               p.rfa_iterations, p.rfa_nu, p.rfa_ftol)
        return step(global_state, v, p.server_lr)
