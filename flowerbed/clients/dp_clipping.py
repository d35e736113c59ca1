"""Client-side clipping for Flower's differential-privacy wrappers, per virtual client.

``DifferentialPrivacyClientSide{Fixed,Adaptive}Clipping`` put the clipping norm into every
train config (``clipping_norm``) and expect each client to clip its model update to it, as
Flower's ``fixedclipping_mod`` / ``adaptiveclipping_mod`` do on a real ClientApp. A worker
trains many virtual clients at once, so it applies the same rule to each client's result
here, with Flower's own function: update = new - received, scaled to norm <= c, and the
adaptive wrapper's ``norm_bit`` in the metrics (Flower's convention: 1 if the update was
clipped, i.e. its norm was above c).
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import ConfigRecord
from flwr.supercore.differential_privacy import (
    KEY_CLIPPING_NORM,
    KEY_NORM_BIT,
    compute_adaptive_clip_model_update,
)

from flowerbed.core.arrays import State


def wants_clipping(config: ConfigRecord) -> bool:
    return KEY_CLIPPING_NORM in config


def clip_update(new: State, received: Mapping[str, object], config: ConfigRecord,
                metrics: dict[str, float]) -> tuple[State, dict[str, float]]:
    """``new`` with its update relative to ``received`` clipped to the config's norm."""
    keys = list(new)
    arrays = [new[k].copy() for k in keys]
    norm_bit = compute_adaptive_clip_model_update(
        arrays, [received[k] for k in keys], float(config[KEY_CLIPPING_NORM]))
    clipped = {k: a.astype(new[k].dtype, copy=False) for k, a in zip(keys, arrays, strict=True)}
    return clipped, {**metrics, KEY_NORM_BIT: float(norm_bit)}


__all__ = ["clip_update", "wants_clipping"]
