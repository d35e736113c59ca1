"""Federated zeroth-order SGD with shared randomness ("Just One Byte (per gradient)",
Zelikman et al. 2023, on the SPSA estimate of MeZO, Malladi et al., NeurIPS 2023): the
server half (the client half is :mod:`flowerbed.clients.rules.zeroth_order`).

Round t sends x to the sampled clients S; client i takes K zeroth-order steps along
directions z_{i,s} seeded by (seed, t, i, s) and replies with the K scalars a_{i,s} only
(no model: ``replies_without_model``). The server regenerates every z_{i,s} and rebuilds

    y_i = x - sum_s a_{i,s} z_{i,s},        x <- x + eta_g sum_i w_i (y_i - x),

w_i proportional to num-examples, as the platform's FedAvg. The uplink is 4 bytes per
local step per client (the ledger shows it), instead of a model; with ``zo-byte`` it is
the paper's one byte per step (the int8 code of g_s, see
:mod:`flowerbed.core.shared_randomness`; the server restores a_s = lr byte_value(q_s) with
the run's ``lr``). The downlink is still the model (the paper's setting has no server: see
:mod:`flowerbed.strategies.dzo_sgd` for the decentralized version, where only scalars
travel). Cost moved to the server: it draws |S| K directions of the model's size.

Pinned to the authors' code (github.com/ezelikman/justonebyte, ``app.py``): two-sided
SPSA on one mini-batch, z ~ N(0, I) regenerated from a seed of (iteration, machine,
sample), the step -lr g z per projected gradient. Not followed: their step scale
lr / sqrt(total samples of the iteration) and gradients at one point per iteration (here
clients take K local steps, MeZO-style, and the server averages their models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowerbed.core.arrays import State
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import param, positive
from flowerbed.core.shared_randomness import byte_value, direction
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate

OUTPUT = "zo-steps"  # the clients' (K,) step coefficients (see the client rule)


@dataclass(frozen=True)
class ZOParams:
    """The parameters of both zeroth-order strategies (centralized and decentralized)."""

    zo_eps: float = param(1e-3, "zeroth-order SPSA radius eps: f(x +- eps z)", positive)
    zo_byte: bool = param(False, "zeroth-order: send one byte per step (the int8 log-scale "
                          "code of the projected gradient) instead of a float32")
    # the clients' step size, read by the receivers of one-byte codes (a_s = lr value(q_s));
    # declared exactly as the client's own key, so it is the same run-config key
    lr: float = param(0.1, "client learning rate eta", positive)

    def rule_config(self, seed: int) -> dict[str, Any]:
        return {"zo-eps": self.zo_eps, "zo-seed": seed, "zo-byte": self.zo_byte}


@dataclass(frozen=True)
class ZOSGDParams(ZOParams, CentralizedParams):
    pass


def check_zo_run(values: Mapping[str, Any], name: str) -> None:
    for key in ("momentum", "weight-decay", "proximal-mu"):
        if values.get(key, 0.0):
            raise ConfigError(key, values[key], f"must be 0 for {name} (the receivers "
                              "rebuild the steps from random directions only)")


def coefficients(sent: np.ndarray, lr: float) -> np.ndarray:
    """The step coefficients a_s from what a client sent: float32 a_s as they are, int8
    one-byte codes as lr byte_value(q_s) (the same value the client stepped with)."""
    sent = np.asarray(sent).reshape(-1)
    if sent.dtype == np.int8:
        return (np.float32(lr) * byte_value(sent)).astype(np.float32)
    return sent.astype(np.float32)


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
        check_zo_run(values, "zo-sgd")

    def rule_config(self, server_round: int) -> dict[str, Any]:
        return self.params.rule_config(self.services.seed)

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
            y = rebuild(global_state, coefficients(u.outputs[OUTPUT], self.params.lr),
                        self.services.seed, server_round, u.node_id)
            for k in new:
                new[k] += eta_g * (u.num_examples / total) * (y[k] - global_state[k])
        return {k: v.astype(global_state[k].dtype) for k, v in new.items()}
