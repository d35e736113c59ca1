"""FedAvg with known participation probabilities: the idealized baseline of FedAU.

The official FedAU code (IBM/fedau, weighting 'known_prob') weights client n's update by
omega_n = 1/p_n with the *true* probability p_n, which no real server knows; every
available client trains and x <- x + eta_g (1/N) sum_n Delta_n / p_n, N = all clients, an
unbiased estimate of the full-participation update. The platform hands this strategy, and
only this one, the true probabilities (``Services.true_probabilities``).
"""

from __future__ import annotations

from typing import Any

from flowerbed.core.errors import ConfigError
from flowerbed.strategies.contract import Services
from flowerbed.strategies.fedau import AllClientsAverage


class FedAvgKnown(AllClientsAverage):
    """omega_n = 1/p_n with the platform's true p_n; see the module docstring."""

    def __init__(self, params: Any, services: Services) -> None:
        if services.true_probabilities is None:
            raise ConfigError("strategy", "fedavg-known",
                              "needs the platform's participation probabilities")
        super().__init__(params, services)

    def omega(self, server_round: int, participants: list[int]) -> dict[int, float]:
        p = self.services.true_probabilities
        assert p is not None
        return {n: 1.0 / float(p[n]) for n in participants}
