"""Federated zeroth-order SGD with shared randomness ("Just One Byte (per gradient)",
Zelikman et al. 2023, on the SPSA estimate of MeZO, Malladi et al., NeurIPS 2023): the
server half (the client half is :mod:`flowerbed.clients.rules.zeroth_order`).

Round t sends x to the sampled clients S; client i takes K zeroth-order steps along
directions z_{i,s} seeded by (seed, t, i, s) and replies with the K scalars a_{i,s} only
(no model: ``replies_without_model``). The server regenerates every z_{i,s} and rebuilds

    y_i = x - sum_s a_{i,s} z_{i,s},        x <- x + eta_g sum_i w_i (y_i - x),

w_i proportional to num-examples, as the platform's FedAvg. The uplink is 4 bytes per
local step per client (the ledger shows it), instead of a model; the downlink is still the
model (the paper's decentralized setting has no server to download from; here the server
broadcasts x). Cost moved to the server: it draws |S| K directions of the model's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowerbed.core.arrays import State
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import param, positive
from flowerbed.core.shared_randomness import direction
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate

OUTPUT = "zo-steps"  # the clients' (K,) step coefficients (see the client rule)


@dataclass(frozen=True)
class ZOSGDParams(CentralizedParams):
    zo_eps: float = param(1e-3, "zeroth-order SPSA radius eps: f(x +- eps z)", positive)


def rebuild(x: State, coeffs: np.ndarray, seed: int, server_round: int, client: int
            ) -> State:
    """y = x - sum_s a_s z_s: a client's local model from its scalars and the shared ids."""
    shapes = {k: v.shape for k, v in x.items()}
    y = {k: np.array(v, dtype=np.float32, copy=True) for k, v in x.items()}
    for s, a in enumerate(np.asarray(coeffs, np.float32).reshape(-1)):
        if a == 0.0:
            continue  # no step (or a client that stopped early): nothing to add
        z = direction(seed, server_round, client, s, shapes)
        for k in y:
            y[k] -= a * z[k]
    return y


class ZOSGD(CentralizedStrategy):
    """Federated zeroth-order SGD; see the module docstring."""

    Params = ZOSGDParams
    client_rule = "zo-sgd"
    replies_without_model = True

    @classmethod
    def check_run(cls, values: Mapping[str, Any]) -> None:
        for key in ("momentum", "weight-decay", "proximal-mu"):
            if values.get(key, 0.0):
                raise ConfigError(key, values[key], "must be 0 for zo-sgd (the server "
                                  "rebuilds the steps from random directions only)")

    def rule_config(self, server_round: int) -> dict[str, Any]:
        return {"zo-eps": self.params.zo_eps, "zo-seed": self.services.seed}

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        ups = [u for u in updates if u.outputs is not None and OUTPUT in u.outputs]
        if not ups:
            return global_state
        total = sum(u.num_examples for u in ups)
        new = {k: np.array(v, dtype=np.float64, copy=True) for k, v in global_state.items()}
        eta_g = self.params.server_lr
        for u in ups:
            assert u.outputs is not None
            y = rebuild(global_state, u.outputs[OUTPUT], self.services.seed, server_round,
                        u.node_id)
            for k in new:
                new[k] += eta_g * (u.num_examples / total) * (y[k] - global_state[k])
        return {k: v.astype(global_state[k].dtype) for k, v in new.items()}
