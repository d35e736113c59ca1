"""The documented base class of centralized strategies: server-side global model(s).

Every flowerbed strategy is a Flower message-API strategy (``flwr.serverapp.strategy.Strategy``),
so it runs in any Flower ServerApp, and follows the contract of
:mod:`flowerbed.strategies.contract` (declared ``Params``, lent ``Services``, declared state).

- :class:`CentralizedStrategy`: subclass and override :meth:`CentralizedStrategy.aggregate`
  (new global state from the clients' updates); FedAvg-style algorithms are ~30 lines.
- :class:`flowerbed.strategies.decentralized.DecentralizedStrategy`: one model per node;
  overrides ``start()``, the server only routes what peers would send each other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import Result

from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import (
    non_negative,
    one_of,
    param,
    positive,
    unit_interval,
    unit_interval_open_left,
)
from flowerbed.core.records import first
from flowerbed.core.rng import Stream, stream
from flowerbed.core.validation import check_reply_record, shapes_of
from flowerbed.core.wire import INPUTS_KEY, OUTPUTS_KEY, RULE_KEY
from flowerbed.strategies.averaging import weighted_sum
from flowerbed.strategies.contract import PlatformStrategy, Services, messages, payload

log = logging.getLogger(__name__)


@dataclass
class ClientUpdate:
    """One client's training reply, decoded. ``state``'s arrays are read-only views of
    the reply's bytes (no copy per client): aggregate into new arrays."""

    node_id: int
    state: State
    num_examples: float
    metrics: dict[str, float]
    outputs: State | None = None  # a client rule's extra arrays ("rule-outputs"), if sent


@dataclass(frozen=True)
class CentralizedParams:
    """The parameters every centralized strategy has."""

    fraction_train: float = param(0.2, "share of available clients sampled per round",
                                  unit_interval_open_left)
    fraction_evaluate: float = param(0.0, "share of clients for federated evaluation "
                                     "(0 = off)", unit_interval)
    min_train_nodes: int = param(1, "minimum clients sampled per round", positive)
    server_lr: float = param(1.0, "server learning rate eta_g", positive)
    min_replies: int = param(1, "fewest good training replies for a round to count", positive)
    on_too_few: str = param("skip", "what to do with a round below min-replies",
                            one_of("skip", "retry"))
    max_retries: int = param(2, "on-too-few = 'retry': re-sampled attempts before skipping",
                             non_negative)


