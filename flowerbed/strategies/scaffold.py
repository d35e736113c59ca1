"""SCAFFOLD (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning", ICML 2020), the server half of Algorithm 1 (the client half, option II, is
:mod:`flowerbed.clients.rules.scaffold`).

The server keeps the global model x and the control variate c (zero at the start). Round t
sends (x, c) to the sampled clients S; client i corrects every local gradient by c - c_i and
returns y_i and Delta c_i. Then

    x <- x + eta_g (1/|S|) sum_{i in S} (y_i - x),      c <- c + (1/N) sum_{i in S} Delta c_i,

with N the number of clients. As in the paper the average is uniform over the replies (not
weighted by num-examples, unlike the platform's FedAvg). Sending c doubles the downlink,
sending Delta c_i doubles the uplink: the ledger counts both. Local momentum is refused:
option II's (x - y)/(K lr) estimates the mean corrected gradient only for plain SGD steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flowerbed.core.arrays import State
from flowerbed.core.errors import ConfigError
from flowerbed.strategies.base import CentralizedStrategy, ClientUpdate


class Scaffold(CentralizedStrategy):
    """SCAFFOLD; see the module docstring."""

    state_fields = ("control",)
    client_rule = "scaffold"

    def __init__(self, params: Any, services: Any) -> None:
        super().__init__(params, services)
        self.control: State | None = None  # the server's c

    @classmethod
    def check_run(cls, values: Mapping[str, Any]) -> None:
        if values.get("momentum", 0.0):
            raise ConfigError("momentum", values["momentum"], "must be 0 for scaffold (its "
                              "option II control variate assumes plain SGD steps)")

    def rule_inputs(self, server_round: int) -> State | None:
        assert self.global_state is not None  # configure_train set it
        if self.control is None:
            self.control = {k: np.zeros_like(v, dtype=np.float32)
                            for k, v in self.global_state.items()}
        return self.control

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        eta_g, n = self.params.server_lr, self.services.num_nodes
        new_x = {}
        for k, x in global_state.items():
            mean_dy = np.mean([u.state[k] - x for u in updates], axis=0)
            new_x[k] = (x + eta_g * mean_dy).astype(x.dtype)
        assert self.control is not None
        deltas = [u.outputs for u in updates if u.outputs is not None]
        if deltas:
            self.control = {k: (c + sum(d[k] for d in deltas) / n).astype(np.float32)
                            for k, c in self.control.items()}
        return new_x
