"""FedFix (Fraboni, Vidal, Kameni, Lorenzi, "A General Theory for Federated Optimization with
Asynchronous and Heterogeneous Clients Updates", JMLR 24(110), 2023, arXiv 2206.10189).

The server aggregates at fixed times: every Delta t seconds of (simulated) time
(``fix-interval-s``) it builds the new global model from the replies that arrived in the
window, and only the clients that replied are sent the new model (the others keep training
on their older version). With x_tau_i the version client i was sent,

    x <- x + eta_g * sum_{i replied} d_i (x_i - x_tau_i),   d_i = ceil(T_i / Delta t) p_i,

T_i the client's computation time and p_i its importance. A client started at a window's
start returns ceil(T_i / Delta t) windows later, so ceil(T_i / Delta t) = staleness + 1 and
the strategy needs no device profile. This is the "weight" policy of the official code
(Accenture/Labs-Federated-Learning, FL/server.py ``clients_importances``/``aggregation``,
FL/clients_schedule.py), which weighs a slow client up by the windows its work spans, so
the expected step is unbiased for the federated objective. There every client always works
and p_i = 1/M (uniform); here C = ``concurrency`` clients work at a time, so p_i = 1/C (=
1/M when all clients work). A window without replies is a server round that changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.params import param, positive
from flowerbed.strategies.asynchronous import AsyncParams, AsyncStrategy, delta
from flowerbed.strategies.base import ClientUpdate


@dataclass(frozen=True)
class FedFixParams(AsyncParams):
    fix_interval_s: float = param(60.0, "fedfix: simulated seconds Delta t between server "
                                  "aggregations", positive)


class FedFix(AsyncStrategy):
    """Aggregate every Delta t of simulated time (module docstring)."""

    Params = FedFixParams

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              first_round: int = 1) -> Result:
        events = self._events(grid)
        result = Result()
        if not self.resumed(first_round, initial_arrays):
            self.global_state = from_record(initial_arrays)
            if evaluate_fn:
                evaluate_fn(0, initial_arrays)
        while self.version < num_rounds:
            self.fill(events)  # at a window's start only
            if events.in_flight() == 0:
                if not events.wait_for_clients():
                    break
                continue
            end = events.now + self.params.fix_interval_s
            window: list[tuple[ClientUpdate, State, int]] = []
            while (reply := events.next_arrival(until=end)) is not None:
                node = reply.metadata.src_node_id
                tau = self.sent.pop(node)
                updates = self.decode(self.version + 1, [reply])
                if updates:
                    window.append((updates[0], self.models[tau], self.version - tau))
            self.global_state = self.aggregate_window(window)
            for _, _, s in window:
                self.staleness_log.setdefault(self.version + 1, []).append(s)
            self.version += 1
            held = set(self.sent.values())
            self.models = {v: m for v, m in self.models.items() if v in held}
            if evaluate_fn:
                evaluate_fn(self.version, to_record(self.global_state))
        result.arrays = to_record(self.global_state)
        return result

    def weight(self, staleness: int) -> float:
        """d_i = (staleness + 1) p_i, p_i = 1 / C."""
        return (staleness + 1) / self.params.concurrency

    def aggregate_window(self, window: list[tuple[ClientUpdate, State, int]]) -> State:
        x = self.global_state
        assert x is not None
        if not window:
            return x
        total = {k: np.zeros(np.shape(v), dtype=np.float64) for k, v in x.items()}
        for update, sent, staleness in window:
            d, w = delta(update, sent), self.weight(staleness)
            for k in total:
                total[k] += w * d[k]
        eta = self.params.server_lr
        return {k: (x[k] + eta * total[k]).astype(x[k].dtype) for k in x}
