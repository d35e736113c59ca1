"""Asynchronous strategies on hand-computed event orders.

Three clients with durations 1 s, 2 s and 5 s (one local step of 1 s at speeds 1, 0.5 and
0.2) and a fake transport whose "training" returns the sent model plus 1, so every global
model below follows from the algorithm's rule by hand. Ties of arrival time go to the job
started first.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from flowerbed.core.arrays import from_record, to_record
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import build_params
from flowerbed.core.records import first
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import ensure_task_identity
from flowerbed.simulation.availability import Availability, Diurnal
from flowerbed.simulation.clock import Clock
from flowerbed.simulation.event_grid import EventGrid
from flowerbed.simulation.ledger import Ledger
from flowerbed.simulation.participation import Participation
from flowerbed.strategies.asynchronous import staleness_weight
from flowerbed.strategies.contract import Services
from flowerbed.strategies.registry import strategy_class
from tests.conftest import tiny


class PlusOne:
    """A transport whose clients return the model they were sent, plus 1."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, float]]] = []  # (client, sent w) per call

    def run(self, kind, items, timeout):
        out, batch = [], []
        for vid, content in items:
            state = from_record(first(content, ArrayRecord))
            batch.append((vid, float(state["w"][0])))
            out.append(RecordDict({"arrays": to_record({"w": state["w"] + 1.0}),
                                   "metrics": MetricRecord({"num-examples": 1.0,
                                                            "train_loss": 0.0})}))
        self.batches.append(batch)
        return out


class PlusJob(PlusOne):
    """Returns the sent model plus the job's number (its config's server-round: one per
    batch of starts), so every job's reply is told apart, even two of one client."""

    def run(self, kind, items, timeout):
        out = super().run(kind, items, timeout)
        for (_, content), reply in zip(items, out, strict=True):
            job = int(first(content, ConfigRecord)["server-round"])
            w = from_record(first(reply, ArrayRecord))["w"]
            reply["arrays"] = to_record({"w": w - 1.0 + job})
        return out


def setup(strategy: str, durations=(1.0, 2.0, 5.0), availability=None, transport=None,
          **params):
    ensure_task_identity()
    n = len(durations)
    cfg = parse_run_config(tiny(strategy=strategy, **{"num-clients": n, "step-seconds": 1.0,
                                                      "concurrency": n, **params}))
    clock = Clock(cfg, n)
    clock.profiles.speed = 1.0 / np.asarray(durations)
    transport = transport or PlusOne()
    grid = EventGrid(transport, n, Ledger(), Participation(n, 0), clock=clock,
                     availability=availability or Availability(n), steps=lambda k: 1)
    grid.begin_round(1)
    cls = strategy_class(strategy)
    strat = cls(build_params(cls.Params, cfg.values), Services(num_nodes=n, seed=0))
    seen: list[tuple[int, float, float]] = []  # (version, w, simulated time)

    def evaluate_fn(version, arrays):
        seen.append((version, float(from_record(arrays)["w"][0]), grid.now))
        grid.begin_round(version + 1)  # what the platform's round loop does

    def run(rounds: int):
        strat.start(grid, to_record({"w": np.zeros(1)}), num_rounds=rounds,
                    evaluate_fn=evaluate_fn)
        return seen

    return strat, grid, transport, run


def test_staleness_functions() -> None:
    poly = staleness_weight("polynomial", 0.5, 0.0)
    assert poly(0) == 1.0 and poly(3) == pytest.approx(0.5)  # (3 + 1)^-0.5
    hinge = staleness_weight("hinge", 10.0, 4.0)
    assert hinge(4) == 1.0 and hinge(5) == pytest.approx(1 / 11)  # 1 / (10 (5 - 4) + 1)
    assert staleness_weight("constant", 9.0, 9.0)(100) == 1.0


