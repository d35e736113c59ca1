"""Decentralized zeroth-order SGD with shared randomness ("Just One Byte (per gradient)",
Zelikman, Huang, Liang, Haber, Goodman, 2023): peers exchange seeds' scalars, never models.

Every node keeps its own model x_i; all start from x_0. Round t:

1. Every available node j takes K zeroth-order local steps from x_j (the client rule
   ``zo-sgd``, :mod:`flowerbed.clients.rules.zeroth_order`) along directions seeded by
   (seed, t, j, s), and its message is the K scalars (float32, or with ``zo-byte`` the
   one-byte codes): anyone who has it rebuilds j's step d_j = -sum_s a_s z_s.
2. The messages are relayed over the topology, one hop per exchange (one exchange per
   round): a node sends its own new message to its neighbours, and forwards a message it
   received in the previous exchange to the neighbours it is the relay for. The relays
   form a shortest-path tree from each origin (node i's relay for origin j is its
   lowest-id neighbour one hop closer to j; the graph is fixed and known to all), so a
   message reaches the nodes at hop distance h in the exchange of round t + h - 1 (its
   origin holds it at once) and crosses n - 1 links: every node receives it exactly once.
3. Each node applies what it received this round: x_i <- x_i + (1/n) sum d_j over the
   messages new to it (its own included).

Every node eventually applies every step with the same weight, so the models differ only
by the messages still in flight (at most diameter - 1 rounds of them); on the complete
graph there are none and every node holds the paper's model: each machine regenerates
every other machine's perturbations and applies all projected gradients, so the models
stay identical (the authors check this with model hashes). Then x-bar moves as the
centralized ``zo-sgd`` with every node sampled and equal weights.

Ledger: one peer message per directed edge and round that carries anything, its bytes
the relayed messages, each K scalars (4 bytes, or 1 with ``zo-byte``) plus an 8-byte
(origin id, round) tag: n (n - 1) (8 + K) bytes a round in all with one-byte codes and
every node training, whatever the (connected) graph; the graph sets who carries them and
how late they arrive. D-SGD sends a model per directed edge instead.

Pinned to the authors' code (github.com/ezelikman/justonebyte, ``app.py``:
``update_weights``, ``request_grads_from_all_machines``, ``apply_all_grads``), where every
machine asks every other one for its scalars each iteration (an all-to-all exchange,
i.e. the complete topology here). The relaying over sparser graphs is our extension, as
are local steps between exchanges and the 1/n weights (their step is lr / sqrt(total
samples) per projected gradient, all taken at the iteration's model). Time-varying
topologies are refused: the relay trees need a fixed graph. Unavailable nodes do not
train (they send no new message) but still relay and apply. Memory: the relay table is
n x n, and the steps in flight are diameter x n model-size vectors (the complete graph:
one round's; a ring of n: n / 2 rounds').
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from flwr.app import ArrayRecord, ConfigRecord, MessageType
from flwr.serverapp import Grid
from scipy.sparse.csgraph import shortest_path

from flowerbed.core.arrays import flatten, from_record, to_record, unflatten
from flowerbed.core.errors import ConfigError
from flowerbed.core.wire import OUTPUTS_KEY, RULE_KEY
from flowerbed.strategies.contract import messages, payload
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    TopologyParams,
    TopologyStrategy,
    topology_of,
)
from flowerbed.strategies.zo_sgd import OUTPUT, ZOParams, check_zo_run, coefficients, rebuild

TAG_BYTES = 8  # a message's (origin id, round) tag, two int32


@dataclass(frozen=True)
class DZOSGDParams(ZOParams, TopologyParams, DecentralizedParams):
    pass


def relay_table(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """(relay, diameter): relay[o, i] is the neighbour node i receives origin o's messages
    from, its lowest-id neighbour one hop closer to o (n where none: i == o, or i cannot
    be reached); the diameter is the largest finite hop distance (at least 1)."""
    adj = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    hops = shortest_path(adj, unweighted=True)  # hops[o, i]
    relay = np.full((n, n), n, dtype=np.int64)
    for o in range(n):
        closer = hops[o, src] == hops[o, dst] - 1  # the edge src -> dst moves away from o
        np.minimum.at(relay[o], dst[closer], src[closer])
    finite = hops[np.isfinite(hops)]
    return relay, max(1, int(finite.max()) if finite.size else 1)


class DZOSGD(TopologyStrategy):
    """Decentralized zeroth-order SGD; see the module docstring."""

    Params = DZOSGDParams
    # the messages in flight, one slot per round of origin (round t in slot (t - 1) % D,
    # D the graph's diameter: a message is delivered everywhere within D exchanges).
    # Column o is origin o: its step (D, n, P), who holds it and who received it in the
    # last exchange (D, n, n), its size in bytes (D, n; 0: o sent nothing that round).
    # Fixed shapes, whoever trained: state whose shape depends on failures would not be
    # comparable across runs and checkpoints.
    state_fields = (*TopologyStrategy.state_fields, "flight_steps", "flight_held",
                    "flight_fresh", "flight_size")

    @classmethod
    def check_params(cls, params: Any, num_nodes: int) -> None:
        super().check_params(params, num_nodes)
        if topology_of(params, num_nodes, 0).period != 1:
            raise ConfigError("topology", params.topology, "dzo-sgd relays messages over a "
                              "fixed graph; this topology changes every step")

    @classmethod
    def check_run(cls, values: Mapping[str, Any]) -> None:
        check_zo_run(values, "dzo-sgd")

    def __init__(self, params: Any, services: Any) -> None:
        super().__init__(params, services)
        src, dst = self.topology.edges(0)
        self.adjacency = sp.csr_matrix((np.ones(len(src), np.float32), (dst, src)),
                                       shape=(self.n, self.n))  # [i, j]: j sends to i
        self.relay, self.diameter = relay_table(src, dst, self.n)
        n, slots = self.n, self.diameter
        self.flight_steps = np.zeros((slots, n, 0), np.float32)  # sized once x_0 is known
        self.flight_held = np.zeros((slots, n, n), bool)
        self.flight_fresh = np.zeros((slots, n, n), bool)
        self.flight_size = np.zeros((slots, n), np.int64)

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        if self.flight_steps.shape[2] != self.x.shape[1]:
            self.flight_steps = np.zeros((self.diameter, self.n, self.x.shape[1]), np.float32)
        active = sorted(int(v) for v in grid.get_node_ids())
        sent = self.train_scalars(grid, active, server_round, timeout)
        slot = (server_round - 1) % self.diameter  # the slot of round t - D: delivered
        origins = np.array(sorted(sent), dtype=np.int64)
        self.flight_steps[slot] = 0.0
        self.flight_held[slot] = False
        self.flight_size[slot] = 0
        if len(origins):
            zero = {k: np.zeros_like(v, dtype=np.float32) for k, v in self.like.items()}
            self.flight_steps[slot, origins] = np.stack([
                flatten(rebuild(zero, coefficients(sent[j], self.params.lr),
                                self.services.seed, server_round, j)) for j in origins])
            self.flight_held[slot, origins, origins] = True
            self.flight_size[slot, origins] = [TAG_BYTES + sent[j].nbytes for j in origins]
            # each origin applies its own step at once
            self.x[origins] += self.flight_steps[slot, origins] / self.n
        self.flight_fresh[slot] = self.flight_held[slot]
        self.exchange()

    def exchange(self) -> None:
        """One exchange: relay what is fresh, apply what is new, count the bytes."""
        links: list[np.ndarray] = []  # (sender, receiver, bytes) of every relayed message
        for d in range(self.diameter):
            fresh, held = self.flight_fresh[d], self.flight_held[d]
            if not fresh.any():
                continue
            new = (self.adjacency @ fresh.astype(np.float32) > 0) & ~held
            if new.any():
                self.x += (new.astype(np.float32) @ self.flight_steps[d]) / self.n
                to, o = np.nonzero(new)
                links.append(np.stack([self.relay[o, to], to, self.flight_size[d, o]]))
            self.flight_held[d] = held | new
            self.flight_fresh[d] = new
        if links and self.services.ledger is not None:
            s, d, b = np.concatenate(links, axis=1)
            per_link = sp.coo_matrix((b, (s, d)), shape=(self.n, self.n)).tocsr().tocoo()
            for nbytes in np.unique(per_link.data):  # one message per link, all it carries
                on = per_link.data == nbytes
                self.services.ledger.record_many(per_link.row[on], per_link.col[on],
                                                 int(nbytes))

    def train_scalars(self, grid: Grid, nodes: list[int], server_round: int, timeout: float
                      ) -> dict[int, np.ndarray]:
        """Each node trains its own model with the zeroth-order rule; node -> what it sends
        (its K scalars). A node that fails sends nothing (and is counted)."""
        conf = ConfigRecord({"server-round": server_round, RULE_KEY: "zo-sgd",
                             **self.params.rule_config(self.services.seed)})
        msgs = messages(((node, payload(to_record(unflatten(self.x[node], self.like)), conf))
                         for node in nodes), MessageType.TRAIN, str(server_round))
        out: dict[int, np.ndarray] = {}
        for reply in grid.send_and_receive(msgs, timeout=timeout):
            node = int(reply.metadata.src_node_id)
            extra = None if reply.has_error() else reply.content.get(OUTPUTS_KEY)
            got = from_record(extra).get(OUTPUT) if isinstance(extra, ArrayRecord) else None
            if got is not None and (got.dtype == np.int8 or np.isfinite(got).all()):
                out[node] = np.asarray(got).reshape(-1)
        failed = len(nodes) - len(out)
        if failed:
            self.failed[server_round] = self.failed.get(server_round, 0) + failed
        return out
