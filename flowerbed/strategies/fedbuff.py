"""FedBuff (Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba, "Federated Learning with
Buffered Asynchronous Aggregation", AISTATS 2022, arXiv 2106.06639).

C clients train at once (``concurrency``); each reply's update Delta_i = x_i - x_tau (the
client's model minus the version it was sent) is scaled by a staleness weight and added to
a buffer; after K replies (``buffer-size``) the server steps

    x <- x + eta_g * (1/K) sum_{i in buffer} s(t - tau_i) Delta_i

and empties the buffer (Algorithm 1; eta_g = ``server-lr``). The paper's experiments scale
by 1 / sqrt(1 + staleness), which is the polynomial s with a = 0.5, the default; ``staleness
= constant`` is the unscaled buffer (the "identical" weights of Fraboni et al.'s FedBuff
baseline, Accenture/Labs-Federated-Learning). No official FedBuff code is published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flowerbed.core.arrays import State
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import param, positive
from flowerbed.strategies.asynchronous import (
    AsyncStrategy,
    StalenessParams,
    delta,
    staleness_weight,
)
from flowerbed.strategies.base import ClientUpdate
from flowerbed.strategies.contract import Services


@dataclass(frozen=True)
class FedBuffParams(StalenessParams):
    buffer_size: int = param(10, "fedbuff: replies K buffered per server step", positive)


class FedBuff(AsyncStrategy):
    """A server step every K replies (module docstring)."""

    Params = FedBuffParams
    state_fields = ("buffer", "buffered")

    def __init__(self, params: FedBuffParams, services: Services) -> None:
        super().__init__(params, services)
        self.s = staleness_weight(params.staleness, params.staleness_a, params.staleness_b)
        self.buffer: dict[str, Any] | None = None
        self.buffered = 0

    @classmethod
    def check_params(cls, params: FedBuffParams, num_nodes: int) -> None:
        super().check_params(params, num_nodes)
        if params.buffer_size > num_nodes:
            raise ConfigError("buffer-size", params.buffer_size,
                              f"must be <= num-clients ({num_nodes})")

    def due(self) -> bool:
        """Read the buffered replies when K have arrived (the step needs them all)."""
        return self.buffered + len(self._deferred) >= self.params.buffer_size

    def on_arrival(self, update: ClientUpdate, sent: State, staleness: int) -> State | None:
        d, w = delta(update, sent), self.s(staleness)
        if self.buffer is None:
            self.buffer = {k: np.zeros_like(v) for k, v in d.items()}
        for k, v in d.items():
            self.buffer[k] += w * v
        self.buffered += 1
        if self.buffered < self.params.buffer_size:
            return None
        x = self.global_state
        assert x is not None
        step = self.params.server_lr / self.params.buffer_size
        new = {k: (x[k] + step * self.buffer[k]).astype(x[k].dtype) for k in x}
        self.buffer, self.buffered = None, 0
        return new
