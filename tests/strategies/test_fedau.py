"""FedAU: weights on a hand-written participation sequence, 1/N scaling, FedAvg equivalence."""

import numpy as np
import pytest

from flowerbed.clients.data import load_federation
from flowerbed.run.config import parse_run_config
from flowerbed.simulation.participation_patterns import build_participation
from flowerbed.strategies.base import ClientUpdate
from flowerbed.strategies.contract import Services
from flowerbed.strategies.fedau import FedAU
from flowerbed.strategies.fedavg_known import FedAvgKnown


def fedau(n: int, cutoff: int, server_lr: float = 1.0) -> FedAU:
    return FedAU(FedAU.Params(fedau_cutoff=cutoff, server_lr=server_lr),
                 Services(num_nodes=n, seed=0))


def test_weights_on_a_participation_sequence_with_cutoff():
    # 3 clients, K = 3. Worked by hand from the rules (official IBM/fedau main.py):
    # a participant's weight is the mean of its recorded intervals (1 if none), then it
    # records gap + 1; a non-participant's gap grows and is recorded once it reaches K.
    rounds = [{0, 1}, {0}, {0, 1}, {0, 2}, {0}, {0}, {0, 1, 2}, {1, 2}]
    expected = [
        {0: 1, 1: 1},              # nobody has an interval yet
        {0: 1},                    # intervals: 0 [1], 1 [1]
        {0: 1, 1: 1},              # client 2 reaches gap 3 = K here: records 3
        {0: 1, 2: 3},              # client 2: mean([3]); then records 0 + 1
        {0: 1},
        {0: 1},                    # client 1 reaches gap 3 = K: records 3 -> [1, 2, 3]
        {0: 1, 1: 2, 2: 2},        # client 1: mean([1, 2, 3]); client 2: mean([3, 1])
        {1: 7 / 4, 2: 7 / 3},      # client 1: [1, 2, 3, 1]; client 2: [3, 1, 3]
    ]
    s = fedau(3, cutoff=3)
    for t, (part, want) in enumerate(zip(rounds, expected, strict=True), start=1):
        got = s.omega(t, sorted(part))
        assert got == pytest.approx(want), f"round {t}"
    np.testing.assert_array_equal(s.gap, [1, 0, 0])
    np.testing.assert_array_equal(s.interval_count, [7, 5, 4])
    np.testing.assert_allclose(s.interval_sum, [7, 8, 8])


def test_no_cutoff_means_long_absences_count_in_full():
    s = fedau(2, cutoff=100000)
    for t in range(1, 6):
        s.omega(t, [0])
    assert s.omega(6, [0, 1]) == {0: 1.0, 1: 1.0}  # client 1's first interval: 6
    assert s.omega(7, [1]) == {1: 6.0}


def test_server_update_is_scaled_by_all_clients():
    s = fedau(4, cutoff=100, server_lr=0.5)
    s.omega(1, [0, 1])
    s.omega(2, [0])
    s.omega(3, [0, 1])  # now omega_0 = 1, omega_1 = mean([1, 2]) = 1.5
    x = {"w": np.array([1.0, -1.0], np.float32)}
    ups = [ClientUpdate(0, {"w": np.array([3.0, 1.0], np.float32)}, 10, {}),
           ClientUpdate(1, {"w": np.array([1.0, 3.0], np.float32)}, 99, {})]
    new = s.aggregate(4, x, ups)
    # x + eta_g / N * (1 * (2, 2) + 1.5 * (0, 4)), N = 4 clients; num-examples ignored
    np.testing.assert_allclose(new["w"], [1 + 0.5 / 4 * 2, -1 + 0.5 / 4 * (2 + 6)])
    assert new["w"].dtype == np.float32


def test_fedavg_known_weights_by_true_probabilities():
    s = FedAvgKnown(FedAvgKnown.Params(fraction_train=1.0),
                    Services(num_nodes=3, seed=0,
                             true_probabilities=np.array([0.5, 0.25, 1.0])))
    x = {"w": np.zeros(1)}
    ups = [ClientUpdate(0, {"w": np.array([1.0])}, 1, {}),
           ClientUpdate(1, {"w": np.array([2.0])}, 1, {})]
    np.testing.assert_allclose(s.aggregate(1, x, ups)["w"], [(1 / 0.5 + 2 / 0.25) / 3])


