"""Participation patterns: long-run availability matches p_n; seeded; checkpointable."""

import numpy as np
import pytest

from flowerbed.clients.data import load_federation
from flowerbed.run.config import parse_run_config
from flowerbed.simulation import participation_patterns as pp
from flowerbed.simulation.participation_patterns import build_participation

ROUNDS = 5_000


def make(pattern: str, **over):
    cfg = parse_run_config({"num-clients": 20, "participation": pattern,
                            "participation-mean": 0.3, "participation-min": 0.05,
                            "participation-alpha": 1.0, "markov-q": 0.2, "cycle-length": 10,
                            "seed": 3, **over})
    return cfg, build_participation(cfg, load_federation(cfg))


def frequencies(part, rounds: int = ROUNDS) -> np.ndarray:
    counts = np.zeros(part.num_nodes)
    for t in range(1, rounds + 1):
        avail = part.available(t)
        assert np.all(np.diff(avail) > 0), "ids must be sorted and distinct"
        counts[avail] += 1
    return counts / rounds


@pytest.mark.parametrize("pattern", ["bernoulli", "data-bernoulli"])
def test_bernoulli_frequencies_match_probabilities(pattern):
    _, part = make(pattern)
    p = part.probabilities
    assert p.min() >= 0.05 - 1e-12 and p.max() <= 1.0
    assert len(np.unique(p)) > 1, "probabilities must be heterogeneous"
    std = np.sqrt(p * (1 - p) / ROUNDS)
    np.testing.assert_array_less(np.abs(frequencies(part) - p), 5 * std + 1e-9)


def test_markov_frequencies_match_probabilities():
    _, part = make("markov")
    p = part.probabilities
    # the chain's autocorrelation 1 - a - b shrinks the effective sample size
    lam = 1 - part.to_active - part.to_inactive
    ess = ROUNDS * (1 - lam) / (1 + lam)
    std = np.sqrt(p * (1 - p) / ess)
    np.testing.assert_array_less(np.abs(frequencies(part) - p), 5 * std + 1e-9)
    # the rates are the paper's: to-inactive = q (1/p - 1), rescaled so both are <= 1
    assert np.all(part.to_active <= 1) and np.all(part.to_inactive <= 1)
    np.testing.assert_allclose(part.to_inactive / part.to_active, 1 / p - 1, rtol=1e-12)
    unscaled = 0.2 * (1 / p - 1) <= 1
    np.testing.assert_allclose(part.to_active[unscaled], 0.2)


def test_cyclic_is_periodic_with_the_target_share():
    cfg, part = make("cyclic")
    c = cfg.cycle_length
    target = pp.data_probabilities(load_federation(cfg).label_counts(), 0.3, 0.05, 1.0,
                                   np.random.default_rng([cfg.seed, 15485863]))
    active = np.maximum(1, np.round(c * target))
    np.testing.assert_array_equal(part.active, active)
    np.testing.assert_allclose(part.probabilities, active / (active + np.maximum(1, c - active)))
    period = int(np.lcm.reduce(part.active + part.inactive))
    freq = frequencies(part, period)  # exactly one common period
    np.testing.assert_allclose(freq, part.probabilities, atol=1e-12)
    # consecutive: a node's active rounds form one run per cycle
    for n in range(part.num_nodes):
        seq = np.array([n in part.available(t) for t in range(1, 4 * c + 1)], dtype=int)
        starts = np.sum(np.diff(seq) == 1) + seq[0]
        assert starts <= 4 and seq.sum() >= 4 * part.active[n] - part.active[n]


def test_data_bernoulli_follows_the_label_weights():
    # a node holding only one label gets p = max(p_min, m_label * p_mean * L)
    counts = np.array([[5, 0, 0], [0, 7, 0], [0, 0, 2], [1, 1, 1]])
    p = pp.data_probabilities(counts, 0.2, 0.01, 0.5, np.random.default_rng(0))
    m = np.random.default_rng(0).dirichlet(0.5 * np.ones(3))
    np.testing.assert_allclose(p[:3], np.clip(np.maximum(0.01, m * 0.2 * 3), 0, 1))
    np.testing.assert_allclose(p[3], max(0.01, m.mean() * 0.2 * 3))


@pytest.mark.parametrize("pattern", ["bernoulli", "data-bernoulli", "cyclic", "markov"])
def test_seeded_and_resumable(pattern):
    _, a = make(pattern)
    _, b = make(pattern)
    seq_a = [a.available(t).tolist() for t in range(1, 30)]
    assert seq_a == [b.available(t).tolist() for t in range(1, 30)]
    _, other = make(pattern, seed=4)
    assert seq_a != [other.available(t).tolist() for t in range(1, 30)]
    # a checkpointed copy continues identically
    state = a.state_dict()
    _, c = make(pattern)
    c.load_state_dict(state)
    assert [a.available(t).tolist() for t in range(30, 40)] == \
        [c.available(t).tolist() for t in range(30, 40)]
    assert a.available(39).tolist() == c.available(39).tolist()  # same round: same answer
