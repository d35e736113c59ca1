"""The documented base class of decentralized strategies: one model per node (or slot).

A decentralized algorithm has no server model. In simulation the server only routes what
peers would send each other: it holds every node's model as one stacked float32 array
``x`` of shape (n, P) (flat parameter vectors, never dicts of small tensors), sends each
active node its own model to train, and applies the gossip/mixing step itself. What a
real deployment would send (one message per directed edge per exchange, model-size
bytes) is recorded in the ledger with :meth:`record_edges`; the platform does not count
the simulation's server routing (``routes_through_server = True``).

A node whose training fails (error reply, non-finite or mis-shaped model) keeps its last
good model: :meth:`train` returns the input model for it. No model state is ever lost.

Writing one (about 30 lines): subclass, implement :meth:`init_models` if not every node
starts from x_0, and :meth:`step` (one round: call :meth:`train` on the active nodes,
mix, record edges). The platform evaluates :meth:`report_state` (x-bar, the "single
global merge" model) every round and logs :meth:`round_metrics`: mean and std of the
accuracy of a fixed sample of ``eval-nodes`` node models and the consensus distance
(1/n) sum_i ||x_i - x_bar||^2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from flowerbed.core.arrays import State, flatten, from_record, to_record, unflatten
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import non_negative, param, positive, unit_interval_open_left
from flowerbed.core.records import first
from flowerbed.core.rng import Stream, stream
from flowerbed.core.validation import check_reply_arrays, shapes_of
from flowerbed.strategies.contract import PlatformStrategy, Services, messages, payload
from flowerbed.strategies.model_store import ModelStore
from flowerbed.strategies.topologies import (
    TOPOLOGIES,
    Topology,
    build_topology,
    check_topology,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecentralizedParams:
    """The parameters every decentralized strategy has."""

    eval_nodes: int = param(20, "decentralized: nodes sampled for per-node accuracy", positive)
    variance_correction: bool = param(False, "gossip/D-SGD: variance-corrected averaging")
    models_memory_gib: float = param(0.0, "decentralized: RAM for the stacked node models "
                                     "(0 = a quarter of RAM); larger model stacks are "
                                     "memory-mapped", non_negative)


def known_topology(name: str) -> str | None:
    return None if name in TOPOLOGIES else "must be one of " + ", ".join(TOPOLOGIES)


@dataclass(frozen=True)
class TopologyParams:
    """The graph a strategy mixes over (D-SGD's nodes, Teleportation's slots)."""

    topology: str = param("ring", "ring, torus, complete, exponential, one-peer-exponential, "
                          "base-2, base (Base-(k+1), k = degree), erdos-renyi, random-regular",
                          known_topology)
    degree: int = param(4, "random-regular degree / base-(k+1) max degree", positive)
    edge_probability: float = param(0.1, "Erdos-Renyi edge probability",
                                    unit_interval_open_left)


def check_topology_params(params: Any, n: int, what: str = "nodes") -> None:
    """ConfigError if ``params.topology`` cannot exist over n nodes (or slots)."""
    try:
        check_topology(params.topology, n, degree=params.degree)
    except ValueError as err:
        key = ("degree" if params.topology == "random-regular" and "degree" in str(err)
               else "topology")
        raise ConfigError(key, getattr(params, key), f"{err} (over the {n} {what})") from None


def topology_of(params: Any, n: int, seed: int) -> Topology:
    """``params.topology`` over n nodes (or slots); impossible inputs become config errors."""
    try:
        return build_topology(params.topology, n, degree=params.degree,
                              edge_probability=params.edge_probability, seed=seed)
    except ValueError as err:
        raise ConfigError("topology", params.topology, str(err)) from None


def available_nodes(grid: Grid) -> np.ndarray:
    """This round's reachable node ids as a sorted int64 array (no per-id Python work, so
    strategies whose round touches k << n nodes do not pay O(n) interpreter time)."""
    return np.sort(np.fromiter(grid.get_node_ids(), dtype=np.int64))


def eval_rows(seed: int, num_nodes: int, eval_nodes: int) -> np.ndarray:
    """The nodes whose models the per-node metrics sample (sorted, fixed per seed)."""
    rng = stream(seed, Stream.EVAL_ROWS)
    return np.sort(rng.choice(num_nodes, min(eval_nodes, num_nodes), replace=False))


class DecentralizedStrategy(PlatformStrategy, Strategy):
    """Base for D-SGD, gossip, Teleportation, MoDeST and user decentralized strategies."""

    Params = DecentralizedParams
    routes_through_server = True
    # the platform evaluates report_state(), x-bar; the sampled node models' mean beside it
    primary_metric = "test_accuracy"
    primary_label = "x-bar accuracy"
    companion_metrics = ("node_accuracy_mean",)
    state_fields = ("x", "like", "rng", "failed")
    # a round's node metrics, computed in that round; the round start() is running
    scratch_fields = ("metrics", "current_round")
    # True when every model a node receives goes through peer_rows() or mix_received(), so
    # a malicious sender may send each receiver a different model (attack-per-neighbour)
    peer_views: bool = False

    @classmethod
    def check_params(cls, params: Any, num_nodes: int) -> None:
        super().check_params(params, num_nodes)
        if num_nodes < 2:
            raise ConfigError("num-clients", num_nodes, f"{cls.__name__} is decentralized: "
                              "it needs at least 2 nodes to exchange models")

    def __init__(self, params: Any, services: Services) -> None:
        self.params, self.services = params, services
        self.n = services.num_nodes
        self.store = ModelStore(params.models_memory_gib)
        self.rng = stream(services.seed, Stream.DECENTRALIZED)
        self.x: np.ndarray = np.zeros((0, 0), np.float32)  # (models, P)
        self.like: State = {}
        self.eval_sample = eval_rows(services.seed, self.n, params.eval_nodes)
        self.metrics: dict[int, dict[str, float]] = {}
        self.failed: dict[int, int] = {}
        self.current_round = 0  # set by start() before each step

    @property
    def model_bytes(self) -> int:
        """What one peer message carries: the model, float32 (the stack's dtype), or with a
        run codec (``codec``) that codec's encoded size of a model-size update.

        With a codec the platform compresses each node's local update (its trained model is
        x_i + C(y_i - x_i)) and charges every peer message the encoded size, as if a peer
        sent its compressed update; the mixing itself still uses the exact (decoded) rows,
        i.e. it models receivers that know the sender's pre-training model. That is exact
        for one-shot transfers of an update, an approximation for gossip: CHOCO-SGD
        (``strategies/choco.py``) is the algorithm that compresses gossip properly.
        """
        return self.services.codec.nbytes({k: np.shape(v) for k, v in self.like.items()})

    @property
    def num_rounds(self) -> int:
        return self.services.num_rounds

    def after_load(self) -> None:
        self.x = self.store.copy(np.asarray(self.x, np.float32))  # back out of core

    # --- what subclasses implement
    def init_models(self, x0: np.ndarray) -> np.ndarray:
        """The stacked models before round 1 (default: every node starts from x_0)."""
        return self.store.tile(x0, self.n)

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        """One round: train the active nodes, mix, record the peer messages."""
        raise NotImplementedError

    def report_state(self) -> np.ndarray:
        """The flat model the platform evaluates each round: x-bar."""
        return self.x.mean(axis=0)

    def node_models(self) -> np.ndarray:
        """(models, P) rows whose accuracy is sampled for the per-node metrics."""
        return self.x

    # --- services for subclasses
    def train(self, grid: Grid, nodes: list[int], models: np.ndarray, server_round: int,
              timeout: float, config: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Each ``nodes[i]`` trains ``models[i]`` locally; returns (rows, ok).

        A node that fails (error reply, no reply, non-finite or mis-shaped model) keeps its
        input model: its row is returned unchanged, ``ok[i]`` is False, and it is counted.
        """
        out = np.array(models, dtype=np.float32, copy=True)
        ok = np.zeros(len(nodes), dtype=bool)
        if not nodes:
            return out, ok
        conf = ConfigRecord({"server-round": server_round, **(config or {})})
        msgs = messages(((node, payload(to_record(unflatten(models[i], self.like)), conf))
                         for i, node in enumerate(nodes)), MessageType.TRAIN,
                        str(server_round))
        pos = {int(node): i for i, node in enumerate(nodes)}
        failed = 0
        answered = set()
        for reply in grid.send_and_receive(msgs, timeout=timeout):
            i = pos.get(reply.metadata.src_node_id)
            if i is None:
                continue
            answered.add(i)
            if reply.has_error():
                failed += 1
                continue
            arrays = first(reply.content, ArrayRecord)
            vec = self._decode(arrays)
            if vec is None:
                failed += 1
                continue
            out[i] = vec
            ok[i] = True
        failed += len(nodes) - len(answered)
        if failed:
            self.failed[server_round] = self.failed.get(server_round, 0) + failed
        return out, ok

    def trained_half(self, grid: Grid, server_round: int, timeout: float,
                     config: dict[str, Any] | None = None) -> np.ndarray:
        """x^{t+1/2}: the node models after this round's local training, in a copy (a node
        that is not available this round, or fails, keeps its x^t)."""
        active = sorted(int(v) for v in grid.get_node_ids())
        half = self.store.copy(self.x)
        self.train_rows(grid, active, self.x, half, server_round, timeout, config)
        return half

    def train_rows(self, grid: Grid, nodes: list[int], src: np.ndarray, dst: np.ndarray,
                   server_round: int, timeout: float, config: dict[str, Any] | None = None
                   ) -> np.ndarray:
        """Node v trains row v of ``src`` into row v of ``dst`` (rows = node ids); returns ok.

        Like :meth:`train`, a chunk of nodes at a time when the models are out of core
        (memory-mapped), so only a chunk's messages and replies are in memory at once.
        """
        ok = np.zeros(len(nodes), dtype=bool)
        step = (self.store.chunk_rows(src.shape[1]) if self.store.out_of_core(*src.shape)
                else max(len(nodes), 1))
        for start in range(0, len(nodes), step):
            chunk = nodes[start:start + step]
            rows, ok[start:start + step] = self.train(grid, chunk, src[chunk], server_round,
                                                      timeout, config)
            dst[chunk] = rows
        return ok

    def _decode(self, arrays: ArrayRecord | None) -> np.ndarray | None:
        if arrays is None:
            return None
        state = from_record(arrays)
        if check_reply_arrays(shapes_of(self.like), state, exact=True) is not None:
            return None
        return flatten(state).astype(np.float32)

    def peer_rows(self, receiver: int, senders: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The models ``receiver`` gets from ``senders`` this round: ``rows[senders]``, except
        where a sender crafts a model for this receiver alone (the threat model's
        ``attack-per-neighbour``; the strategy cannot tell which rows those are).

        ``rows`` are what the nodes send after this round's local step, ``self.x`` what
        they held before it (the threat model crafts updates relative to it).
        """
        got = np.array(rows[senders], copy=True)
        views = self.services.peer_views
        if views is not None and len(senders):
            for pos, row in views(self.current_round, int(receiver), np.asarray(senders),
                                  self.x, rows).items():
                got[pos] = row
        return got

    def mix_received(self, topology: Topology, rows: np.ndarray, step: int) -> np.ndarray:
        """:meth:`mix` over the nodes, where each node mixes the models it received:
        sum_j W_ij y_{j->i}, y_{j->i} = rows[j] unless j crafted a model for i."""
        mixed = self.mix(topology, rows, step)
        views = self.services.peer_views
        if views is None:
            return mixed
        w = topology.matrix(step)
        for i in range(self.n):
            cols = w.indices[w.indptr[i]:w.indptr[i + 1]]
            vals = w.data[w.indptr[i]:w.indptr[i + 1]]
            off = cols != i
            crafted = views(self.current_round, i, cols[off], self.x, rows)
            for pos, row in crafted.items():  # W_ij (y_{j->i} - rows[j])
                j = cols[off][pos]
                mixed[i] += (vals[off][pos] * (np.asarray(row, np.float64)
                                               - rows[j])).astype(mixed.dtype)
        return mixed

    def record_edges(self, src: Iterable[int], dst: Iterable[int]) -> None:
        """One model-size peer message per (src, dst) pair, in the ledger."""
        if self.services.ledger is None:
            return
        self.services.ledger.record_many(np.fromiter(src, np.int64),
                                         np.fromiter(dst, np.int64), self.model_bytes)

    def record_topology(self, topology: Topology, step: int, nodes: np.ndarray | None = None
                        ) -> None:
        """The messages of one exchange over ``topology`` (rows = slots; ``nodes`` maps
        slot -> node id when the topology is over slots rather than nodes)."""
        src, dst = topology.edges(step)  # x_i <- sum_j W_ij x_j: j sends to i
        if nodes is not None:
            src, dst = nodes[src], nodes[dst]
        self.record_edges(src, dst)

    def mix(self, topology: Topology, x: np.ndarray, step: int) -> np.ndarray:
        """x <- W x, with the vanishing-variance correction if enabled.

        Out of core (memory-mapped models), a chunk of columns at a time (mixing acts on
        each column alone) into a new memory-mapped array.
        """
        if not isinstance(x, np.memmap):
            mixed = topology.mix(x, step).astype(np.float32)
            if self.params.variance_correction:
                mixed = self.correct_variance(mixed, topology.mix(self.tensor_vars(x), step))
            return mixed
        out = self.store.empty(*x.shape)
        for cols in self.store.col_chunks(*x.shape):
            out[:, cols] = topology.mix(np.asarray(x[:, cols]), step)
        if self.params.variance_correction:
            self.correct_variance(out, topology.mix(self.tensor_vars(x), step), inplace=True)
        return out

    def tensor_slices(self) -> list[slice]:
        out, i = [], 0
        for v in self.like.values():
            out.append(slice(i, i + v.size))
            i += v.size
        return out

    def tensor_vars(self, x: np.ndarray) -> np.ndarray:
        """(models, tensors): the variance of each weight tensor of each model."""
        return np.stack([x[:, s].var(axis=1) for s in self.tensor_slices()], axis=1)

    def correct_variance(self, avg: np.ndarray, target_var: np.ndarray,
                         inplace: bool = False) -> np.ndarray:
        """Tian et al. 2024 (arXiv 2404.04616), our reading: per weight tensor, rescale the
        averaged model's deviation from its mean so that its variance equals the (mixing-
        weighted) mean variance of the models that were averaged."""
        out = avg if inplace else avg.copy()
        for t, s in enumerate(self.tensor_slices()):
            if s.stop - s.start < 2:
                continue
            seg = avg[:, s]
            mu = seg.mean(axis=1, keepdims=True)
            var = seg.var(axis=1, keepdims=True)
            scale = np.sqrt(np.divide(target_var[:, t:t + 1], var,
                                      out=np.ones_like(var), where=var > 1e-12))
            out[:, s] = mu + (seg - mu) * scale
        return out

    # --- the round loop (Flower's Strategy.start signature, plus resuming)
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              first_round: int = 1) -> Result:
        result = Result()
        if first_round == 1 or self.x.size == 0:
            self.like = from_record(initial_arrays)
            self.x = self.init_models(flatten(self.like).astype(np.float32))
        if evaluate_fn and first_round == 1:
            self._evaluate(0, evaluate_fn, result)
        for t in range(first_round, num_rounds + 1):
            self.current_round = t
            self.step(t, grid, timeout)
            if evaluate_fn:
                self._evaluate(t, evaluate_fn, result)
        result.arrays = to_record(unflatten(self.report_state(), self.like))
        return result

    def _evaluate(self, t: int, evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
                  result: Result) -> None:
        if t == 0 or t % self.services.eval_every == 0 or t == self.num_rounds:
            self.metrics[t] = self.node_metrics()
        res = evaluate_fn(t, to_record(unflatten(self.report_state(), self.like)))
        if res is not None:
            result.evaluate_metrics_serverapp[t] = res

    def node_metrics(self) -> dict[str, float]:
        models = self.node_models()
        xbar = models.mean(axis=0)
        sq = sum(float(((models[r] - xbar) ** 2).sum())  # a chunk of rows at a time
                 for r in self.store.row_chunks(*models.shape))
        out = {"consensus_distance": sq / max(len(models), 1)}
        if self.services.evaluate is not None and len(models):
            # a fixed sample of nodes; strategies with fewer models (slots) use all of them
            rows = (self.eval_sample if len(models) == self.n
                    else np.arange(min(len(models), len(self.eval_sample))))
            evals = [self.services.evaluate(unflatten(models[i], self.like)) for i in rows]
            accs = [e["accuracy"] for e in evals]
            out["node_accuracy_mean"] = float(np.mean(accs))
            out["node_accuracy_std"] = float(np.std(accs))
            out["node_loss_mean"] = float(np.mean([e["loss"] for e in evals]))
        return out

    def round_metrics(self, server_round: int) -> dict[str, float]:
        return {**self.metrics.get(server_round, {}),
                "failed_nodes": float(self.failed.get(server_round, 0))}

    # --- Flower's abstract per-round methods: start() drives rounds itself
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return []

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return None, None

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        log.info("%s: %d nodes", type(self).__name__, self.n)


class TopologyStrategy(DecentralizedStrategy):
    """A decentralized strategy over one topology (``TopologyParams``): its parameters are
    checked against the number of nodes and ``self.topology`` is built, seeded."""

    @classmethod
    def check_params(cls, params: Any, num_nodes: int) -> None:
        super().check_params(params, num_nodes)
        check_topology_params(params, num_nodes)

    def __init__(self, params: Any, services: Services) -> None:
        super().__init__(params, services)
        self.topology = topology_of(params, self.n, services.seed)
