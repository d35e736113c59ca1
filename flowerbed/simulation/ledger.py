"""Communication ledger: what each message would cost on a real network.

Every message a strategy sends or receives is recorded with its payload bytes (the arrays
it carries), by the platform for server <-> client traffic and by decentralized strategies
for what peers would send each other. Packed transport messages are never counted: the
ledger describes the algorithm, not the simulation's plumbing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SERVER = -1  # node id of the server in ledger entries


@dataclass
class RoundTraffic:
    messages: int = 0
    bytes_down: int = 0  # server -> client
    bytes_up: int = 0  # client -> server
    bytes_p2p: int = 0  # peer -> peer
    sent: Counter[int] = field(default_factory=Counter)  # bytes sent per node
    received: Counter[int] = field(default_factory=Counter)  # bytes received per node
    messages_sent: Counter[int] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "bytes_p2p": self.bytes_p2p,
            "max_node_bytes_sent": max(
                (v for k, v in self.sent.items() if k != SERVER), default=0),
            "max_node_bytes_received": max(
                (v for k, v in self.received.items() if k != SERVER), default=0),
            "max_node_messages_sent": max(
                (v for k, v in self.messages_sent.items() if k != SERVER), default=0),
            "server_bytes_sent": self.sent.get(SERVER, 0),
            "server_bytes_received": self.received.get(SERVER, 0),
        }


class Ledger:
    """Per-round and cumulative message/byte counts, with per-node maxima."""

    def __init__(self) -> None:
        self.rounds: dict[int, RoundTraffic] = {}
        self.current_round = 0
        self.total_messages = 0
        self.total_bytes_down = 0
        self.total_bytes_up = 0
        self.total_bytes_p2p = 0

    def begin_round(self, server_round: int) -> None:
        self.current_round = server_round

    def _traffic(self) -> RoundTraffic:
        return self.rounds.setdefault(self.current_round, RoundTraffic())

    def record(self, src: int, dst: int, nbytes: int, count: int = 1) -> None:
        """``count`` messages of ``nbytes`` each from ``src`` to ``dst``."""
        t = self._traffic()
        total = nbytes * count
        t.messages += count
        t.sent[src] += total
        t.received[dst] += total
        t.messages_sent[src] += count
        self.total_messages += count
        if src == SERVER:
            t.bytes_down += total
            self.total_bytes_down += total
        elif dst == SERVER:
            t.bytes_up += total
            self.total_bytes_up += total
        else:
            t.bytes_p2p += total
            self.total_bytes_p2p += total

    def record_many(self, src: np.ndarray, dst: np.ndarray, nbytes: int) -> None:
        """One message of ``nbytes`` from each ``src[e]`` to ``dst[e]`` (peer edges)."""
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        if src.size == 0:
            return
        if (src == SERVER).any() or (dst == SERVER).any():
            for a, b in zip(src.tolist(), dst.tolist(), strict=True):
                self.record(a, b, nbytes)
            return
        t = self._traffic()
        count = int(src.size)
        t.messages += count
        t.bytes_p2p += count * nbytes
        self.total_messages += count
        self.total_bytes_p2p += count * nbytes
        for nodes, counter, unit in ((src, t.sent, nbytes), (dst, t.received, nbytes),
                                     (src, t.messages_sent, 1)):
            ids, counts = np.unique(nodes, return_counts=True)
            counter.update(dict(zip(ids.tolist(), (counts * unit).tolist(), strict=True)))

    def round_summary(self, server_round: int) -> dict[str, Any]:
        return self.rounds.get(server_round, RoundTraffic()).summary()

    def cumulative(self) -> dict[str, int]:
        return {"cum_messages": self.total_messages, "cum_bytes_down": self.total_bytes_down,
                "cum_bytes_up": self.total_bytes_up, "cum_bytes_p2p": self.total_bytes_p2p}

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (for checkpoints)."""
        return {
            "current_round": self.current_round,
            "totals": self.cumulative(),
            "rounds": {str(r): {"messages": t.messages, "bytes_down": t.bytes_down,
                                "bytes_up": t.bytes_up, "bytes_p2p": t.bytes_p2p,
                                "sent": {str(k): v for k, v in t.sent.items()},
                                "received": {str(k): v for k, v in t.received.items()},
                                "messages_sent": {str(k): v for k, v in
                                                  t.messages_sent.items()}}
                       for r, t in self.rounds.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current_round = int(state["current_round"])
        tot = state["totals"]
        self.total_messages = tot["cum_messages"]
        self.total_bytes_down = tot["cum_bytes_down"]
        self.total_bytes_up = tot["cum_bytes_up"]
        self.total_bytes_p2p = tot["cum_bytes_p2p"]
        self.rounds = {}
        for r, t in state["rounds"].items():
            self.rounds[int(r)] = RoundTraffic(
                messages=t["messages"], bytes_down=t["bytes_down"], bytes_up=t["bytes_up"],
                bytes_p2p=t["bytes_p2p"],
                sent=Counter({int(k): v for k, v in t["sent"].items()}),
                received=Counter({int(k): v for k, v in t["received"].items()}),
                messages_sent=Counter({int(k): v for k, v in t["messages_sent"].items()}))