class CentralizedStrategy(PlatformStrategy, FlowerFedAvg):
    """Flower's FedAvg skeleton with seeded sampling among the *available* nodes.

    Subclasses override :meth:`aggregate` (new global state from the updates). Replies that
    failed, or carry non-finite or wrongly shaped arrays, are never aggregated; they are
    counted in :attr:`rejected` and logged once per round. A round with fewer than
    ``min_replies`` good training replies is re-sampled up to ``max_retries`` times
    (``on_too_few='retry'``) and otherwise skipped: the global model stays as it was.
    """

    Params = CentralizedParams
    state_fields = ("rng", "global_state", "rejected", "attempts", "skipped")
    primary_metric = "test_accuracy"  # the global model on the server's test set
    primary_label = "test accuracy"

    def __init__(self, params: CentralizedParams, services: Services) -> None:
        FlowerFedAvg.__init__(self, fraction_train=params.fraction_train,
                              fraction_evaluate=params.fraction_evaluate,
                              min_train_nodes=params.min_train_nodes, min_evaluate_nodes=0,
                              min_available_nodes=0)
        self.params, self.services = params, services
        self.rng = stream(services.seed, Stream.CENTRALIZED_SAMPLING)
        self.global_state: State | None = None
        self.rejected: dict[int, int] = {}
        self.attempts: dict[int, int] = {}  # round -> training attempts made
        self.skipped: set[int] = set()  # rounds without enough good replies

    @classmethod
    def check_params(cls, params: CentralizedParams, num_nodes: int) -> None:
        super().check_params(params, num_nodes)
        if params.min_replies > num_nodes:
            raise ConfigError("min-replies", params.min_replies,
                              f"must be <= num-clients ({num_nodes})")

    @property
    def max_retries(self) -> int:
        """Re-sampled attempts of a round below min-replies (0 unless on-too-few = retry)."""
        return self.params.max_retries if self.params.on_too_few == "retry" else 0

    # --- the round loop
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              first_round: int = 1) -> Result:
        """Flower's ``Strategy.start`` loop, plus resuming and the min-replies rule.

        ``first_round`` > 1 resumes a run: ``initial_arrays`` is the global model after
        round ``first_round - 1`` (already evaluated), so server-round numbers, and with
        them every client's seeds, are those of the uninterrupted run.
        """
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        t_start = time.time()
        log.info("%s: rounds %d..%d", type(self).__name__, first_round, num_rounds)
        if evaluate_fn and first_round == 1:
            res = evaluate_fn(0, initial_arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        arrays = initial_arrays
        for current_round in range(first_round, num_rounds + 1):
            replies = self._train_round(current_round, arrays, train_config, grid, timeout)
            if replies is None:
                self.on_round_skipped(current_round)
            else:
                agg_arrays, agg_metrics = self.aggregate_train(current_round, replies)
                if agg_arrays is not None:
                    result.arrays = arrays = agg_arrays
                if agg_metrics is not None:
                    result.train_metrics_clientapp[current_round] = agg_metrics
            replies = None  # one model per client: freed before the next round trains
            eval_replies = grid.send_and_receive(
                messages=self.configure_evaluate(current_round, arrays, evaluate_config, grid),
                timeout=timeout)
            agg_eval = self.aggregate_evaluate(current_round, eval_replies)
            if agg_eval is not None:
                result.evaluate_metrics_clientapp[current_round] = agg_eval
            if evaluate_fn:
                res = evaluate_fn(current_round, arrays)
                if res is not None:
                    result.evaluate_metrics_serverapp[current_round] = res
        result.arrays = arrays
        log.info("strategy finished in %.2f s", time.time() - t_start)
        return result

    def _train_round(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                     grid: Grid, timeout: float) -> list[Message] | None:
        """The round's training replies, or None if the round is skipped (too few)."""
        for attempt in range(self.max_retries + 1):
            self.attempts[server_round] = attempt + 1
            cfg = ConfigRecord(dict(config))
            cfg["attempt"] = attempt  # new fault draws for the re-sampled clients
            replies = list(grid.send_and_receive(
                messages=self.configure_train(server_round, arrays, cfg, grid),
                timeout=timeout))
            good = sum(not m.has_error() for m in replies)
            if good >= self.params.min_replies:
                return replies
            log.warning("round %d: %d good replies < min-replies %d (attempt %d of %d)",
                        server_round, good, self.params.min_replies, attempt + 1,
                        self.max_retries + 1)
        self.skipped.add(server_round)
        log.warning("round %d skipped: the global model is unchanged", server_round)
        return None

    def on_round_skipped(self, server_round: int) -> None:
        """Called for a round skipped for too few replies (the model stays unchanged).

        Strategies with per-round bookkeeping (FedAU's participation intervals) count the
        round as one in which nobody participated."""
        return None

    # --- sampling
    def sample(self, grid: Grid, fraction: float, minimum: int) -> list[int]:
        """A seeded uniform sample of the nodes available now."""
        available = sorted(grid.get_node_ids())
        k = min(len(available), max(minimum, round(fraction * len(available))))
        chosen = self.rng.choice(len(available), size=k, replace=False)
        return sorted(available[i] for i in chosen)

    # --- the clients' side (flowerbed.clients.rules): which rule they run, with what
    client_rule: ClassVar[str] = "sgd"  # a built-in rule's name or 'pkg.module:Class'
    # True: a training reply may carry no model (an empty "arrays" record, from a rule with
    # sends_model = False: zeroth-order scalars, FedAMD's anchor gradients); its update's
    # state is then {} and only its "rule-outputs" are checked
    replies_without_model: ClassVar[bool] = False

    def rule_config(self, server_round: int) -> dict[str, Any]:
        """The client rule's hyperparameters, sent in every train config."""
        return {}

    def rule_inputs(self, server_round: int) -> State | None:
        """Arrays the rule needs from the server (sent with the model; counted as traffic)."""
        return None

    def _messages(self, nodes: list[int], arrays: ArrayRecord, config: ConfigRecord,
                  mtype: str, server_round: int) -> list[Message]:
        """The same model and config to every node (one shared content: carried once)."""
        config["server-round"] = server_round
        content = payload(arrays, config)
        if mtype == MessageType.TRAIN and self.client_rule != "sgd":
            config[RULE_KEY] = self.client_rule
            for k, v in self.rule_config(server_round).items():
                config[k] = v
            inputs = self.rule_inputs(server_round)
            if inputs is not None:
                content[INPUTS_KEY] = to_record(inputs)
        return messages(((n, content) for n in nodes), mtype, str(server_round))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.global_state = from_record(arrays)
        nodes = self.sample(grid, self.fraction_train, self.min_train_nodes)
        return self._messages(nodes, arrays, config, MessageType.TRAIN, server_round)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if self.fraction_evaluate == 0.0:
            return []
        nodes = self.sample(grid, self.fraction_evaluate, 1)
        return self._messages(nodes, arrays, config, MessageType.EVALUATE, server_round)

    # --- aggregation
    def decode(self, server_round: int, replies: Iterable[Message]) -> list[ClientUpdate]:
        """Valid updates only: errors, non-finite and mis-shaped arrays are rejected."""
        updates, rejected = [], 0
        ref = None if self.global_state is None else shapes_of(self.global_state)
        for msg in replies:
            if msg.has_error():
                continue  # the platform counts and logs failures once per round
            arrays = first(msg.content, ArrayRecord)
            if arrays is None:
                rejected += 1
                continue
            state = from_record(arrays, copy=False)
            extra = msg.content.get(OUTPUTS_KEY)
            outputs = from_record(extra, copy=False) if isinstance(extra, ArrayRecord) else None
            model_ok = (not state and self.replies_without_model) or check_reply_record(
                ref, arrays, exact=True) is None
            if not model_ok or (outputs is not None and check_reply_record(
                    ref, extra) is not None):  # type: ignore[arg-type]
                rejected += 1
                continue
            metrics = first(msg.content, MetricRecord) or MetricRecord()
            updates.append(ClientUpdate(msg.metadata.src_node_id, state,
                                        float(metrics.get(self.weighted_by_key, 1.0)),
                                        {k: float(v) for k, v in metrics.items()
                                         if isinstance(v, int | float)}, outputs))
        if rejected:
            self.rejected[server_round] = self.rejected.get(server_round, 0) + rejected
        return updates

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        """New global state. Default: x + eta_g * sum_i w_i (x_i - x), w_i ~ num-examples."""
        total = sum(u.num_examples for u in updates)
        avg = weighted_sum([u.state for u in updates],
                           [u.num_examples / total for u in updates], global_state)
        return {k: (global_state[k] + self.params.server_lr * (avg[k] - global_state[k])).astype(
            global_state[k].dtype) for k in global_state}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        updates = self.decode(server_round, replies)
        if not updates or self.global_state is None:
            return None, None
        new_state = self.aggregate(server_round, self.global_state, updates)
        total = sum(u.num_examples for u in updates)
        metrics = {"train_loss": sum(u.metrics.get("train_loss", 0.0) * u.num_examples
                                     for u in updates) / total}
        return to_record(new_state), MetricRecord(metrics)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        ok = [m for m in replies if not m.has_error()]
        if not ok:
            return None
        recs = [first(m.content, MetricRecord) for m in ok]
        total = sum(float(r["num-examples"]) for r in recs)
        return MetricRecord({k: sum(float(r[k]) * float(r["num-examples"]) for r in recs) / total
                             for k in ("eval_loss", "eval_accuracy")})

    def round_metrics(self, server_round: int) -> dict[str, float]:
        return {"rejected_updates": float(self.rejected.get(server_round, 0)),
                "attempts": float(self.attempts.get(server_round, 0)),
                "round_skipped": float(server_round in self.skipped)}

    def summary(self) -> None:
        return None
