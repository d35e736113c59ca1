"""Model state as an ordered ``dict[str, np.ndarray]`` and its Flower ``ArrayRecord`` form."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

State = dict[str, np.ndarray]


def to_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def from_record(record: ArrayRecord) -> State:
    return {k: v.numpy() for k, v in record.items()}


def module_state(module: torch.nn.Module) -> State:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def record_nbytes(record: ArrayRecord) -> int:
    """Payload bytes of the arrays themselves (what a real network would carry)."""
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in record.values())


def state_nbytes(state: Mapping[str, np.ndarray]) -> int:
    return sum(int(v.nbytes) for v in state.values())


def flatten(state: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in state.values()])


def unflatten(vec: np.ndarray, like: Mapping[str, np.ndarray]) -> State:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vec[i:i + v.size].reshape(v.shape).astype(v.dtype, copy=False)
        i += v.size
    return out
