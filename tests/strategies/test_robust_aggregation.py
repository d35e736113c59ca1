"""Centralized robust aggregation: geometric median (RFA), centered clipping, the Flag
Aggregator on hand-computed cases; Flower's Krum holds against sign flip where FedAvg
does not; whom Flower's Krum, MultiKrum and Bulyan let through; each defence runs end to
end under an attack."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from flowerbed.core.rng import Stream, stream
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import ensure_task_identity, run_experiment
from flowerbed.strategies.base import ClientUpdate
from flowerbed.strategies.centered_clipping import CenteredClipping, centered_clip
from flowerbed.strategies.contract import Services, build
from flowerbed.strategies.flag import flag_aggregate, sine_objective
from flowerbed.strategies.geometric_median import GeometricMedian, smoothed_weiszfeld
from flowerbed.strategies.registry import strategy_class
from tests.conftest import tiny

torch.set_num_threads(1)
FLOWER = "flwr.serverapp.strategy:"


def test_geometric_median_is_the_median_on_a_line_and_weighted():
    pts = np.array([[0.0], [1.0], [10.0]])
    v = smoothed_weiszfeld(pts, np.full(3, 1 / 3), iterations=500, nu=1e-9)
    assert v[0] == pytest.approx(1.0, abs=1e-3)  # the mean would be 11/3
    # weight 0.6 on 0: more than half the mass, so the weighted median is 0
    v = smoothed_weiszfeld(pts, np.array([0.6, 0.2, 0.2]), iterations=500, nu=1e-9)
    assert v[0] == pytest.approx(0.0, abs=1e-3)


def test_geometric_median_of_a_square_ignores_a_far_outlier_mostly():
    square = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    v = smoothed_weiszfeld(square, np.full(4, 0.25), iterations=50, nu=1e-9)
    np.testing.assert_allclose(v, [0.0, 0.0], atol=1e-9)  # the centre, by symmetry
    pts = np.vstack([square, [[1000.0, 1000.0]]])
    v = smoothed_weiszfeld(pts, np.full(5, 0.2), iterations=200, nu=1e-9)
    assert np.linalg.norm(v) < 1.0  # the mean is at (200, 200)


def test_one_weiszfeld_step_by_hand():
    # points 0 and 4 (1-D), start at the mean 2: both at distance 2 -> equal beta -> 2;
    # with a third point 8 weighted 0: still 2 (beta_3 = 0)
    pts = np.array([[0.0], [4.0], [8.0]])
    v = smoothed_weiszfeld(pts, np.array([0.5, 0.5, 0.0]), iterations=1, nu=1e-9)
    assert v[0] == pytest.approx(2.0)
    # from the mean 4/3 of {0, 0, 4}: betas 1/(4/3), 1/(4/3), 1/(8/3) -> v = 4 * (3/8) /
    # (3/4 + 3/4 + 3/8) = 1.5 / 1.875 = 0.8
    pts = np.array([[0.0], [0.0], [4.0]])
    v = smoothed_weiszfeld(pts, np.full(3, 1 / 3), iterations=1, nu=1e-9)
    assert v[0] == pytest.approx(0.8)


def test_centered_clipping_by_hand():
    pts = np.array([[3.0, 0.0], [0.0, 0.5]])
    # L = 1 from 0, tau = 1: (3, 0) is clipped to (1, 0), (0, 0.5) is kept: the mean
    np.testing.assert_allclose(centered_clip(pts, np.zeros(2), 1.0, 1), [0.5, 0.25])
    # L = 2: from (0.5, 0.25), (2.5, -0.25) has norm sqrt(6.3125) > 1 and is clipped
    n = math.sqrt(6.3125)
    second = ((2.5 / n - 0.5) / 2, (-0.25 / n + 0.25) / 2)
    np.testing.assert_allclose(centered_clip(pts, np.zeros(2), 1.0, 2),
                               [0.5 + second[0], 0.25 + second[1]])
    # an attacker a million away moves the aggregate by at most tau / m per iteration
    far = np.array([[1e6, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert np.linalg.norm(centered_clip(far, np.zeros(2), 1.0, 1)) == pytest.approx(1 / 3)


def updates_of(rows: np.ndarray) -> list[ClientUpdate]:
    return [ClientUpdate(i, {"w": r.astype(np.float32)}, 1.0, {}) for i, r in enumerate(rows)]


def test_centered_clipping_keeps_its_centre_across_rounds():
    strat = build(CenteredClipping, parse_run_config(tiny(
        strategy="centered-clipping", cc_tau=1.0, cc_iterations=1)).as_dict(), Services(3, 0))
    zero = {"w": np.zeros(2, np.float32)}
    rows = np.array([[3.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(strat.aggregate(1, zero, updates_of(rows))["w"], [0.5, 0.25])
    # round 2 starts from the last aggregate (0.5, 0.25), not from 0
    np.testing.assert_allclose(strat.centre, [0.5, 0.25])
    out = strat.aggregate(2, zero, updates_of(np.array([[0.5, 0.25], [0.5, 0.25]])))
    np.testing.assert_allclose(out["w"], [0.5, 0.25])
    assert "centre" in strat.state_dict()


def test_flag_aggregator_hand_cases():
    rng = stream(0, Stream.ROBUST_AGGREGATION)
    e1, e2 = np.eye(3)[0], np.eye(3)[1]
    # r = 2 spans both orthogonal directions: sum_i Y Y^T x_i / r = (e1 + e2) / 2, and the
    # inputs are normalised first (3 e1 and 5 e2 give the same)
    out = flag_aggregate(np.stack([3 * e1, 5 * e2]), 2, 4, 0.0, rng, "official")
    np.testing.assert_allclose(out, (e1 + e2) / 2, atol=1e-9)
    # median-norm rescales it to the median input norm, 4
    out = flag_aggregate(np.stack([3 * e1, 5 * e2]), 2, 4, 0.0, rng, "median-norm")
    np.testing.assert_allclose(out, 4 * (e1 + e2) / math.sqrt(2), atol=1e-9)
    # r = 1: three agree on e1, one says e2: the flag median is e1, Y Y^T (3 e1 + e2) = 3 e1
    out = flag_aggregate(np.stack([e1, 2 * e1, e1, e2]), 1, 4, 0.0, rng, "official")
    np.testing.assert_allclose(out, 3 * e1, atol=1e-6)
    assert sine_objective(np.stack([e1, e2]), e1[:, None]) == pytest.approx(1.0)


def test_flag_aggregator_holds_against_a_big_outlier():
    base = np.array([1.0, 1.0, 0.0, 0.0])
    noise = stream(1, Stream.ROBUST_AGGREGATION).normal(0, 0.05, (7, 4))
    honest = base + noise
    rows = np.vstack([honest, [[-100.0, -100.0, 50.0, 0.0]]])
    out = flag_aggregate(rows, 1, 4, 0.0, stream(0, Stream.ROBUST_AGGREGATION), "median-norm")
    cos = out @ base / (np.linalg.norm(out) * np.linalg.norm(base))
    assert abs(cos) > 0.99 and np.linalg.norm(out) == pytest.approx(
        np.median(np.linalg.norm(rows, axis=1)))


def final(strategy: str, **over) -> float:
    logging.getLogger("flwr").setLevel(logging.ERROR)  # Flower's strategies log every round
    cfg = tiny(strategy=strategy, attack="sign-flip", sign_flip_scale=10.0, byzantine_count=2,
               num_server_rounds=4, lr=0.3, partitioner="iid", **over)
    return run_experiment(parse_run_config(cfg)).records[-1]["honest_accuracy"]


def test_flowers_krum_holds_against_sign_flip_where_fedavg_does_not():
    fedavg = final("fedavg")
    krum = final("flwr.serverapp.strategy:Krum", num_malicious_nodes=2)
    assert fedavg <= 0.15  # 2 of 10 clients sending -10 x their update: FedAvg goes nowhere
    assert krum >= 0.5


@pytest.mark.parametrize("name", ["geometric-median", "centered-clipping", "flag"])
def test_each_defence_learns_under_sign_flip(name):
    assert strategy_class(name) is not None
    assert final(name) >= 0.5


def test_geometric_median_strategy_steps_to_the_median():
    strat = build(GeometricMedian, parse_run_config(tiny(strategy="geometric-median",
                                                         rfa_iterations=300)).as_dict(),
                  Services(3, 0))
    zero = {"w": np.zeros(1, np.float32)}
    out = strat.aggregate(1, zero, updates_of(np.array([[0.0], [1.0], [10.0]])))
    assert out["w"][0] == pytest.approx(1.0, abs=1e-3)


def krum_replies(values: dict[int, float]) -> list[Message]:
    """One train reply per node holding the 1-parameter model ``values[node]``."""
    ensure_task_identity()  # Flower builds messages only inside a task
    out = []
    for node, v in values.items():
        sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=node,
                       message_type=MessageType.TRAIN)
        out.append(Message(RecordDict({"arrays": ArrayRecord({"w": Array(np.array([v]))}),
                                       "metrics": MetricRecord({"num-examples": 1})}),
                           reply_to=sent))
    return out


def flower(name: str, **over) -> Any:
    logging.getLogger("flwr").setLevel(logging.ERROR)
    cfg = parse_run_config(tiny(strategy=FLOWER + name, num_clients=7, **over))
    return build(strategy_class(cfg.strategy), cfg.as_dict(), Services(7, 0))


def test_what_flowers_krum_multikrum_and_bulyan_let_through():
    """Flower's own selection, asked again, names the kept replies (node 4 malicious)."""
    # honest 0, 0.1, 0.25, 0.3 and the attacker at 10; f = 1, so each scores its n - f - 2
    # = 2 closest: 0.1 -> .01 + .0225, 0.25 -> .0025 + .0225 (best), 0.3 -> .0025 + .04
    krum = flower("Krum", num_malicious_nodes=1)
    arrays, _ = krum.aggregate_train(1, krum_replies({0: 0.0, 1: 0.1, 2: 0.25, 3: 0.3,
                                                       4: 10.0}))
    assert krum.accepted_senders().tolist() == [2]
    assert float(arrays["w"].numpy()[0]) == pytest.approx(0.25)  # Krum's aggregate is it
    # honest spread 0, 3, 6 and two colluding copies at 10: each copy scores 0 + 16, the
    # honest 3 scores 9 + 9 = 18: Krum picks a copy, MultiKrum (m = 2) both
    sybils = {0: 0.0, 1: 3.0, 2: 6.0, 3: 10.0, 4: 10.0}
    krum.aggregate_train(2, krum_replies(sybils))
    assert krum.accepted_senders().tolist() in ([3], [4])
    multi = flower("MultiKrum", num_malicious_nodes=1, num_nodes_to_select=2)
    arrays, _ = multi.aggregate_train(1, krum_replies(sybils))
    assert sorted(multi.accepted_senders().tolist()) == [3, 4]
    assert float(arrays["w"].numpy()[0]) == pytest.approx(10.0)
    # Bulyan, f = 1, n = 7: its MultiKrum step keeps theta = n - 2f = 5 (each scored on
    # its 4 closest): the five honest ones, not the two copies far away
    bulyan = flower("Bulyan", num_malicious_nodes=1)
    bulyan.aggregate_train(1, krum_replies({0: 0.0, 1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4,
                                            5: 10.0, 6: 10.0}))
    assert sorted(bulyan.accepted_senders().tolist()) == [0, 1, 2, 3, 4]
    bulyan.aggregate_train(2, krum_replies({0: 0.0, 1: 0.1, 2: 0.2}))  # < 4f + 3: skipped
    assert bulyan.accepted_senders().tolist() == []


def test_a_run_counts_what_flowers_krum_let_through():
    logging.getLogger("flwr").setLevel(logging.ERROR)

    def accepted(**over) -> list[float]:
        cfg = tiny(strategy=FLOWER + "Krum", num_server_rounds=2, lr=0.3, partitioner="iid",
                   **over)
        return [r["malicious_accepted"] for r in run_experiment(
            parse_run_config(cfg)).records[1:]]

    # flipped x10: far from everyone, never Krum's pick
    assert accepted(attack="sign-flip", sign_flip_scale=10.0, byzantine_count=2,
                    num_malicious_nodes=2) == [0.0, 0.0]
    # 4 near-identical Sybil copies: each other's nearest neighbours, Krum picks one in the
    # first round (from the common start the honest updates are the more spread)
    assert accepted(attack="sybil", byzantine_count=4, num_malicious_nodes=1)[0] == 1.0
