"""The one check of a reply's arrays: can they be a model update?

The virtual grid applies it to every reply before a strategy sees it, and flowerbed's
strategies apply it again to what they decode, so that they stay safe in a plain Flower
ServerApp whose grid checks nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Shapes = Mapping[str, tuple[int, ...]]


def check_reply_arrays(sent_shapes: Shapes | None, reply: Mapping[str, np.ndarray],
                       exact: bool = False) -> str | None:
    """Why a reply's arrays cannot be a model update, or None if they can.

    Non-finite values are never valid. An array named like one the server sent must come
    back with the same shape; with ``exact`` the reply must carry exactly the sent names
    (a strategy decoding a model), otherwise other names are allowed (strategies that reply
    with extra arrays use other names).
    """
    if exact and sent_shapes is not None and reply.keys() != sent_shapes.keys():
        return "corrupt: the reply's arrays are not the model's"
    for k, v in reply.items():
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            return f"corrupt: non-finite values in {k!r}"
        if sent_shapes is not None and k in sent_shapes and sent_shapes[k] != v.shape:
            return f"corrupt: {k!r} has shape {v.shape}, sent {sent_shapes[k]}"
    return None


def shapes_of(state: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


__all__ = ["check_reply_arrays", "shapes_of"]
