"""Fault injection: which virtual clients fail, drop out, straggle or corrupt.

The decision for one client is a pure function of (seed, server round, attempt, client) on
the faults stream. One uniform draw u per client splits [0, 1) into consecutive intervals,
so a client has at most one fault:

    [0, failure) -> FAILED, then DROPPED, LATE, CORRUPT, and the rest -> no fault.

The virtual grid applies the plan to a round's training messages (what a strategy sees is
always an error reply, never the faulty content):

- FAILED: the message carries a 'fail' directive; the node's work raises
  (:mod:`flowerbed.clients.injected`) and the reply is an error.
- DROPPED: the grid never delivers the message and gets no reply: "no reply before the
  round's timeout" (on a real deployment the server would wait out the timeout).
- LATE: the node trains and answers, but its reply arrives after the round's timeout
  (nothing sleeps: the arrival time is simulated); the grid discards it as late.
- CORRUPT: the message carries a 'corrupt' directive; the node answers with NaN, Inf or a
  wrongly shaped array, which the grid's reply check rejects.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import numpy as np

from flowerbed.clients.injected import corrupt_state
from flowerbed.core.params import Config
from flowerbed.core.rng import Stream, stream


class Fault(enum.Enum):
    FAILED = "failed"
    DROPPED = "dropped"
    LATE = "late"
    CORRUPT = "corrupt"


class FaultPlan:
    """The fault of every (round, attempt, client), from the run config's rates."""

    def __init__(self, seed: int, failure: float = 0.0, dropout: float = 0.0,
                 straggler: float = 0.0, corrupt: float = 0.0) -> None:
        self.seed = seed
        edges = np.cumsum([failure, dropout, straggler, corrupt])
        self.edges: list[float] = [float(e) for e in edges]

    @classmethod
    def from_config(cls, cfg: Config) -> FaultPlan:
        return cls(cfg.seed, cfg.failure_rate, cfg.dropout_rate, cfg.straggler_rate,
                   cfg.corrupt_rate)

    @property
    def active(self) -> bool:
        return self.edges[-1] > 0.0

    def fault(self, server_round: int, attempt: int, client: int) -> Fault | None:
        if not self.active:
            return None
        u = stream(self.seed, Stream.FAULTS, server_round, attempt, client).random()
        for edge, kind in zip(self.edges, Fault, strict=True):
            if u < edge:
                return kind
        return None

    def corrupt(self, state: Mapping[str, np.ndarray], server_round: int, attempt: int,
                client: int) -> dict[str, np.ndarray]:
        """What a node told to corrupt its update sends for ``state``."""
        return corrupt_state(state, self.seed, server_round, attempt, client)


__all__ = ["Fault", "FaultPlan"]
