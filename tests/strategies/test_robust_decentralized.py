"""Decentralized robust aggregation: MoNNA's nearest-neighbour averaging and ClippedGossip's
self-centred clipping on hand-computed cases, their limits (no clipping = D-SGD, no momentum
and f = 0 = D-SGD on the complete graph), and both holding against sign flip where D-SGD
does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.clipped_gossip import clipped_mix
from flowerbed.strategies.monna import nearest_neighbour_average
from tests.conftest import tiny

torch.set_num_threads(1)


def test_nearest_neighbour_average_drops_the_f_farthest():
    rows = np.array([[0.0], [1.0], [2.0], [100.0]])
    assert nearest_neighbour_average(rows, 0, 1)[0] == pytest.approx(1.0)  # (0 + 1 + 2) / 3
    assert nearest_neighbour_average(rows, 0, 2)[0] == pytest.approx(0.5)  # (0 + 1) / 2
    assert nearest_neighbour_average(rows, 0, 0)[0] == pytest.approx(103 / 4)
    # the node's own model is always kept, even if all others are closer to each other
    rows = np.array([[50.0], [0.0], [0.1], [0.2]])
    assert nearest_neighbour_average(rows, 0, 3)[0] == pytest.approx(50.0)


def test_clipped_mix_by_hand():
    half = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 0.5]])
    third = np.full(2, 1 / 3)
    weights = [(0, np.array([1, 2]), third)]
    # (3, 0) is clipped to (1, 0); (0, 0.5) is within tau = 1
    np.testing.assert_allclose(clipped_mix(half, weights, 1.0)[0], [1 / 3, 1 / 6])
    # tau = infinity: plain gossip, sum_j W_ij x_j with W_ii = 1/3
    np.testing.assert_allclose(clipped_mix(half, weights, 1e12)[0], [1.0, 1 / 6])
    np.testing.assert_allclose(clipped_mix(half, weights, 1.0)[1:], half[1:])  # not listed


def accuracies(**over):
    cfg = tiny(num_server_rounds=2, final_merge=False, partitioner="iid", **over)
    return [r["test_accuracy"] for r in run_experiment(parse_run_config(cfg)).records]


def test_limits_are_dsgd():
    dsgd = accuracies(strategy="dsgd", topology="ring")
    assert accuracies(strategy="clipped-gossip", topology="ring",
                      gossip_clip_tau=1e9) == pytest.approx(dsgd, abs=1e-6)
    complete = accuracies(strategy="dsgd", topology="complete")
    assert accuracies(strategy="monna", topology="complete", monna_momentum=0.0,
                      nna_f=0) == pytest.approx(complete, abs=1e-6)


def honest(strategy: str, **over) -> float:
    cfg = tiny(strategy=strategy, attack="sign-flip", sign_flip_scale=10.0, byzantine_count=2,
               num_server_rounds=5, lr=0.3, partitioner="iid", topology="complete",
               final_merge=False, **over)
    res = run_experiment(parse_run_config(cfg))
    if strategy == "monna":  # the momenta are checkpointed state
        assert "momentum" in res.strategy.state_dict()
        assert np.abs(res.strategy.momentum).sum() > 0
    return res.records[-1]["honest_accuracy"]


def test_robust_gossip_holds_against_sign_flip_where_dsgd_does_not():
    assert honest("dsgd") <= 0.15
    assert honest("clipped-gossip") >= 0.5
    assert honest("monna", nna_f=3, monna_momentum=0.5) >= 0.5
