"""FedAU (Wang & Ji, NeurIPS 2023, arXiv 2306.03401): unknown, heterogeneous participation.

Clients participate with unknown probabilities p_n; plain FedAvg over the participants
then optimises a p-weighted objective instead of (1/N) sum_n F_n. FedAU estimates 1/p_n
online from each client's participation intervals and weights its update by it. As in the
official code (IBM/fedau, ``main.py``, weighting 'adaptive'), every round:

1. every *available* client trains (no sampling: ``fraction-train`` does not apply) and
   returns Delta_n = x_n - x;
2. a participating client n gets omega_n = mean(intervals_n), or 1 if it has none yet;
   then the interval gap_n + 1 is recorded (it counts from the next round) and gap_n = 0;
3. a client that did not participate (not among the valid replies) has gap_n += 1; once
   gap_n reaches the cutoff K (``fedau-cutoff``) it is recorded as an interval, gap_n = 0;
4. x <- x + eta_g (1/N) sum_n omega_n Delta_n, N = *all* clients, not the participants.

The intervals are kept as a running sum and count (same mean as the official list).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.params import param, positive
from flowerbed.strategies.averaging import weighted_sum
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate
from flowerbed.strategies.contract import Services

log = logging.getLogger(__name__)


class AllClientsAverage(CentralizedStrategy):
    """Every available client trains; x <- x + eta_g (1/N) sum_n omega_n Delta_n.

    Subclasses define :meth:`omega` (the per-participant weights of one round).
    """

    state_fields = ("last_omega",)  # reported in round_metrics, so it is state too

    def __init__(self, params: Any, services: Services) -> None:
        super().__init__(params, services)
        if params.fraction_train != 1.0:
            log.info("%s trains every available client; fraction-train = %s does not apply",
                     type(self).__name__, params.fraction_train)
        self.last_omega: dict[int, float] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.global_state = from_record(arrays)
        nodes = sorted(int(n) for n in grid.get_node_ids())
        return self._messages(nodes, arrays, config, MessageType.TRAIN, server_round)

    def omega(self, server_round: int, participants: list[int]) -> dict[int, float]:
        raise NotImplementedError

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        omega = self.omega(server_round, [u.node_id for u in updates])
        scale = self.params.server_lr / self.services.num_nodes
        coef = [scale * omega[u.node_id] for u in updates]  # x + sum_n c_n (x_n - x)
        moved = weighted_sum([u.state for u in updates], coef, global_state)
        new = {k: v.astype(np.float64) * (1.0 - sum(coef)) + moved[k]
               for k, v in global_state.items()}
        self.last_omega = omega
        return {k: v.astype(global_state[k].dtype) for k, v in new.items()}

    def on_round_skipped(self, server_round: int) -> None:
        self.omega(server_round, [])  # a round without participants still counts

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        updates = self.decode(server_round, replies)
        if not updates:  # nobody participated: still a round of non-participation
            self.omega(server_round, [])
            return None, None
        if self.global_state is None:
            return None, None
        new_state = self.aggregate(server_round, self.global_state, updates)
        total = sum(u.num_examples for u in updates)
        loss = sum(u.metrics.get("train_loss", 0.0) * u.num_examples for u in updates) / total
        return to_record(new_state), MetricRecord({"train_loss": loss})


@dataclass(frozen=True)
class FedAUParams(CentralizedParams):
    fedau_cutoff: int = param(100000, "FedAU: cutoff K of the participation-interval "
                              "estimate", positive)


class FedAU(AllClientsAverage):
    """FedAU; see the module docstring."""

    Params = FedAUParams
    state_fields = ("gap", "interval_sum", "interval_count")

    def __init__(self, params: FedAUParams, services: Services) -> None:
        super().__init__(params, services)
        n = services.num_nodes
        self.gap = np.zeros(n, dtype=np.int64)  # rounds since last participation
        self.interval_sum = np.zeros(n, dtype=np.float64)
        self.interval_count = np.zeros(n, dtype=np.int64)

    def omega(self, server_round: int, participants: list[int]) -> dict[int, float]:
        """This round's weights; then records the round's participation (steps 2-3)."""
        part = np.zeros(len(self.gap), dtype=bool)
        part[participants] = True
        has = self.interval_count > 0
        weights = np.where(has, self.interval_sum / np.maximum(self.interval_count, 1), 1.0)
        omega = {n: float(weights[n]) for n in participants}
        # participants: record the completed interval gap + 1, reset the gap
        self.interval_sum[part] += self.gap[part] + 1
        self.interval_count[part] += 1
        self.gap[part] = 0
        # the others: one more round away; at the cutoff K, record K and start over
        self.gap[~part] += 1
        cut = ~part & (self.gap >= self.params.fedau_cutoff)  # K
        self.interval_sum[cut] += self.gap[cut]
        self.interval_count[cut] += 1
        self.gap[cut] = 0
        return omega

    def round_metrics(self, server_round: int) -> dict[str, float]:
        out = super().round_metrics(server_round)
        if self.last_omega:
            out["fedau_mean_omega"] = float(np.mean(list(self.last_omega.values())))
        return out
