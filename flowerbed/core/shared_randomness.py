"""Shared randomness: a random direction that a sender and every receiver generate alike.

Zeroth-order methods with shared randomness (Zelikman et al., "Just One Byte (per
gradient): A Note on Low-Bandwidth Decentralized Language Model Finetuning Using Shared
Randomness", 2023; the SPSA estimate of Malladi et al., "Fine-Tuning Language Models with
Just Forward Passes" (MeZO), NeurIPS 2023) send one scalar per step instead of a gradient:
the direction z it multiplies is rebuilt from an id that both sides know. Here that id is
(run seed, round, client, step), so nothing but the scalar travels. The client and the
server (or the peers) call this same function, which is why it lives in ``core``.

The one-byte code of a projected gradient g (:func:`byte_code`, :func:`byte_value`) is the
authors' log-scale quantiser (github.com/ezelikman/justonebyte, ``app.py``,
``update_weights(one_byte=True)``): keep the sign, round 16 ln|g| to an integer power p,
restore sign(g) exp(p / 16), a relative error of at most e^(1/32) - 1 = 3.2%. Their code
clamps p to [-127, 127], which with the sign needs 9 bits, and then sends the unquantised
float (the restored value is computed but unused). Here it is one signed byte q: q = 0 is
g = 0 (or a non-finite g), otherwise sign(q) = sign(g) and |q| = p + 64 with p clamped to
[-63, 63], so |g| is represented from e^(-63/16) = 0.0195 to e^(63/16) = 51.4 (outside that
range it saturates: smaller magnitudes round up to 0.0195, larger ones down to 51.4).
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


BYTE_LEVELS = 16  # codes per e-fold of |g| (the authors' quantiser)
BYTE_OFFSET = 64  # |q| = p + 64: p in [-63, 63] -> |q| in [1, 127]


def byte_code(g: np.ndarray) -> np.ndarray:
    """The one-byte code (int8) of each projected gradient in ``g`` (see the module)."""
    g = np.asarray(g, dtype=np.float64)
    ok = np.isfinite(g) & (g != 0.0)
    mag = np.where(ok, np.abs(g), 1.0)
    p = np.clip(np.round(np.log(mag) * BYTE_LEVELS), 1 - BYTE_OFFSET, BYTE_OFFSET - 1)
    return np.where(ok, np.sign(g) * (p + BYTE_OFFSET), 0).astype(np.int8)


def byte_value(q: np.ndarray) -> np.ndarray:
    """The projected gradients (float32) that one-byte codes stand for."""
    q = np.asarray(q, dtype=np.int64)
    mag = np.exp((np.abs(q) - BYTE_OFFSET) / BYTE_LEVELS)
    return np.where(q == 0, 0.0, np.sign(q) * mag).astype(np.float32)


__all__ = ["BYTE_LEVELS", "BYTE_OFFSET", "byte_code", "byte_value", "direction"]