def test_fedau_equals_fedavg_under_full_participation(run):
    # Everyone always participates: intervals are all 1, so omega_n = 1 and FedAU's
    # x + (1/N) sum_n Delta_n is FedAvg over all N clients with equal weights. FedAvg weighs
    # by num-examples, so give every client the same number of examples.
    common = dict(dataset="synthetic", partitioner="natural-id", synthetic_iid_size=True,
                  synthetic_samples=20, num_clients=6, num_server_rounds=3, model="logreg",
                  local_steps=3, batch_size=4, lr=0.05, fraction_train=1.0, seed=5)
    au = run(strategy="fedau", **common)
    avg = run(strategy="fedavg", **common)
    for k in avg.final_state:
        np.testing.assert_allclose(au.final_state[k], avg.final_state[k], atol=1e-6)
    assert not np.allclose(avg.final_state["1.weight"], run(
        strategy="fedavg", **{**common, "num_server_rounds": 2}).final_state["1.weight"])


def test_fedau_tracks_who_did_not_reply(run):
    # Through the real grid: FedAU's interval bookkeeping equals a replay of the
    # participation model's availability (who did not reply = who was unavailable).
    over = dict(strategy="fedau", num_clients=12, num_server_rounds=6, participation="markov",
                participation_mean=0.4, participation_min=0.1, participation_alpha=1.0,
                markov_q=0.3, fedau_cutoff=3, model="logreg", local_steps=1, seed=2)
    res = run(**over)
    cfg = parse_run_config({k.replace("_", "-"): v for k, v in over.items()})
    part = build_participation(cfg, load_federation(cfg))
    replay = fedau(12, cutoff=3)
    avail = [part.available(t).tolist() for t in range(1, 7)]
    for t, nodes in enumerate(avail, start=1):
        replay.omega(t, nodes)
    s = res.strategy
    np.testing.assert_array_equal(s.gap, replay.gap)
    np.testing.assert_array_equal(s.interval_count, replay.interval_count)
    np.testing.assert_array_equal(s.interval_sum, replay.interval_sum)
    assert [r["participants"] for r in res.records[1:]] == [len(a) for a in avail]


def test_fedavg_known_runs_with_nonuniform_participation(run):
    res = run(strategy="fedavg-known", num_clients=20, num_server_rounds=5,
              participation="data-bernoulli", participation_mean=0.5, participation_alpha=0.5,
              model="logreg", local_steps=2)
    p = res.strategy.services.true_probabilities
    assert p is not None and len(np.unique(p)) > 1
    assert set(res.strategy.last_omega.values()) <= set((1 / p).tolist())
    assert res.records[-1]["test_accuracy"] > res.records[0]["test_accuracy"]


def test_fedau_counts_rounds_in_which_nobody_participates(run):
    # A round with no reply is skipped by the min-replies rule (the model stays), but for
    # FedAU it is still a round of non-participation for every client.
    over = dict(strategy="fedau", num_clients=4, num_server_rounds=12,
                participation="bernoulli", participation_mean=0.15, participation_min=0.05,
                fedau_cutoff=5, model="logreg", local_steps=1, seed=3)
    res = run(**over)
    cfg = parse_run_config({k.replace("_", "-"): v for k, v in over.items()})
    part = build_participation(cfg, load_federation(cfg))
    avail = [part.available(t).tolist() for t in range(1, 13)]
    assert any(not a for a in avail)  # the case under test happens
    replay = fedau(4, cutoff=5)
    for t, nodes in enumerate(avail, start=1):
        replay.omega(t, nodes)
    np.testing.assert_array_equal(res.strategy.gap, replay.gap)
    np.testing.assert_array_equal(res.strategy.interval_sum, replay.interval_sum)
    assert res.summary["totals"]["round_skipped"] == sum(not a for a in avail)
