"""Paris-style expert training: E experts on disjoint client groups, optionally merged.

Paris (Bagel Labs 2025, arXiv 2510.03434) and Decentralized Diffusion Models (McAllister et
al. 2025) cluster the data into E coherent partitions, train one expert per partition in
full isolation, and combine them at inference with a router trained to predict the
partition of an input. The simplified variant (the deep-ml exercise) averages the experts'
parameters every few rounds instead. Here:

- groups: client n belongs to expert g(n) -- ``partition``: g(n) = n mod E; ``cluster``:
  k-means on the clients' label distributions (a client's data "semantics" as far as the
  server may know them; Paris clusters input embeddings, which a federated server cannot);
- each round, expert e runs FedAvg within its group: a ``fraction-train`` sample of the
  group's *available* clients trains it from x_e, x_e <- x_e + eta_g sum_i w_i (x_i - x_e);
- ``sync-every`` = S > 0: after rounds S, 2S, ... every expert is replaced by the
  experts' parameter average (1/E) sum_e x_e;
- ``sync-every`` = 0: experts never exchange anything. A router r (the run's architecture
  with E outputs) is trained federatedly next to them: every client that trains its expert
  also trains r on its own inputs with its group id as the label (message key
  ``target-label``, honoured by the worker; ``router-epochs`` local epochs), and the server
  averages the router updates FedAvg-style. No client shares data or its expert with
  another group; the router costs one extra model exchange per participating client.
  Clients train the router with their usual model skeleton: parameters are passed
  functionally, so a last layer with E instead of num-classes outputs just works.
- evaluation: the platform evaluates the experts' average (1/E) sum_e x_e; the extra
  metrics give every expert's test accuracy and the routed ensemble's, whose prediction is
  sum_e p_r(e | x) softmax(f_e(x)) (``routing`` soft), renormalised over the top-k
  router probabilities (topk, ``routing-k``), or the top expert only (top1). With a
  router the run's primary metric is ``ensemble_accuracy``; without one, the average's.

Expert e starts from the run's model initialised with seed ``seed + e`` (the exercise's
"expert i uses seed i"), so expert 0 is the run's usual initial model.
All experts (and the router) travel through Flower's ``start()`` as one ArrayRecord with
keys ``expert<e>.<name>`` and ``router.<name>``; each client only receives its own expert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from torch.func import functional_call

from flowerbed.core.arrays import State, from_record, module_state, to_record
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import non_negative, one_of, param, positive
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate
from flowerbed.strategies.contract import Primary, Services, messages, payload

log = logging.getLogger(__name__)

ROUTER = "router"


def expert_groups(method: str, num_experts: int, num_nodes: int, seed: int,
                  label_counts: np.ndarray | None = None,
                  client_clusters: np.ndarray | None = None) -> np.ndarray:
    """g(n) for every client: ``partition`` (n mod E), ``cluster`` (k-means on the clients'
    label histograms) or ``data-cluster`` (the input-space cluster the kmeans partitioner
    gave the client's data: Paris' setting, where a router can tell the clusters apart)."""
    if num_nodes < num_experts:
        raise ConfigError("experts", num_experts, f"must be <= num-clients ({num_nodes})")
    if method == "partition":
        return np.arange(num_nodes) % num_experts
    if method == "data-cluster":
        if client_clusters is None:
            raise ConfigError("expert-groups", method,
                              "needs partitioner = 'kmeans' (clients of one input cluster each)")
        found = int(client_clusters.max()) + 1
        if found != num_experts:
            raise ConfigError("experts", num_experts,
                              f"must equal data-clusters ({found}) with data-cluster groups")
        return np.asarray(client_clusters, dtype=np.int64)
    if label_counts is None:
        raise ConfigError("expert-groups", method, "needs the clients' label counts")
    from sklearn.cluster import KMeans

    dist = label_counts / np.maximum(label_counts.sum(axis=1, keepdims=True), 1)
    groups = KMeans(n_clusters=num_experts, n_init=10, random_state=seed).fit_predict(dist)
    if len(np.unique(groups)) < num_experts:
        raise ConfigError("experts", num_experts, "k-means left an expert without clients "
                          "(fewer distinct label distributions than experts)")
    return groups.astype(np.int64)


def average(states: list[State]) -> State:
    return {k: np.mean([s[k] for s in states], axis=0).astype(states[0][k].dtype)
            for k in states[0]}


@dataclass(frozen=True)
class ParisParams(CentralizedParams):
    experts: int = param(4, "Paris: number of experts E", positive)
    sync_every: int = param(0, "Paris: average experts every this many rounds (0 = never)",
                            non_negative)
    expert_groups: str = param(
        "partition", "Paris: 'partition' (client i -> i mod E), 'cluster' (k-means on label "
        "histograms) or 'data-cluster' (the kmeans partitioner's clusters)",
        one_of("partition", "cluster", "data-cluster"))
    routing: str = param("soft", "Paris: router combination", one_of("soft", "top1", "topk"))
    routing_k: int = param(2, "Paris: k for top-k routing", positive)
    router_epochs: int = param(20, "Paris: router training epochs", positive)


class Paris(CentralizedStrategy):
    """E experts on disjoint client groups; see the module docstring."""

    Params = ParisParams
    state_fields = ("groups",)
    # unpacked from the round's global arrays (the base's state) before each use; a cache
    scratch_fields = ("experts", "router", "_evaluated", "_modules")
    # with a router (sync-every = 0) the run is judged by the routed ensemble, not by the
    # parameter average of unrelated experts (test_accuracy); see primary()
    primary_metric = "ensemble_accuracy"
    primary_label = "routed ensemble accuracy"
    companion_metrics = ("averaged_accuracy", "router_accuracy")

    def __init__(self, params: ParisParams, services: Services) -> None:
        super().__init__(params, services)
        self.groups = expert_groups(params.expert_groups, params.experts, services.num_nodes,
                                    services.seed, services.label_counts,
                                    services.client_clusters)
        self.num_experts = int(self.groups.max()) + 1
        self.experts: list[State] = []
        self.router: State | None = None
        self._evaluated: State | None = None
        self._modules: dict[int, torch.nn.Module] = {}
        # the test inputs' true group, when groups are input-space clusters
        self.router_target = (services.test_clusters if params.expert_groups == "data-cluster"
                              else None)

    @classmethod
    def check_params(cls, params: ParisParams, num_nodes: int) -> None:
        super().check_params(params, num_nodes)
        if params.experts > num_nodes:
            raise ConfigError("experts", params.experts, f"must be <= num-clients ({num_nodes})")

    @property
    def has_router(self) -> bool:
        """Whether start() trains a router, so the ensemble is evaluated (round_metrics)."""
        return (self.params.sync_every == 0 and self.services.build_model is not None
                and self.services.test_data is not None)

    def primary(self) -> Primary:
        if self.has_router:
            return super().primary()
        # no router: the experts' parameter average is the model (periodic averaging)
        return Primary("test_accuracy", "experts' average accuracy")

    # --- the experts (and router) as one ArrayRecord
    def pack(self) -> State:
        out = {f"expert{e}.{k}": v for e, s in enumerate(self.experts) for k, v in s.items()}
        if self.router is not None:
            out.update({f"{ROUTER}.{k}": v for k, v in self.router.items()})
        return out

    def unpack(self, state: State) -> tuple[list[State], State | None]:
        experts: list[State] = [{} for _ in range(self.num_experts)]
        router: State = {}
        for key, v in state.items():
            prefix, _, name = key.partition(".")
            if prefix == ROUTER:
                router[name] = v
            else:
                experts[int(prefix.removeprefix("expert"))][name] = v
        return experts, router or None

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              first_round: int = 1) -> Result:
        """Expand the run's single initial model into E experts (and a router).

        Arrays that already hold the experts (a resumed run, ``first_round`` > 1, which
        the platform's start loop supports) are taken as they are.
        """
        base = from_record(initial_arrays)
        resume = {"first_round": first_round} if first_round != 1 else {}
        if next(iter(base), "").startswith("expert0."):
            self.experts, self.router = self.unpack(base)
            return super().start(grid, initial_arrays, num_rounds, timeout, train_config,
                                 evaluate_config, evaluate_fn, **resume)
        build = self.services.build_model
        seed = self.services.seed
        self.experts = [module_state(build(seed + e, self.num_classes)) if build
                        else dict(base) for e in range(self.num_experts)]
        if self.params.sync_every == 0 and build is not None:
            self.router = module_state(build(seed + self.num_experts, self.num_experts))
        return super().start(grid, to_record(self.pack()), num_rounds, timeout, train_config,
                             evaluate_config, evaluate_fn, **resume)

    # --- one round
    def _group_sample(self, available: list[int], fraction: float, minimum: int
                      ) -> dict[int, list[int]]:
        chosen = {}
        for e in range(self.num_experts):
            nodes = [n for n in available if self.groups[n] == e]
            if not nodes:
                continue
            k = min(len(nodes), max(minimum, round(fraction * len(nodes))))
            chosen[e] = sorted(nodes[i] for i in self.rng.choice(len(nodes), k, replace=False))
        return chosen

    def _config(self, config: ConfigRecord, server_round: int, **extra: Any) -> ConfigRecord:
        out = ConfigRecord(dict(config))
        out["server-round"] = server_round
        for k, v in extra.items():
            out[k] = v
        return out

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.experts, self.router = self.unpack(from_record(arrays))
        chosen = self._group_sample(sorted(grid.get_node_ids()), self.fraction_train,
                                    self.min_train_nodes)
        cfg = self._config(config, server_round)
        router_rec = to_record(self.router) if self.router is not None else None
        out: list[Message] = []
        for e, nodes in chosen.items():
            content = payload(to_record(self.experts[e]), cfg)
            out += messages(((n, content) for n in nodes), MessageType.TRAIN,
                            f"{server_round}/expert{e}")
            if router_rec is not None:
                rcfg = self._config(config, server_round, **{
                    "target-label": e, "local-epochs": self.params.router_epochs,
                    "local-steps": 0})
                rcontent = payload(router_rec, rcfg)
                out += messages(((n, rcontent) for n in nodes), MessageType.TRAIN,
                                f"{server_round}/{ROUTER}")
        return out

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Federated evaluation: each sampled client evaluates its own expert."""
        if self.fraction_evaluate == 0.0:
            return []
        experts, _ = self.unpack(from_record(arrays))
        chosen = self._group_sample(sorted(grid.get_node_ids()), self.fraction_evaluate, 1)
        cfg = self._config(config, server_round)
        out: list[Message] = []
        for e, nodes in chosen.items():
            content = payload(to_record(experts[e]), cfg)
            out += messages(((n, content) for n in nodes), MessageType.EVALUATE,
                            f"{server_round}/expert{e}")
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        by_model: dict[str, list[Message]] = {}
        for msg in replies:
            by_model.setdefault(msg.metadata.group_id.split("/", 1)[-1], []).append(msg)
        expert_updates: list[ClientUpdate] = []
        for e in range(self.num_experts):
            self.global_state = self.experts[e]  # decode() checks shapes against it
            updates = self.decode(server_round, by_model.get(f"expert{e}", []))
            if updates:  # FedAvg within the group
                self.experts[e] = self.aggregate(server_round, self.experts[e], updates)
                expert_updates += updates
        if self.router is not None:
            self.global_state = self.router
            updates = self.decode(server_round, by_model.get(ROUTER, []))
            if updates:
                self.router = self.aggregate(server_round, self.router, updates)
        if self.params.sync_every and server_round % self.params.sync_every == 0:
            merged = average(self.experts)
            self.experts = [dict(merged) for _ in range(self.num_experts)]
        metrics = None
        if expert_updates:
            total = sum(u.num_examples for u in expert_updates)
            metrics = MetricRecord({"train_loss": sum(
                u.metrics.get("train_loss", 0.0) * u.num_examples for u in expert_updates)
                / total})
        return to_record(self.pack()), metrics

    # --- evaluation
    def evaluation_state(self, state: State) -> State:
        """The experts' parameter average (what a single merged model would be)."""
        self._evaluated = state
        experts, _ = self.unpack(state)
        return average(experts)

    @property
    def num_classes(self) -> int:
        assert self.services.label_counts is not None
        return int(self.services.label_counts.shape[1])

    def _logits(self, state: State, x: np.ndarray, num_outputs: int) -> torch.Tensor:
        assert self.services.build_model is not None
        if num_outputs not in self._modules:
            self._modules[num_outputs] = self.services.build_model(0, num_outputs)
        module = self._modules[num_outputs]
        params = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()}
        with torch.no_grad():
            return functional_call(module, params, (torch.from_numpy(x.astype(np.float32)),))

    def ensemble_probabilities(self, experts: list[State], router: State, x: np.ndarray
                               ) -> np.ndarray:
        """sum_e p_r(e | x) softmax(f_e(x)), with the router weights soft, top-k or top-1."""
        gate = torch.softmax(self._logits(router, x, self.num_experts), dim=1)
        routing = self.params.routing
        k = {"soft": self.num_experts, "top1": 1}.get(
            routing, min(self.params.routing_k, self.num_experts))
        if k < self.num_experts:
            top = torch.topk(gate, k, dim=1).indices
            gate = torch.zeros_like(gate).scatter(1, top, gate.gather(1, top))
            gate = gate / gate.sum(dim=1, keepdim=True)
        probs = torch.stack([torch.softmax(self._logits(s, x, self.num_classes), dim=1)
                             for s in experts], dim=1)
        return (gate.unsqueeze(2) * probs).sum(dim=1).numpy()

    def round_metrics(self, server_round: int) -> dict[str, float]:
        out = super().round_metrics(server_round)
        evaluate, state = self.services.evaluate, self._evaluated
        due = (server_round in (0, self.services.num_rounds)
               or server_round % self.services.eval_every == 0)
        if not due or evaluate is None or state is None:
            return out
        experts, router = self.unpack(state)
        for e, s in enumerate(experts):
            out[f"expert{e}_accuracy"] = evaluate(s)["accuracy"]
        out["averaged_accuracy"] = evaluate(average(experts))["accuracy"]
        if router is not None and self.services.test_data is not None:
            x, y = self.services.test_data
            p = self.ensemble_probabilities(experts, router, x)
            out["ensemble_accuracy"] = float(np.mean(p.argmax(axis=1) == y))
            out["ensemble_loss"] = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
            target = self.router_target
            if target is not None:  # the router should name each test input's cluster
                guess = self._logits(router, x, self.num_experts).argmax(dim=1).numpy()
                out["router_accuracy"] = float(np.mean(guess == target))
        return out