def test_fedasync_applies_every_reply_in_arrival_order() -> None:
    """alpha = 0.5, constant s. t=1: client 0 (sent v0 = 0) -> 0.5 (v1); it restarts on
    0.5. t=2: client 1 (v0, staleness 1) -> 0.5*0.5 + 0.5*1 = 0.75, then client 0 (v1,
    staleness 1, returns 1.5) -> 1.125; it restarts on 1.125. t=3: client 0 (staleness 0,
    returns 2.125) -> 1.625."""
    strat, _, transport, run = setup("fedasync", **{"async-alpha": 0.5,
                                                       "staleness": "constant"})
    seen = run(4)
    assert seen == [(0, 0.0, 0.0), (1, 0.5, 1.0), (2, 0.75, 2.0), (3, 1.125, 2.0),
                    (4, 1.625, 3.0)]
    assert strat.staleness_log == {1: [0], 2: [1], 3: [1], 4: [0]}
    # lazy batches: the three first starts together; then client 0's start on v1 and
    # client 1's on v2 trained together, each on its own model version
    assert transport.batches[:2] == [[(0, 0.0), (1, 0.0), (2, 0.0)], [(0, 0.5), (1, 0.75)]]


def test_fedasync_weighs_stale_replies_by_the_staleness_function() -> None:
    """Polynomial a = 1: client 1's reply at t=2 has staleness 1, alpha_t = 0.5 / 2."""
    _, _, _, run = setup("fedasync", **{"async-alpha": 0.5, "staleness": "polynomial",
                                        "staleness-a": 1.0})
    seen = run(2)
    assert seen[2] == (2, pytest.approx(0.75 * 0.5 + 0.25 * 1.0), 2.0)


def test_fedbuff_steps_every_k_replies_with_staleness_weights() -> None:
    """K = 2, eta_g = 1, s(t - tau) = 1 / (t - tau + 1). t=1: client 0 (Delta 1) buffered,
    restarts on v0. t=2: client 1 (Delta 1) -> x = 0 + (1 + 1) / 2 = 1 (v1); client 0
    (sent v0 at t=1, staleness 1, weight 1/2) buffered, restarts on v1. t=3: client 0
    (staleness 0) -> x = 1 + (0.5 + 1) / 2 = 1.75 (v2)."""
    strat, _, _, run = setup("fedbuff", **{"buffer-size": 2, "staleness": "polynomial",
                                           "staleness-a": 1.0})
    seen = run(2)
    assert seen == [(0, 0.0, 0.0), (1, 1.0, 2.0), (2, 1.75, 3.0)]
    assert strat.staleness_log == {1: [0, 0], 2: [1, 0]}


def test_fedfix_aggregates_every_window_weighting_slow_clients_up() -> None:
    """Delta t = 2, C = 3 (p_i = 1/3), d_i = (staleness + 1) / 3. Window [0, 2]: clients 0
    and 1 reply (staleness 0): x = 2/3. [2, 4]: they restart on 2/3 and reply again: 4/3.
    [4, 6]: client 2 (5 s on v0: ceil(5 / 2) = 3 windows = staleness 2 + 1) with d = 1, and
    clients 0, 1: x = 4/3 + 1 + 1/3 + 1/3 = 3."""
    strat, _, transport, run = setup("fedfix", **{"fix-interval-s": 2.0})
    seen = run(3)
    assert [v for v, _, _ in seen] == [0, 1, 2, 3]
    assert [w for _, w, _ in seen] == pytest.approx([0.0, 2 / 3, 4 / 3, 3.0])
    assert [t for _, _, t in seen] == [0.0, 2.0, 4.0, 6.0]
    assert strat.staleness_log == {1: [0, 0], 2: [0, 0], 3: [2, 0, 0]}
    # the window's restarts go out only at window ends, on the new model
    assert transport.batches[1] == [(0, pytest.approx(2 / 3)), (1, pytest.approx(2 / 3))]


def test_clients_start_only_when_online() -> None:
    """One client, online for the second half of every 10 s period: it starts at t=5 and
    its 1 s job arrives at t=6."""
    avail = Diurnal(1, 10.0, 0.5, seed=0)
    avail.phase = np.array([0.5])  # frac(t/10 + 0.5) < 0.5 <=> t mod 10 in [5, 10)
    _, grid, _, run = setup("fedasync", durations=(1.0,), availability=avail,
                            **{"async-alpha": 0.5, "staleness": "constant"})
    assert grid.get_node_ids() == []
    assert run(1)[1] == (1, 0.5, 6.0)


