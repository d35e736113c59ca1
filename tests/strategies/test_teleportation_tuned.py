"""Teleportation's k tuning (Algorithm 2): disjoint node blocks, k = n phase, best kept."""

from __future__ import annotations

import numpy as np

from flowerbed.platform.config import parse_run_config
from flowerbed.platform.runner import run_experiment
from flowerbed.strategies.teleportation_tuned import tuning_set
from tests.conftest import tiny


def test_tuning_set_fits_in_n() -> None:
    assert tuning_set(1) == [1]
    assert tuning_set(15) == [1, 2, 4, 8]
    assert tuning_set(16) == [1, 2, 4, 8]
    assert tuning_set(100) == [1, 2, 4, 8, 16, 32]
    for n in range(1, 300):
        ks = tuning_set(n)
        assert sum(ks) <= n
        # for any k* < n some k in K has k*/4 < k <= k*
        assert all(any(k_star / 4 < k <= k_star for k in ks) for k_star in range(1, n))


def test_candidates_use_disjoint_blocks_then_k_equals_n() -> None:
    cfg = parse_run_config(tiny(strategy="teleportation-tuned", num_clients=15,
                                num_server_rounds=10, lr=0.3, local_steps=5))
    result = run_experiment(cfg)
    strat = result.strategy
    blocks = [set(c.universe.tolist()) for c in strat.candidates]
    assert [c.k for c in strat.candidates] == [1, 2, 4, 8]
    assert [len(b) for b in blocks] == [1, 2, 4, 8]
    assert len(set().union(*blocks)) == 15  # disjoint, covering 1 + 2 + 4 + 8 nodes
    for c, b in zip(strat.candidates, blocks, strict=True):
        assert set(c.holders.tolist()) <= b  # a candidate only ever activates its block
    assert strat.full.k == 15 and set(strat.full.holders.tolist()) == set(range(15))
    last = result.records[-1]
    assert last["chosen_k"] in {1, 2, 4, 8, 15}
    assert strat.leader.k == last["chosen_k"]
    np.testing.assert_allclose(strat.x, strat.leader.x)
    assert last["test_accuracy"] > result.records[0]["test_accuracy"] + 0.2
