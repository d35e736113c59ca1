"""What the robust aggregators share: the round's updates as one matrix of flat deltas.

Robust rules act on the clients' updates Delta_i = x_i - x (pseudo-gradients), not on the
models, so that distances and norms do not depend on where the model is; the new global
model is x + eta_g * aggregate(Delta).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowerbed.core.arrays import State, flatten, unflatten
from flowerbed.strategies.base import ClientUpdate


def deltas(global_state: State, updates: Sequence[ClientUpdate]) -> np.ndarray:
    """(clients, P) float64: each update's flat Delta_i = x_i - x."""
    x = flatten(global_state).astype(np.float64)
    return np.stack([flatten(u.state).astype(np.float64) - x for u in updates])


def example_weights(updates: Sequence[ClientUpdate]) -> np.ndarray:
    """alpha_i proportional to num-examples, summing to 1."""
    w = np.array([max(u.num_examples, 0.0) for u in updates], np.float64)
    return w / w.sum() if w.sum() > 0 else np.full(len(updates), 1.0 / len(updates))


def step(global_state: State, direction: np.ndarray, server_lr: float) -> State:
    """x + eta_g * direction, in the global model's dtypes."""
    x = flatten(global_state).astype(np.float64)
    return {k: np.array(v) for k, v in unflatten(x + server_lr * direction,
                                                 global_state).items()}


__all__ = ["deltas", "example_weights", "step"]
