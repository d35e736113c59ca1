"""FedAMD, anchor sampling (Wu, Guo, Qu, He, Liu, Gao, "Anchor Sampling for Federated
Learning with Partial Client Participation", ICML 2023): the server half (the two client
roles are :mod:`flowerbed.clients.rules.fedamd`).

Round t samples S from the available clients as FedAvg does, then splits it: each sampled
client is an *anchor* with probability ``anchor-probability`` (every one of them in the
first ``anchor-warmup-rounds`` rounds, so that a target exists: the paper's time-varying
"sequential" probabilities start that way), otherwise a *miner*.

- Anchors get ``batch-size = anchor-batch-size`` and ``local-steps = 1`` in their train
  config and return their bullseye b_i = grad f_i(x; B) (no model). The server keeps each
  client's latest b_i and the target g = mean of the kept b_i (over the clients that have
  one), sent to the miners as ``rule-inputs``.
- Miners run K small-batch variance-reduced steps from x guided by g and return y_i; the
  server sets x <- x + eta_g sum_{i in miners} w_i (y_i - x) (w_i ~ num-examples). A round
  without miners leaves x unchanged (it only refreshes bullseyes).

Traffic: a miner downloads x and g (two models) and uploads one; an anchor downloads x
and uploads a gradient (one model each way). The ledger counts exactly that.

Not verified (see the client rules): the paper's exact miner recursion, its averaging
weights and whether g averages all clients (with never-sampled ones at zero) or only the
ones with a bullseye (our choice); no official code was found in the stored index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType
from flwr.serverapp import Grid

from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.params import non_negative, param, positive, unit_interval
from flowerbed.core.rng import Stream, stream
from flowerbed.core.wire import INPUTS_KEY, RULE_KEY
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate
from flowerbed.strategies.contract import messages, payload


@dataclass(frozen=True)
class FedAMDParams(CentralizedParams):
    anchor_probability: float = param(0.2, "FedAMD: chance that a sampled client is an "
                                      "anchor (large-batch gradient) this round",
                                      unit_interval)
    anchor_batch_size: int = param(256, "FedAMD: an anchor's batch size (capped at its "
                                   "data size: full gradient)", positive)
    anchor_warmup_rounds: int = param(1, "FedAMD: first rounds in which every sampled "
                                      "client is an anchor", non_negative)


class FedAMD(CentralizedStrategy):
    """FedAMD; see the module docstring."""

    Params = FedAMDParams
    state_fields = ("bullseyes",)
    client_rule = "fedamd-miner"
    replies_without_model = True  # anchors send a gradient, not a model

    def __init__(self, params: Any, services: Any) -> None:
        super().__init__(params, services)
        self.bullseyes: dict[int, State] = {}  # client -> its latest large-batch gradient

    def roles(self, server_round: int, attempt: int, nodes: list[int]) -> np.ndarray:
        """True for the anchors among ``nodes`` (seeded by round and attempt)."""
        if server_round <= self.params.anchor_warmup_rounds:
            return np.ones(len(nodes), dtype=bool)
        rng = stream(self.services.seed, Stream.ANCHOR_ROLES, server_round, attempt)
        return rng.random(len(nodes)) < self.params.anchor_probability

    def target(self) -> State:
        """g: the mean of the kept bullseyes (zero before any)."""
        assert self.global_state is not None
        if not self.bullseyes:
            return {k: np.zeros_like(v, dtype=np.float32) for k, v in self.global_state.items()}
        kept = list(self.bullseyes.values())
        return {k: np.mean([b[k] for b in kept], axis=0).astype(np.float32)
                for k in self.global_state}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.global_state = from_record(arrays)
        nodes = self.sample(grid, self.fraction_train, self.min_train_nodes)
        anchor = self.roles(server_round, int(config.get("attempt", 0)), nodes)
        out: list[tuple[int, Any]] = []
        miners = [n for n, a in zip(nodes, anchor, strict=True) if not a]
        anchors = [n for n, a in zip(nodes, anchor, strict=True) if a]
        if miners:
            cfg = ConfigRecord({**dict(config), "server-round": server_round,
                                RULE_KEY: "fedamd-miner"})
            content = payload(arrays, cfg)
            content[INPUTS_KEY] = to_record(self.target())
            out += [(n, content) for n in miners]
        if anchors:
            cfg = ConfigRecord({**dict(config), "server-round": server_round,
                                RULE_KEY: "fedamd-anchor",
                                "batch-size": self.params.anchor_batch_size,
                                "local-steps": 1})
            content = payload(arrays, cfg)
            out += [(n, content) for n in anchors]
        return messages(out, MessageType.TRAIN, str(server_round))

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        for u in updates:
            if not u.state and u.outputs is not None:  # an anchor's bullseye
                self.bullseyes[u.node_id] = {k: np.array(u.outputs[k], np.float32)
                                             for k in global_state}
        miners = [u for u in updates if u.state]
        if not miners:
            return global_state
        return super().aggregate(server_round, global_state, miners)
