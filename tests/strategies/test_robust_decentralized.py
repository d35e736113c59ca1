"""Decentralized robust aggregation: MoNNA's nearest-neighbour averaging, ClippedGossip's
self-centred clipping and SybilWall's FoolsGold weights on hand-computed cases; the limits
(no clipping = D-SGD, no momentum and f = 0 = D-SGD on the complete graph); MoNNA and
ClippedGossip holding against sign flip where D-SGD does not; SybilWall finding Sybils."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.simulation.adversary import Adversary
from flowerbed.strategies.clipped_gossip import clipped_mix
from flowerbed.strategies.monna import nearest_neighbour_average
from flowerbed.strategies.sybilwall import foolsgold_weights
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


def test_foolsgold_weights_by_hand():
    # two identical histories and one orthogonal: the pair gets 0, the loner 1
    np.testing.assert_allclose(foolsgold_weights(np.array([[1.0, 0, 0], [2.0, 0, 0],
                                                           [0, 0, 1.0]])), [0, 0, 1])
    np.testing.assert_allclose(foolsgold_weights(np.eye(3)), [1, 1, 1])  # all dissimilar
    # h0 = (1, 0), h1 at 60 degrees, h2 = (0, 1): cs01 = 0.5, cs12 = 0.866, cs02 = 0;
    # pardoning scales cs01 in row 0 by 0.5 / 0.866 -> w = 1 - (0.289, 0.866, 0.866),
    # rescaled (1, 0.188, 0.188); logit: 1 -> 1, ln(0.188 / 0.812) + 0.5 < 0 -> 0
    h = np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2], [0.0, 1.0]])
    np.testing.assert_allclose(foolsgold_weights(h), [1, 0, 0], atol=1e-9)


def test_sybilwall_finds_the_sybils_and_averages_like_gossip_without_them():
    cfg = parse_run_config(tiny(strategy="sybilwall", attack="sybil", byzantine_count=3,
                                num_clients=12, num_server_rounds=3, topology="random-regular",
                                degree=4, final_merge=False))
    res = run_experiment(cfg)
    bad = Adversary.from_config(cfg).malicious
    good = np.setdiff1d(np.arange(12), bad)[:5]
    w = foolsgold_weights(res.strategy.history[np.concatenate([bad, good])])
    assert w[:3].max() < 0.05 < w[3:].max()  # near-identical Sybil histories score 0
    assert res.records[-1]["malicious_updates"] == 3
    # gossip samples are counted as peer messages on top of the graph's 12 x 4 per round
    assert res.records[-1]["round_messages"] == 12 * 4 + 12 * 4


def test_monna_counts_the_malicious_models_it_kept():
    # complete graph of 10, 2 Byzantine: every node receives 9 models and keeps 9 - f
    for f, most in ((0, 10 * 2 - 2), (2, None)):
        cfg = parse_run_config(tiny(strategy="monna", topology="complete", nna_f=f,
                                    attack="sign-flip", sign_flip_scale=10.0,
                                    byzantine_count=2, num_server_rounds=2, lr=0.3,
                                    partitioner="iid"))
        rec = run_experiment(cfg).records[-1]
        if most is not None:  # f = 0 keeps every message: each honest node 2, each bad 1
            assert rec["malicious_accepted"] == most
        else:  # the x10 flipped models are the farthest: honest nodes drop both
            assert rec["malicious_accepted"] <= 2
