"""A complete user strategy: FedAvg with a coordinate-wise median (Yin et al., ICML 2018).

Run it with ``flwr run . --run-config 'strategy="examples.my_strategy:FedMedian"'``; the
platform samples the available clients, decodes and validates their replies, and tracks
the run. Only the aggregation is new: the median of the clients' models, coordinate by
coordinate, which a minority of arbitrarily bad updates cannot drag away (unlike the mean).
"""

from __future__ import annotations

import numpy as np

from flowerbed.platform.arrays import State
from flowerbed.strategies.base import CentralizedStrategy, ClientUpdate


class FedMedian(CentralizedStrategy):
    """x <- x + eta_g (median_i x_i - x), the median taken per coordinate."""

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        new = {}
        for k, x in global_state.items():
            median = np.median(np.stack([u.state[k] for u in updates]), axis=0)
            new[k] = (x + self.server_lr * (median - x)).astype(x.dtype)
        return new
