"""Fault injection: the plan, the worker hook, the grid, and whole runs that survive it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from flowerbed.clients import worker
from flowerbed.clients.injected import CORRUPT, FAIL
from flowerbed.core.arrays import from_record, to_record
from flowerbed.core.validation import check_reply_arrays
from flowerbed.core.wire import reply_error, round_and_attempt, with_directive
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import ensure_task_identity, run_experiment
from flowerbed.simulation.faults import Fault, FaultPlan
from flowerbed.simulation.ledger import Ledger
from flowerbed.simulation.participation import Participation
from flowerbed.simulation.transport import InProcessTransport
from flowerbed.simulation.virtual_grid import (
    ERROR_CLIENT_FAILED,
    ERROR_CORRUPT,
    ERROR_LATE,
    ERROR_NO_REPLY,
    VirtualGrid,
)
from flowerbed.strategies.base import CentralizedStrategy
from flowerbed.strategies.contract import Services

torch.set_num_threads(1)  # 2 shared cores: more threads only fight

BASE = {"engine": "inprocess", "num-clients": 20, "fraction-train": 0.5, "local-epochs": 1,
        "wandb": False, "progress": False, "tracking": False}
SAMPLED = 10  # round(0.5 * 20) clients per attempt


def run(tmp_path=None, **over):
    raw = {**BASE, **over}
    if tmp_path is not None:
        raw.update({"tracking": True, "output-dir": str(tmp_path)})
    return run_experiment(parse_run_config(raw))


# --- the plan --------------------------------------------------------------------------------
def test_plan_is_deterministic_and_matches_rates():
    plan = FaultPlan(7, failure=0.1, dropout=0.2, straggler=0.15, corrupt=0.05)
    draws = [plan.fault(r, 0, c) for r in range(1, 41) for c in range(500)]
    assert draws == [plan.fault(r, 0, c) for r in range(1, 41) for c in range(500)]
    n = len(draws)  # 20,000 draws: binomial sd <= 0.0036, tolerance ~4 sd
    for kind, rate in ((Fault.FAILED, 0.1), (Fault.DROPPED, 0.2), (Fault.LATE, 0.15),
                       (Fault.CORRUPT, 0.05)):
        assert abs(draws.count(kind) / n - rate) < 0.015, kind
    assert abs(draws.count(None) / n - 0.5) < 0.015


def test_attempts_and_seeds_redraw():
    plan, other = FaultPlan(1, failure=0.5), FaultPlan(2, failure=0.5)
    first = [plan.fault(3, 0, c) for c in range(200)]
    assert first != [plan.fault(3, 1, c) for c in range(200)]
    assert first != [other.fault(3, 0, c) for c in range(200)]
    assert FaultPlan(1).fault(3, 0, 5) is None and not FaultPlan(1).active


def test_corrupt_updates_are_always_detected_and_leave_the_input_alone():
    state = {"w": np.ones((3, 4), np.float32), "b": np.zeros(4, np.float32)}
    shapes = {k: v.shape for k, v in state.items()}
    plan = FaultPlan(0, corrupt=0.9)
    for client in range(60):
        bad = plan.corrupt(state, 1, 0, client)
        assert check_reply_arrays(shapes, bad) is not None
    assert np.all(state["w"] == 1) and np.all(state["b"] == 0)
    assert check_reply_arrays(shapes, state) is None


def test_check_reply_arrays_cases():
    shapes = {"w": (2, 2)}
    assert "non-finite" in check_reply_arrays(shapes, {"w": np.array([[1, np.inf], [0, 0]])})
    assert "shape" in check_reply_arrays(shapes, {"w": np.zeros(4)})
    assert check_reply_arrays(shapes, {"other": np.zeros(4)}) is None  # not a sent name
    assert check_reply_arrays(None, {"w": np.zeros(4)}) is None
    assert check_reply_arrays(shapes, {"n": np.array([1, 2])}) is None  # integer arrays


# --- worker and grid ---------------------------------------------------------------------------
def _content(state, server_round=1, attempt=0):
    return RecordDict({"arrays": to_record(state), "config": ConfigRecord(
        {"server-round": server_round, "attempt": attempt})})


@pytest.fixture(scope="module")
def faulty_cfg():
    return parse_run_config({**BASE, "local-steps": 1, "failure-rate": 0.2,
                             "dropout-rate": 0.2, "straggler-rate": 0.2, "corrupt-rate": 0.2})


@pytest.fixture(scope="module")
def init_state(faulty_cfg):
    from flowerbed.clients.data import load_federation

    data = load_federation(faulty_cfg)
    from flowerbed.core.arrays import module_state

    return module_state(worker.skeleton(faulty_cfg, data))


def test_worker_obeys_the_simulations_directives(faulty_cfg, init_state):
    """The grid tells a node to fail or to corrupt its update; the node does."""
    plan = FaultPlan.from_config(faulty_cfg)
    content = _content(init_state, server_round=4)
    assert round_and_attempt(content) == (4, 0)
    actions = {Fault.FAILED: FAIL, Fault.CORRUPT: CORRUPT}
    faults = {c: plan.fault(4, 0, c) for c in range(20)}
    items = [(c, with_directive(content, actions[f]) if f in actions else content)
             for c, f in faults.items()]
    assert round_and_attempt(items[0][1]) == (4, 0)  # a directive does not hide the config
    replies = worker.handle("train", items, faulty_cfg)
    honest = dict(worker.handle("train", [(c, content) for c in range(20)], faulty_cfg))
    shapes = {k: v.shape for k, v in init_state.items()}
    for client, reply in replies:
        err = reply_error(reply)
        if faults[client] is Fault.FAILED:
            assert err is not None and err.startswith("InjectedFailure")
            continue
        assert err is None
        problem = check_reply_arrays(shapes, from_record(reply["arrays"]))
        assert (problem is not None) == (faults[client] is Fault.CORRUPT)
        if faults[client] is Fault.CORRUPT:  # the honest update, corrupted as planned
            want = plan.corrupt(from_record(honest[client]["arrays"]), 4, 0, client)
            got = from_record(reply["arrays"])
            assert got.keys() == want.keys()
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
    assert {Fault.FAILED, Fault.CORRUPT, None} <= set(faults.values())  # each kind seen
    assert "flowerbed.inject" not in content  # the strategy's message is left as it was


def test_grid_turns_every_fault_into_an_error_reply(faulty_cfg, init_state):
    ensure_task_identity()
    plan = FaultPlan.from_config(faulty_cfg)
    grid = VirtualGrid(InProcessTransport(faulty_cfg), 20, Ledger(), Participation(20, 0),
                       faults=plan, round_timeout=faulty_cfg.round_timeout)
    grid.begin_round(2)
    content = _content(init_state, server_round=2, attempt=1)
    msgs = [Message(content=content, dst_node_id=c, message_type=MessageType.TRAIN)
            for c in range(20)]
    replies = list(grid.send_and_receive(msgs))
    want_code = {Fault.FAILED: ERROR_CLIENT_FAILED, Fault.DROPPED: ERROR_NO_REPLY,
                 Fault.LATE: ERROR_LATE, Fault.CORRUPT: ERROR_CORRUPT}
    expected = {c: plan.fault(2, 1, c) for c in range(20)}
    assert len(replies) == 20
    for reply in replies:
        fault = expected[reply.metadata.src_node_id]
        if fault is None:
            assert not reply.has_error()
            assert "flowerbed.inject" not in reply.content
        else:
            assert reply.has_error() and reply.error.code == want_code[fault]
    stats = grid.round_stats(2)
    n = {k: sum(f is k for f in expected.values()) for k in Fault}
    assert (stats.failed, stats.dropped, stats.late, stats.corrupt) == (
        n[Fault.FAILED], n[Fault.DROPPED], n[Fault.LATE], n[Fault.CORRUPT])
    assert stats.failures == stats.injected == sum(n.values()) > 0
    assert stats.participants == 20 - stats.failures


def test_decode_rejects_nan_and_misshaped_updates():
    ensure_task_identity()
    strat = CentralizedStrategy(CentralizedStrategy.Params(), Services(num_nodes=1, seed=0))
    good = {"w": np.ones((2, 2), np.float32)}
    strat.global_state = good
    sent = Message(content=RecordDict({"arrays": to_record(good)}), dst_node_id=0,
                   message_type=MessageType.TRAIN)
    metrics = MetricRecord({"num-examples": 1.0, "train_loss": 0.5})

    def reply(state):
        return Message(RecordDict({"arrays": to_record(state),
                                   "metrics": metrics}), reply_to=sent)

    updates = strat.decode(3, [reply(good), reply({"w": np.full((2, 2), np.nan, np.float32)}),
                               reply({"w": np.ones(4, np.float32)})])
    assert len(updates) == 1 and strat.rejected[3] == 2


# --- whole runs --------------------------------------------------------------------------------
def _check_counts(result, rounds):
    recs = result.records[1:]
    assert [r["round"] for r in recs] == list(range(1, rounds + 1))
    for r in recs:  # every sampled client is either a participant or a counted failure
        assert r["participants"] + r["failures"] == SAMPLED * r["attempts"]
        assert r["failures"] == r["failed"] + r["dropped"] + r["late"] + r["corrupt"]
        assert r["faults_injected"] == r["failures"]
    tot = result.summary["totals"]
    for k in ("failed", "dropped", "late", "corrupt", "faults_injected", "failures"):
        assert tot[k] == sum(r[k] for r in recs)


def test_fedavg_converges_with_30_percent_failing_clients():
    result = run(**{"num-server-rounds": 10, "local-epochs": 2, "failure-rate": 0.3})
    _check_counts(result, 10)
    assert result.summary["totals"]["failed"] >= 15  # about 0.3 * 10 * 10 expected
    assert result.records[-1]["test_accuracy"] >= 0.85  # 0.1 at round 0


def test_every_fault_kind_in_one_run_keeps_the_model_finite(tmp_path):
    result = run(tmp_path, **{"num-server-rounds": 6, "local-epochs": 3, "failure-rate": 0.15,
                              "dropout-rate": 0.15, "straggler-rate": 0.15,
                              "corrupt-rate": 0.15})
    _check_counts(result, 6)
    tot = result.summary["totals"]
    assert min(tot["failed"], tot["dropped"], tot["late"], tot["corrupt"]) > 0
    assert all(np.isfinite(v).all() for v in result.final_state.values())
    assert result.records[-1]["test_accuracy"] > 0.5, [r["test_accuracy"] for r in result.records]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["totals"]["corrupt"] == tot["corrupt"]
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["late"] for ln in lines[1:]] == [r["late"] for r in
                                                            result.records[1:]]


def test_nan_updates_never_reach_the_global_model():
    result = run(**{"num-server-rounds": 5, "local-epochs": 2, "corrupt-rate": 0.6})
    assert result.summary["totals"]["corrupt"] >= 20  # about 0.6 * 10 * 5 expected
    assert all(np.isfinite(v).all() for v in result.final_state.values())
    assert result.records[-1]["test_accuracy"] > 0.3  # 0.1 at round 0: the good 40% trained


def test_too_few_replies_skip_the_round_and_keep_the_model():
    result = run(**{"num-server-rounds": 5, "local-steps": 3, "failure-rate": 0.7,
                    "min-replies": 5})
    recs = result.records
    skipped = [r for r in recs[1:] if r["round_skipped"]]
    assert skipped, "with 70% failures and min-replies 5 of 10 some round must be skipped"
    for r in skipped:  # the model did not move: same accuracy and loss as the round before
        prev = recs[r["round"] - 1]
        assert r["participants"] < 5 and r["attempts"] == 1
        assert (r["test_accuracy"], r["test_loss"]) == (prev["test_accuracy"], prev["test_loss"])
    assert result.summary["totals"]["round_skipped"] == len(skipped)


def test_too_few_replies_retry_with_new_clients():
    result = run(**{"num-server-rounds": 4, "local-steps": 3, "failure-rate": 0.5,
                    "min-replies": 6, "on-too-few": "retry", "max-retries": 2})
    recs = result.records[1:]
    _check_counts(result, 4)
    assert any(r["attempts"] > 1 for r in recs)
    for r in recs:
        good_last = r["participants"]  # participants over all attempts
        assert 1 <= r["attempts"] <= 3
        if r["round_skipped"]:
            assert r["attempts"] == 3
        else:
            assert good_last >= 6
    assert result.summary["totals"]["retries"] == sum(r["attempts"] - 1 for r in recs)
