"""Bristle (Verbraeken et al. 2021): the prioritiser's three distance groups, per-class F1,
the integrator's scores, certainties and weights, and the integration of class and
non-class parameters on hand-computed cases; a run where Bristle holds against sign flip
(and lets no flipped model through) where D-SGD does not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.bristle import (
    f1_per_class,
    integrate,
    integrator_weights,
    prioritise,
    selected_classes,
)
from tests.conftest import tiny

torch.set_num_threads(1)


def test_prioritiser_samples_close_middle_and_far_thirds():
    # sorted by distance: positions 1, 5 | 2, 0 | 4, 3
    dist = np.array([5.0, 1.0, 3.0, 9.0, 7.0, 2.0])
    rng = np.random.default_rng(0)
    # alpha = 0: f_l = K = 3, f_m = f_h = 0: only the close third (it has 2 models)
    assert prioritise(dist, 3, 0.0, rng).tolist() == [1, 5]
    # K = 10, alpha = 0.4: f = (4, 5, 2) covers all 6
    assert prioritise(dist, 10, 0.4, rng).tolist() == [0, 1, 2, 3, 4, 5]
    # K = 5, alpha = 0.4: f = (round 1.8, round 2.4, round 0.8) = (2, 2, 1): one far model
    for _ in range(5):
        got = prioritise(dist, 5, 0.4, rng).tolist()
        assert len(got) == 5 and {1, 5, 2, 0} <= set(got) and len({4, 3} & set(got)) == 1
    # the split keeps every model when the count is not a multiple of 3 (7 -> 3, 2, 2)
    assert len(prioritise(np.arange(7.0), 100, 0.4, rng)) == 7


def test_f1_per_class_by_hand():
    pred, y = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    # class 0: precision 1/2, recall 1/2; class 1: precision 2/2, recall 2/3
    np.testing.assert_allclose(f1_per_class(pred, y, np.array([0, 1])), [0.5, 0.8])
    assert f1_per_class(np.array([1, 1]), np.array([0, 0]), np.array([0]))[0] == 0.0


def test_integrator_weights_by_hand():
    own = np.array([0.5, 0.8])
    peers = np.array([[0.7, 0.8],   # better on class 0, as good on class 1
                      [0.1, 0.2]])  # worse on both
    cw, pw = integrator_weights(own, peers, np.ones((2, 2), bool))

    def weight(score: float, certainty: float) -> float:
        return max(0.0, 10 / (1 + math.exp(-score / 100)) - 4) * certainty

    # peer 0: d = (2, 0), score (2^3.5, -0^4.8 = 0), certainty 0.75 - 0.05 = 0.7
    assert cw[0, 0] == pytest.approx(weight(2 ** 3.5, 0.7))
    assert cw[0, 1] == pytest.approx(0.7)  # score 0: weight 1 x certainty
    assert pw[0] == pytest.approx(weight(2 ** 3.5, 0.7))
    # peer 1: scores -(4^4.5), -(6^4.8), bounded -100: 10 sigmoid(-1) - 4 < 0 -> 0
    np.testing.assert_array_equal(cw[1], [0.0, 0.0])
    assert pw[1] == 0.0
    # unselected classes get no weight and do not count in the certainty or W_p
    cw, pw = integrator_weights(own, peers[:1], np.array([[True, False]]))
    assert cw[0, 1] == 0.0
    assert cw[0, 0] == pytest.approx(weight(2 ** 3.5, 0.7))  # certainty 0.7 - 0: 0.7
    assert pw[0] == pytest.approx(weight(2 ** 3.5, 0.7))


def test_selected_classes_are_a_peers_best_shared_count():
    f1 = np.array([[0.2, 0.9, 0.5]])
    assert selected_classes(f1, np.array([2])).tolist() == [[False, True, True]]
    assert selected_classes(f1, np.array([3])).tolist() == [[True, True, True]]


def test_integrate_by_hand():
    # 3 classes of one parameter each (indices 0-2), one feature parameter (index 3);
    # the node holds classes 0 and 1 (class 2 is foreign)
    own = np.ones(4)
    received = np.array([[3.0, 5.0, 7.0, 9.0], [100.0, 100.0, 100.0, 100.0]])
    class_w = np.array([[0.9, 0.7], [0.0, 0.0]])
    peer_w = np.array([0.9, 0.0])
    got = integrate(own, received, np.array([[0], [1], [2]]), np.array([0, 1]), class_w,
                    peer_w)
    np.testing.assert_allclose(got, [(1 + 0.9 * 3) / 1.9, (1 + 0.7 * 5) / 1.7,
                                     (1 + 0.9 * 7) / 1.9, (1 + 0.9 * 9) / 1.9])


def test_bristle_holds_against_sign_flip_and_keeps_no_flipped_model():
    common = dict(attack="sign-flip", sign_flip_scale=10.0, byzantine_count=2,
                  num_server_rounds=4, lr=0.3, partitioner="iid", topology="complete")
    dsgd = run_experiment(parse_run_config(tiny(strategy="dsgd", final_merge=False,
                                                **common))).records
    res = run_experiment(parse_run_config(tiny(strategy="bristle", **common)))
    bristle = res.records
    assert dsgd[-1]["honest_accuracy"] <= 0.15
    assert bristle[-1]["honest_accuracy"] >= 0.6
    # every node scores the x10 flipped models as worse on every class: weight 0
    assert [r["malicious_accepted"] for r in bristle[1:]] == [0.0] * 4
    # ... and it does take honest models: of the 8 of 9 received models each of the 10
    # nodes selects (K = 10, alpha = 0.4 over thirds of 3), most get a positive weight
    assert len(res.strategy.accepted_senders()) > 10 * 8 // 2
