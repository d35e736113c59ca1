"""FedAvg (McMahan et al., AISTATS 2017), with a server learning rate and FedProx's mu.

Round t: sample a fraction of the available clients; each runs I local SGD steps from x;
the server sets x <- x + eta_g * sum_i w_i (x_i - x), w_i proportional to num-examples.
eta_g = 1 is plain FedAvg. ``proximal-mu`` > 0 adds (mu/2)||x_i - x||^2 to the local loss
(FedProx, Li et al., MLSys 2020). The aggregation is :meth:`CentralizedStrategy.aggregate`.
"""

from __future__ import annotations

from flowerbed.strategies.base import CentralizedStrategy


class FedAvg(CentralizedStrategy):
    """FedAvg / FedProx; see the module docstring."""
