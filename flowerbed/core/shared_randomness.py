"""Shared randomness: a random direction that a sender and every receiver generate alike.

Zeroth-order methods with shared randomness (Zelikman et al., "Just One Byte (per
gradient): A Note on Low-Bandwidth Decentralized Language Model Finetuning Using Shared
Randomness", 2023; the SPSA estimate of Malladi et al., "Fine-Tuning Language Models with
Just Forward Passes" (MeZO), NeurIPS 2023) send one scalar per step instead of a gradient:
the direction z it multiplies is rebuilt from an id that both sides know. Here that id is
(run seed, round, client, step), so nothing but the scalar travels. The client and the
server (or the peers) call this same function, which is why it lives in ``core``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flowerbed.core.rng import Stream, stream


def direction(seed: int, server_round: int, client: int, step: int,
              shapes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """z ~ N(0, I) over all parameters (float32, one array per name), a pure function of
    (seed, round, client, step): drawn in sorted name order, so the order in which a side
    lists its parameters does not matter."""
    rng = stream(seed, Stream.ZO_DIRECTION, server_round, client, step)
    return {k: rng.standard_normal(tuple(shapes[k]), dtype=np.float32) for k in sorted(shapes)}


__all__ = ["direction"]
