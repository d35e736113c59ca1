"""Model state as an ordered ``dict[str, np.ndarray]`` and its Flower ``ArrayRecord`` form."""

from __future__ import annotations

import functools
import io
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.common.constant import SType

from flowerbed.core.records import filled

State = dict[str, np.ndarray]


_HEADERS: dict[tuple[str, tuple[int, ...]], tuple[bytes, str]] = {}


def _header(v: np.ndarray) -> tuple[bytes, str]:
    """The ``.npy`` header of arrays of ``v``'s dtype and shape, and the dtype's name."""
    key = (v.dtype.str, tuple(v.shape))
    hit = _HEADERS.get(key)
    if hit is None:
        buf = io.BytesIO()
        np.save(buf, np.zeros(v.shape, v.dtype), allow_pickle=False)
        hit = _HEADERS[key] = (buf.getvalue()[:buf.tell() - v.nbytes], str(v.dtype))
    return hit


def fast_array(v: np.ndarray) -> Array:
    """``Array(v)`` without ``np.save`` and argument checks per call (same fields and bytes).

    Thousands of client replies a round make Flower's per-array serialisation a visible
    cost, so the ``.npy`` header is built once per (dtype, shape) and reused, and the
    object is filled directly with the four fields ``Array.__init__`` would set.
    """
    if v.dtype.hasobject:
        return Array(np.ascontiguousarray(v))
    header, dtype = _header(v)
    a = Array.__new__(Array)
    a.__dict__.update(_is_dirty=True, dtype=dtype, shape=tuple(v.shape), stype=SType.NUMPY,
                      data=header + v.tobytes())
    return a


def fast_numpy(a: Array, copy: bool = True) -> np.ndarray:
    """``a.numpy()`` without ``np.load`` per call (same values).

    A writable copy by default; ``copy=False`` gives a read-only view of the bytes (for
    checks that only read).
    """
    if a.stype == SType.NUMPY:
        dtype = np.dtype(a.dtype)
        count = math.prod(a.shape)
        nbytes = count * dtype.itemsize
        offset = len(a.data) - nbytes
        if not dtype.hasobject and offset > 0 and b"'fortran_order': False" in a.data[:offset]:
            view = np.frombuffer(a.data, dtype=dtype, count=count,
                                 offset=offset).reshape(a.shape)
            return view.copy() if copy else view
    return a.numpy()


def stacked_numpy(arrays: Sequence[Array]) -> np.ndarray:
    """``np.stack([fast_numpy(a) for a in arrays])`` in one copy, for arrays of one dtype
    and shape (the parts of many clients' replies): their bytes are joined and the headers
    cut off together. ValueError when the arrays do not share one ``.npy`` layout."""
    if not arrays:
        raise ValueError("nothing to stack")
    first = arrays[0]
    if first.stype != SType.NUMPY or any(a.stype != SType.NUMPY for a in arrays):
        raise ValueError("only NumPy-serialised arrays are stacked from their bytes")
    dtype = np.dtype(first.dtype)
    count = math.prod(first.shape)
    size = len(first.data)
    offset = size - count * dtype.itemsize
    header = first.data[:offset]
    if dtype.hasobject or offset <= 0 or b"'fortran_order': False" not in header:
        raise ValueError("not a plain C-ordered array")
    raw = np.frombuffer(b"".join(a.data for a in arrays), np.uint8)
    if raw.size != size * len(arrays):
        raise ValueError("the arrays differ in size")
    rows = raw.reshape(len(arrays), size)
    if not (rows[:, :offset] == np.frombuffer(header, np.uint8)).all():
        raise ValueError("the arrays differ in dtype or shape")
    return rows[:, offset:].copy().view(dtype).reshape(len(arrays), *first.shape)


def to_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    return filled(ArrayRecord(), {k: fast_array(np.ascontiguousarray(v))
                                  for k, v in state.items()})


_VIEWS: dict[int, tuple[weakref.ref[ArrayRecord], State]] = {}


def from_record(record: ArrayRecord, copy: bool = True) -> State:
    """The record's arrays: writable copies, or (``copy=False``) read-only views of its
    bytes, decoded once per record object (a reply is read by the grid's check, the
    attack, the strategy's decode: one decode); a new dict each call."""
    if copy:
        return {k: fast_numpy(v) for k, v in record.items()}
    key = id(record)
    hit = _VIEWS.get(key)
    if hit is None or hit[0]() is not record:
        views = {k: fast_numpy(v, False) for k, v in record.items()}
        hit = _VIEWS[key] = (weakref.ref(record, functools.partial(_forget, _VIEWS, key)),
                             views)
    return dict(hit[1])


def _forget(cache: dict[int, Any], key: int, _ref: object) -> None:
    """A weakly cached record died: drop its entry (its id may be reused)."""
    cache.pop(key, None)


def module_state(module: torch.nn.Module) -> State:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


@functools.lru_cache(maxsize=4096)
def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def record_nbytes(record: ArrayRecord) -> int:
    """Payload bytes of the arrays themselves (what a real network would carry)."""
    return sum(_nbytes(a.dtype, tuple(a.shape)) for a in record.values())


def flatten(state: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in state.values()])


def unflatten(vec: np.ndarray, like: Mapping[str, np.ndarray]) -> State:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vec[i:i + v.size].reshape(v.shape).astype(v.dtype, copy=False)
        i += v.size
    return out
