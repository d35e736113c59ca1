"""FedAvg with known participation probabilities: the idealized baseline of FedAU.

The official FedAU code (IBM/fedau, weighting 'known_prob') weights client n's update by
omega_n = 1/p_n with the *true* probability p_n, which no real server knows; every
available client trains and x <- x + eta_g (1/N) sum_n Delta_n / p_n, N = all clients, an
unbiased estimate of the full-participation update. The platform hands this strategy, and
only this one, the true probabilities (``Services.true_probabilities``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowerbed.platform.config import ConfigError
from flowerbed.strategies.fedau import AllClientsAverage

if TYPE_CHECKING:
    from typing import Self

    from flowerbed.platform.config import RunConfig
    from flowerbed.strategies.base import Services


class FedAvgKnown(AllClientsAverage):
    """omega_n = 1/p_n with the platform's true p_n; see the module docstring."""

    last_omega: dict[int, float]

    @classmethod
    def from_config(cls, cfg: RunConfig, services: Services) -> Self:
        if services.true_probabilities is None:
            raise ConfigError("strategy", cfg.strategy,
                              "needs the platform's participation probabilities")
        obj = cls(fraction_train=1.0, fraction_evaluate=cfg.fraction_evaluate,
                  min_train_nodes=1, server_lr=cfg.server_lr,
                  proximal_mu=cfg.proximal_mu, seed=cfg.seed)
        obj.services = services
        cls.note_fraction(cfg)
        return obj

    def omega(self, server_round: int, participants: list[int]) -> dict[int, float]:
        p = self.services.true_probabilities
        assert p is not None
        return {n: 1.0 / float(p[n]) for n in participants}
