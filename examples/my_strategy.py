"""Complete user strategies: robust aggregation rules, one with parameters of its own.

Run them with ``flowerbed run . -c 'strategy="examples.my_strategy:FedMedian"'`` (or plain
``flwr run``); the platform samples the available clients, decodes and validates their
replies, and tracks the run. Only the aggregation is new.

- :class:`FedMedian`: the coordinate-wise median of the clients' models (Yin et al., ICML
  2018), which a minority of arbitrarily bad updates cannot drag away (unlike the mean).
- :class:`TrimmedMean`: per coordinate, drop the largest and smallest ``trim-fraction`` of
  the values and average the rest (Yin et al., ICML 2018), but keep at least ``min-kept``.
  Its two parameters are declared in :class:`TrimmedMeanParams` and set like any key:
  ``-c 'strategy="examples.my_strategy:TrimmedMean" trim-fraction=0.2 min-kept=3'``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowerbed.core.arrays import State
from flowerbed.core.params import param, positive
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate


class FedMedian(CentralizedStrategy):
    """x <- x + eta_g (median_i x_i - x), the median taken per coordinate."""

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        new = {}
        for k, x in global_state.items():
            median = np.median(np.stack([u.state[k] for u in updates]), axis=0)
            new[k] = (x + self.params.server_lr * (median - x)).astype(x.dtype)
        return new


def below_half(v: float) -> str | None:
    return None if 0 <= v < 0.5 else "must be in [0, 0.5)"


@dataclass(frozen=True)
class TrimmedMeanParams(CentralizedParams):  # the base's keys (fraction-train, ...) too
    trim_fraction: float = param(0.1, "share of the largest and of the smallest values "
                                 "dropped per coordinate", below_half)
    min_kept: int = param(1, "fewest values kept per coordinate", positive)


class TrimmedMean(CentralizedStrategy):
    """x <- x + eta_g (trimmed mean_i x_i - x), per coordinate."""

    Params = TrimmedMeanParams

    def trimmed(self, count: int) -> int:
        """How many values are dropped at each end, out of ``count``."""
        cut = int(self.params.trim_fraction * count)
        return max(0, min(cut, (count - self.params.min_kept) // 2))

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        cut = self.trimmed(len(updates))
        new = {}
        for k, x in global_state.items():
            values = np.sort(np.stack([u.state[k] for u in updates]), axis=0)
            mean = values[cut:len(updates) - cut].mean(axis=0)
            new[k] = (x + self.params.server_lr * (mean - x)).astype(x.dtype)
        return new
