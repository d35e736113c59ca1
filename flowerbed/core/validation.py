"""The one check of a reply's arrays: can they be a model update?

The virtual grid applies it to every reply before a strategy sees it, and flowerbed's
strategies apply it again to what they decode, so that they stay safe in a plain Flower
ServerApp whose grid checks nothing.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord

from flowerbed.core.arrays import _forget, from_record

Shapes = Mapping[str, tuple[int, ...]]


def check_reply_arrays(sent_shapes: Shapes | None, reply: Mapping[str, np.ndarray],
                       exact: bool = False, known_finite: bool = False) -> str | None:
    """Why a reply's arrays cannot be a model update, or None if they can.

    Non-finite values are never valid. An array named like one the server sent must come
    back with the same shape; with ``exact`` the reply must carry exactly the sent names
    (a strategy decoding a model), otherwise other names are allowed (strategies that reply
    with extra arrays use other names). ``known_finite``: the values were found finite
    before (:func:`check_reply_record`), only names and shapes are checked.
    """
    if exact and sent_shapes is not None and reply.keys() != sent_shapes.keys():
        return "corrupt: the reply's arrays are not the model's"
    for k, v in reply.items():
        if (not known_finite and np.issubdtype(v.dtype, np.floating)
                and not np.isfinite(v).all()):
            return f"corrupt: non-finite values in {k!r}"
        if sent_shapes is not None and k in sent_shapes and sent_shapes[k] != v.shape:
            return f"corrupt: {k!r} has shape {v.shape}, sent {sent_shapes[k]}"
    return None


_FINITE: dict[int, weakref.ref[ArrayRecord]] = {}  # records whose values were all finite


def check_reply_record(sent_shapes: Shapes | None, record: ArrayRecord,
                       exact: bool = False) -> str | None:
    """:func:`check_reply_arrays` on a record's arrays. The grid checks every reply and a
    strategy checks what it decodes again: a record object found finite once is not
    scanned again (records are built once and not changed in place; its names and
    shapes are still checked, against each caller's own expectations)."""
    key = id(record)
    seen = _FINITE.get(key)
    finite = seen is not None and seen() is record
    reason = check_reply_arrays(sent_shapes, from_record(record, copy=False), exact, finite)
    if reason is None and not finite:
        _FINITE[key] = weakref.ref(record, functools.partial(_forget, _FINITE, key))
    return reason


def shapes_of(state: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


__all__ = ["check_reply_arrays", "check_reply_record", "shapes_of"]
