"""What a node does when the simulation tells it to misbehave (see ``core.wire``).

The simulation's fault plan decides, per (round, attempt, client), which node fails or
corrupts its update, and puts a directive into that node's message; the node acts on it
here, so the failure is a real exception in the client's work and the corrupt update is
really sent. Which array is corrupted, and how, is a seeded draw on the faults stream at
the same coordinates, so every execution path corrupts alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flowerbed.core.rng import Stream, stream

FAIL, CORRUPT = "fail", "corrupt"
FLIP_LABELS = "flip-labels"  # a malicious node's data poisoning (simulation.adversary)


class InjectedFailure(RuntimeError):
    """What a failing ClientApp raises (a real exception, not a special reply)."""


def corrupt_state(state: Mapping[str, np.ndarray], seed: int, server_round: int,
                  attempt: int, client: int) -> dict[str, np.ndarray]:
    """A corrupted copy of ``state``: one array gets a NaN, an Inf, or a wrong shape."""
    rng = stream(seed, Stream.FAULTS, server_round, attempt, client)
    rng.random()  # the draw that chose the fault
    out = {k: np.array(v, copy=True) for k, v in state.items()}
    key = list(out)[int(rng.integers(len(out)))]
    mode = int(rng.integers(3))
    arr = out[key]
    if mode == 2 or not np.issubdtype(arr.dtype, np.floating):
        out[key] = np.zeros(arr.size + 1, dtype=arr.dtype)  # wrong shape
    else:
        arr.flat[int(rng.integers(arr.size))] = np.nan if mode == 0 else np.inf
    return out


def flip_pair(classes: str) -> tuple[int, int] | None:
    """(source, target) of a targeted flip 's:t', or None for '' (every label flipped)."""
    if not classes:
        return None
    src, _, tgt = classes.partition(":")
    return int(src), int(tgt)


def flipped_labels(y: np.ndarray, num_classes: int, classes: str = "") -> np.ndarray:
    """The data poisoning of a malicious node: y -> C - 1 - y, or with ``classes = 's:t'``
    (targeted) only the examples of class s relabelled t."""
    y = np.asarray(y)
    pair = flip_pair(classes)
    if pair is None:
        return (num_classes - 1 - y).astype(y.dtype)
    return np.where(y == pair[0], pair[1], y).astype(y.dtype)


__all__ = ["CORRUPT", "FAIL", "FLIP_LABELS", "InjectedFailure", "corrupt_state", "flip_pair",
           "flipped_labels"]
