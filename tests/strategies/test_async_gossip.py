"""Asynchronous gossip on Poisson clocks: the batched waves equal one tick after the other.

A fake grid whose "training" adds 1 to every parameter, so the reference below is the
paper's rule replayed tick by tick in NumPy: at node i's tick, x_i <- x_i + 1 (training),
then x_i, x_j <- (x_i + x_j) / 2.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from flowerbed.core.arrays import from_record, to_record
from flowerbed.core.params import build_params
from flowerbed.core.records import first
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import ensure_task_identity
from flowerbed.simulation.ledger import Ledger
from flowerbed.strategies.async_gossip import AsyncGossip, Ticks
from flowerbed.strategies.contract import Services
from tests.conftest import tiny


class PlusOneGrid:
    def __init__(self, n: int) -> None:
        self.n, self.calls = n, []

    def get_node_ids(self):
        return list(range(self.n))

    def send_and_receive(self, msgs, timeout=None):
        out, batch = [], []
        for m in msgs:
            state = from_record(first(m.content, ArrayRecord))
            batch.append(m.metadata.dst_node_id)
            out.append(Message(RecordDict({"arrays": to_record({"w": state["w"] + 1.0}),
                                           "metrics": MetricRecord({"num-examples": 1.0})}),
                               reply_to=m))
        self.calls.append(batch)
        return out


def build(n: int, **params) -> tuple[AsyncGossip, Ledger]:
    ensure_task_identity()
    cfg = parse_run_config(tiny(strategy="async-gossip", **{"num-clients": n, **params}))
    ledger = Ledger()
    strat = AsyncGossip(build_params(AsyncGossip.Params, cfg.values),
                        Services(num_nodes=n, seed=3, ledger=ledger))
    strat.like = {"w": np.zeros(1, np.float32)}
    strat.x = np.arange(n, dtype=np.float32)[:, None].copy()
    return strat, ledger


def replay(x0: np.ndarray, ticks: Ticks, train: bool) -> np.ndarray:
    x = x0.astype(np.float64).copy()
    for i, j in zip(ticks.nodes, ticks.peers, strict=True):
        if train:
            x[i] += 1.0
        if j >= 0:
            x[i] = x[j] = (x[i] + x[j]) / 2
    return x


@pytest.mark.parametrize("train", [True, False])
def test_waves_equal_sequential_ticks_and_count_two_messages_per_exchange(train) -> None:
    strat, ledger = build(8, topology="ring", **{"gossip-train": train, "gossip-round-s": 3.0})
    grid = PlusOneGrid(8)
    x0 = strat.x.copy()
    ledger.begin_round(1)
    strat.step(1, grid, 10.0)
    ticks = strat.last_ticks
    assert ticks is not None and len(ticks.nodes) > 8  # Poisson(8 * 1 * 3): ~24 ticks
    assert np.all(np.diff(ticks.times) >= 0) and ticks.times.max() < 3.0
    for i, j in zip(ticks.nodes, ticks.peers, strict=True):  # ring neighbours only
        assert (j - i) % 8 in (1, 7)
    np.testing.assert_allclose(strat.x, replay(x0, ticks, train), rtol=1e-6)
    assert ledger.round_summary(1)["messages"] == 2 * len(ticks.nodes)
    if train:  # every tick trained exactly once, in waves of distinct nodes
        assert sum(len(c) for c in grid.calls) == len(ticks.nodes)
        assert all(len(set(c)) == len(c) for c in grid.calls)
        assert len(grid.calls) < len(ticks.nodes)  # batched, not one call per tick
    else:
        assert grid.calls == []
        assert strat.x.mean() == pytest.approx(x0.mean())  # averaging keeps the sum


def test_waves_split_where_a_node_repeats() -> None:
    # (0,1) and (2,3) are disjoint; (1,2) meets both; (2,3) meets (1,2)
    ticks = Ticks(np.arange(4.0), np.array([0, 2, 1, 2]), np.array([1, 3, 2, 3]))
    assert AsyncGossip.waves_of(ticks) == [(0, 2), (2, 3), (3, 4)]


def test_round_lasts_its_simulated_span_in_a_run(run) -> None:
    records = run(**tiny(strategy="async-gossip", **{"num-clients": 6, "num-server-rounds": 2,
                                                     "gossip-round-s": 2.5, "local-steps": 1,
                                                     "step-seconds": 1.0})).records
    assert [r["sim_time_s"] for r in records] == pytest.approx([0.0, 2.5, 5.0])
    assert records[-1]["cum_bytes_p2p"] > 0
