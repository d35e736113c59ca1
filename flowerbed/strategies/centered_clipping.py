"""Centered clipping (Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust
Optimization", ICML 2021).

The aggregate starts from the previous round's aggregate v (zero in round 1) and moves
towards the updates, each clipped to radius tau around the current centre, L times:

    v <- v + (1/m) sum_i (Delta_i - v) min(1, tau / ||Delta_i - v||).

History is what makes it robust: Byzantine updates can move the aggregate by at most tau per
iteration, however far away they are. The paper applies it to workers' momenta; here the
inputs are the clients' round updates (pseudo-gradients) and the last aggregate is the
centre, which is the server-side half of the method (client momentum is a client-side rule
and is not part of this strategy). tau = 1 and L = 3 follow LPD-EPFL/robust-collaborative-
learning's ``centeredclip.py`` (L_iter = 3); the paper's own code was not found here, so its
defaults are not verified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowerbed.core.arrays import State
from flowerbed.core.params import param, positive
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate
from flowerbed.strategies.contract import Services
from flowerbed.strategies.robust_common import deltas, step


@dataclass(frozen=True)
class CenteredClippingParams(CentralizedParams):
    cc_tau: float = param(1.0, "centered clipping: radius tau around the centre", positive)
    cc_iterations: int = param(3, "centered clipping: iterations L", positive)


def centered_clip(points: np.ndarray, centre: np.ndarray, tau: float, iterations: int
                  ) -> np.ndarray:
    v = np.array(centre, np.float64, copy=True)
    for _ in range(iterations):
        diff = points - v
        norms = np.linalg.norm(diff, axis=1)
        scale = np.minimum(1.0, tau / np.maximum(norms, 1e-300))
        v = v + (diff * scale[:, None]).mean(axis=0)
    return v


class CenteredClipping(CentralizedStrategy):
    """Centered clipping around the last aggregate; see the module docstring."""

    Params = CenteredClippingParams
    state_fields = ("centre",)

    def __init__(self, params: CenteredClippingParams, services: Services) -> None:
        super().__init__(params, services)
        self.centre: np.ndarray | None = None  # the previous aggregate (flat)

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        d = deltas(global_state, updates)
        centre = self.centre if self.centre is not None else np.zeros(d.shape[1])
        self.centre = centered_clip(d, centre, self.params.cc_tau, self.params.cc_iterations)
        return step(global_state, self.centre, self.params.server_lr)