def test_async_runs_in_process_and_records_simulated_time(run) -> None:
    for name, extra in (("fedasync", {}), ("fedbuff", {"buffer-size": 3}),
                        ("fedfix", {"fix-interval-s": 2.0})):
        res = run(strategy=name, num_clients=8, num_server_rounds=4, step_seconds=1.0,
                  speed_spread=0.5, local_steps=2, concurrency=4, batch_size=8, **extra)
        times = [r["sim_time_s"] for r in res.records]
        assert len(res.records) == 5 and times == sorted(times) and times[-1] > 0
        assert res.summary["totals"]["sim_time_s"] == times[-1]
        assert sum(r["participants"] for r in res.records) >= 4
        assert all(np.isfinite(r["test_accuracy"]) for r in res.records)


@pytest.mark.parametrize("over, key", [
    ({}, "strategy"),  # no clock
    ({"step-seconds": 1.0, "round-deadline-s": 5.0}, "round-deadline-s"),
    ({"step-seconds": 1.0, "concurrency": 11}, "concurrency"),
])
def test_async_config_is_refused_clearly(over, key) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config(tiny(strategy="fedbuff", **over))
    assert err.value.key == key


def test_fedbuff_trains_its_k_buffered_replies_and_the_starts_between_in_one_call() -> None:
    """FedBuff defers reading replies until K have arrived, so one transport call trains
    every job started since the previous read. K = 2, C = 3, durations 1, 2, 5 s (ties go
    to the job started first):
    t=0 start 0, 1, 2 (v0). t=1: 0 arrives (deferred), restarts on v0 (finishes t=2).
    t=2: 1 arrives, the buffer is full: read -> train [0, 1, 2, 0] (C + K - 1 jobs), v1.
    1 restarts on v1 (finishes 4); 0's v0 restart arrives (trained), 0 restarts on v1
    (finishes 3). t=3: 0 arrives, read -> train [1, 0] (v2); 0 restarts on v2 (finishes 4).
    t=4: 1 (trained), 1 restarts on v2 (finishes 6); 0 -> train [0, 1] (v3). 0 restarts on
    v3 (finishes 5). t=5: 2's first job (trained), 2 restarts on v3 (finishes 10); 0 ->
    train [0, 2] (v4).
    Reading every reply at once (no deferral) would have trained [0, 1, 2] first."""
    _, grid, transport, run = setup("fedbuff", **{"buffer-size": 2})
    run(4)
    assert [[k for k, _ in b] for b in transport.batches] == [[0, 1, 2, 0], [1, 0], [0, 1],
                                                              [0, 2]]
    assert grid.batches == [4, 2, 2, 2]
    # each on the version it was sent: v0, v0, v0, v0 | v1, v1 | v2, v2 | v3, v3
    sent = [[w for _, w in b] for b in transport.batches]
    assert sent[0] == [0.0] * 4 and len({*sent[1]}) == len({*sent[2]}) == len({*sent[3]}) == 1


