"""FedAsync (Xie, Koyejo, Gupta, "Asynchronous Federated Optimization", arXiv 1903.03934,
OPT 2020).

The server applies every reply as it arrives: a client sent version x_tau returns its
locally trained x_new, and with t the current version

    alpha_t = alpha * s(t - tau),    x_t = (1 - alpha_t) x_{t-1} + alpha_t x_new,

s a staleness function (``staleness``: constant 1, polynomial (t - tau + 1)^-a, hinge 1 for
t - tau <= b else 1 / (a (t - tau - b) + 1); Algorithm 1 and sec. 5.2 of the paper). The
paper's client adds the proximal term (rho/2)||x - x_tau||^2: that is ``proximal-mu``.
Defaults alpha = 0.6 and a = 0.5 are the paper's FedAsync+Poly setting; the hinge's a = 10,
b = 4 (set them) are the values its experiments use, as we read them. No official code is
published; this follows the paper's equations.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowerbed.core.arrays import State
from flowerbed.core.params import param, unit_interval_open_left
from flowerbed.strategies.asynchronous import AsyncStrategy, StalenessParams, staleness_weight
from flowerbed.strategies.base import ClientUpdate
from flowerbed.strategies.contract import Services


@dataclass(frozen=True)
class FedAsyncParams(StalenessParams):
    async_alpha: float = param(0.6, "fedasync: mixing weight alpha", unit_interval_open_left)


class FedAsync(AsyncStrategy):
    """x <- (1 - alpha s(t - tau)) x + alpha s(t - tau) x_new at every arrival."""

    Params = FedAsyncParams

    def __init__(self, params: FedAsyncParams, services: Services) -> None:
        super().__init__(params, services)
        self.s = staleness_weight(params.staleness, params.staleness_a, params.staleness_b)

    def alpha_t(self, staleness: int) -> float:
        return self.params.async_alpha * self.s(staleness)

    def on_arrival(self, update: ClientUpdate, sent: State, staleness: int) -> State:
        a = self.alpha_t(staleness)
        x = self.global_state
        assert x is not None
        return {k: ((1.0 - a) * x[k] + a * update.state[k].astype("float64")).astype(
            x[k].dtype) for k in x}
