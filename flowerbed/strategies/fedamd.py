"""FedAMD, anchor sampling (Wu, Guo, Qu, He, Liu, Gao, "Anchor Sampling for Federated
Learning with Partial Client Participation", ICML 2023): the server half (the two client
roles are :mod:`flowerbed.clients.rules.fedamd`).

Pinned to the authors' code (github.com/HarliWu/FedAMD, ``main_emnist.py`` ``run`` with
``--method FedAMD`` and ``algo/fedamd.py``):

- Before training every client computes its *bullseye* b_i, the gradient of its loss at x_0
  on its whole local dataset. Here that is the warm-up: in the first
  ``anchor-warmup-rounds`` rounds *every available client* (not a sample) is an anchor and
  x does not move.
- Round t samples S from the available clients as FedAvg does; each sampled client is an
  anchor with probability ``anchor-probability``, otherwise a miner.
- Anchors get ``local-steps = 1`` and a batch of ``anchor-batch-size`` (0: the whole local
  dataset, the authors' default) and return b_i = grad f_i(x; B) (no model); the server
  replaces that client's bullseye. The miners' target is g = the mean of the kept
  bullseyes, fixed at the start of the round (this round's anchors count from the next).
- Miners run K small-batch SARAH steps from x started at g and return y_i; the server sets
  x <- x + eta_g (1/|M|) sum_{i in M} (y_i - x), a *uniform* mean over the miners M, as
  the authors' code does (not weighted by num-examples). A round without miners leaves x
  unchanged (it only refreshes bullseyes).

Traffic: a miner downloads x and g (two models) and uploads one; an anchor downloads x
and uploads a gradient (one model each way). The ledger counts exactly that.

Not followed: the code's learning-rate halving at T/2 and 3T/4 (a schedule it applies to
every method alike), its deterministic variant (anchors every 1/p rounds) and the
"--lr-global-divided" option (dividing y_i - x by the step count), which its argument
parser does not define, so we take it as off. The initial bullseyes cost a round here
(the code computes them outside its T rounds). With fewer clients than ever sampled
(participation filters), g averages the clients that have a bullseye; the code averages
all clients, every one of which has one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType
from flwr.serverapp import Grid

from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.params import non_negative, param, unit_interval
from flowerbed.core.rng import Stream, stream
from flowerbed.core.wire import INPUTS_KEY, RULE_KEY
from flowerbed.strategies.averaging import weighted_sum
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate
from flowerbed.strategies.contract import messages, payload

FULL_BATCH = 2**31 - 1  # a batch size every client caps at its data size


@dataclass(frozen=True)
class FedAMDParams(CentralizedParams):
    anchor_probability: float = param(0.2, "FedAMD: chance that a sampled client is an "
                                      "anchor (large-batch gradient) this round",
                                      unit_interval)
    anchor_batch_size: int = param(0, "FedAMD: an anchor's batch size (0 or more than its "
                                   "data: its whole dataset, the full local gradient)",
                                   non_negative)
    anchor_warmup_rounds: int = param(1, "FedAMD: first rounds in which every available "
                                      "client is an anchor (initial bullseyes; x unchanged)",
                                      non_negative)


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
        if server_round <= self.params.anchor_warmup_rounds:
            nodes = sorted(int(n) for n in grid.get_node_ids())  # every client's bullseye
        else:
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
                                "batch-size": self.params.anchor_batch_size or FULL_BATCH,
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
        # the authors' code: a uniform mean of the miners' changes, not by num-examples
        avg = weighted_sum([u.state for u in miners], [1.0 / len(miners)] * len(miners),
                           global_state)
        eta_g = self.params.server_lr
        return {k: (global_state[k] + eta_g * (avg[k] - global_state[k])).astype(
            global_state[k].dtype) for k in global_state}