def test_fedbuff_worker_calls_train_about_k_clients(run, monkeypatch) -> None:
    """The same on the real worker (in-process, lognormal speeds, every client always
    busy: C = num-clients): each arrival frees one client and it restarts at once, so
    between two reads of the buffer exactly K jobs start. The first call trains the C
    initial jobs and the K - 1 restarts before the first read; every later call trains the
    K starts of each read since the last call (a read whose K replies all trained earlier
    trains nothing), a multiple of K. Spied on the worker's batched training call."""
    from flowerbed.clients import batched

    calls: list[int] = []
    pretrain = batched.pretrain

    def spy(kind, items, *args, **kwargs):
        if kind == "train":
            calls.append(len(items))
        return pretrain(kind, items, *args, **kwargs)

    monkeypatch.setattr(batched, "pretrain", spy)
    n, k, rounds = 24, 6, 8
    res = run(strategy="fedbuff", num_clients=n, concurrency=n, buffer_size=k,
              num_server_rounds=rounds, step_seconds=1.0, speed_spread=1.0, local_steps=2,
              batch_size=8, eval_every=rounds)
    assert calls[0] == n + k - 1
    assert len(calls) >= 2 and all(c % k == 0 for c in calls[1:]), calls
    # C + K * rounds - 1 jobs start before the last read (the last arrival's client is not
    # restarted): the calls train them all, but for those a read has not needed yet
    assert sum(calls) <= n + k * rounds - 1
    assert sum(r["participants"] for r in res.records) == k * rounds


def test_a_checkpointed_event_loop_continues_as_the_uninterrupted_one(tmp_path) -> None:
    """FedBuff K = 2 on the order traced above, checkpointed at version 2 (t = 3) through
    the checkpoint file format: in flight are client 2's first job and client 1's v1 job,
    both trained already (batches 1 and 2). A fresh strategy and grid loaded from it make
    versions 3 and 4 at the same times with the same models, and the transport trains only
    [0, 1] and [0, 2] (the trained replies are not trained again)."""
    from flowerbed.run import checkpoint

    ref, _, whole, run_whole = setup("fedbuff", **{"buffer-size": 2})
    want = run_whole(4)
    strat, grid, first, run_first = setup("fedbuff", **{"buffer-size": 2})
    assert run_first(2) == want[:3]
    checkpoint.save(tmp_path, {"strategy": strat.state_dict(), "grid": grid.state_dict()})
    doc = checkpoint.read(tmp_path / checkpoint.CHECKPOINT_FILE)
    assert [(j["node"], j["finish"], "reply" in j) for j in doc["grid"]["jobs"]] == [
        (1, 4.0, True), (2, 5.0, True)]
    # each job's sent model and config, and its reply's model and metrics
    assert len(doc["grid"]["records"]) == 8

    strat2, grid2, again, _ = setup("fedbuff", **{"buffer-size": 2})
    strat2.load_state_dict(doc["strategy"])
    grid2.load_state_dict(doc["grid"])
    seen: list[tuple[int, float, float]] = []

    def evaluate_fn(version, arrays):
        seen.append((version, float(from_record(arrays)["w"][0]), grid2.now))
        grid2.begin_round(version + 1)

    grid2.begin_round(3)
    strat2.start(grid2, to_record(strat.global_state), num_rounds=4, evaluate_fn=evaluate_fn,
                 first_round=3)
    assert seen == want[3:]
    assert again.batches == whole.batches[len(first.batches):]
    assert grid2.batches == [4, 2, 2, 2]
    assert strat2.staleness_log == ref.staleness_log == {1: [0, 0], 2: [1, 0], 3: [1, 0],
                                                          4: [3, 0]}


def test_each_job_gets_its_own_reply_when_its_client_restarted_in_the_same_batch() -> None:
    """FedBuff K = 2, constant s, durations 1, 2, 5 s; a job returns its sent model plus
    its job number (1 for the first starts, 2 for client 0's restart at t=1). The first
    read (t=2) trains client 0's arrived job and its restart together: the buffer gets
    client 0's delta 1 (job 1, not its restart's 2) and client 1's 1: x = (1 + 1) / 2 = 1.
    Client 1 restarts on v1 as job 3; client 0's restart arrives (delta 2) and it starts
    job 4 on v1, which arrives at t=3 (delta 4): x = 1 + (2 + 4) / 2 = 4."""
    _, _, transport, run = setup("fedbuff", transport=PlusJob(),
                                 **{"buffer-size": 2, "staleness": "constant"})
    seen = run(2)
    assert transport.batches[0] == [(0, 0.0), (1, 0.0), (2, 0.0), (0, 0.0)]
    assert seen == [(0, 0.0, 0.0), (1, 1.0, 2.0), (2, 4.0, 3.0)]
