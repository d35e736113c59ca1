"""Topologies: doubly stochastic mixing, closed-form spectral gaps, exact consensus."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

import flowerbed.strategies.topologies as topologies
from flowerbed.strategies.base_graph import base_graph_matrices, min_factorization, period_bound
from flowerbed.strategies.topologies import (
    TOPOLOGIES,
    build_topology,
    metropolis_hastings,
    torus_shape,
)

CASES = [
    ("ring", 1, {}),
    ("ring", 2, {}),
    ("ring", 7, {}),
    ("torus", 12, {}),
    ("torus", 25, {}),
    ("complete", 6, {}),
    ("exponential", 10, {}),
    ("exponential", 16, {}),
    ("one-peer-exponential", 8, {}),
    ("one-peer-exponential", 11, {}),
    ("erdos-renyi", 30, {"edge_probability": 0.3, "seed": 4}),
    ("random-regular", 20, {"degree": 3, "seed": 1}),
    ("base-2", 13, {}),
    ("base", 22, {"degree": 3}),
]


def _dense(topology: topologies.Topology, step: int) -> np.ndarray:
    w = topology.matrix(step)
    assert sp.issparse(w) and w.shape == (topology.n, topology.n)
    return w.toarray()


def _period_product(topology: topologies.Topology) -> np.ndarray:
    prod = np.eye(topology.n)
    for t in range(topology.period):
        prod = _dense(topology, t) @ prod
    return prod


def test_names_and_invalid_inputs() -> None:
    assert set(TOPOLOGIES) == {
        "ring",
        "torus",
        "complete",
        "exponential",
        "one-peer-exponential",
        "erdos-renyi",
        "random-regular",
        "base-2",
        "base",
    }
    with pytest.raises(ValueError, match="unknown topology 'star'"):
        build_topology("star", 5)
    with pytest.raises(ValueError, match="n >= 1"):
        build_topology("ring", 0)
    with pytest.raises(ValueError, match="k\\) >= 1"):
        build_topology("base", 5, degree=0)


@pytest.mark.parametrize(("name", "n", "kwargs"), CASES)
def test_every_matrix_is_doubly_stochastic(name: str, n: int, kwargs: dict) -> None:
    top = build_topology(name, n, **kwargs)
    assert (top.name, top.n) == (name, n)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 5))
    for t in range(top.period + 1):
        w = _dense(top, t)
        assert (w >= 0).all()
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
        if name != "one-peer-exponential":
            assert top.symmetric
        if top.symmetric:
            np.testing.assert_allclose(w, w.T, atol=1e-15)
        # mix is W @ x (and keeps float32), neighbors/messages read off W's support.
        np.testing.assert_allclose(top.mix(x, t), w @ x, atol=1e-12)
        x32 = x.astype(np.float32)
        assert top.mix(x32, t).dtype == np.float32
        np.testing.assert_allclose(top.mix(x32, t), w @ x, atol=1e-5)
        np.testing.assert_allclose(top.mix(np.arange(n)[:, None], t), w @ np.arange(n)[:, None])
        np.testing.assert_allclose(top.mix(x[:, 0], t), w @ x[:, 0], atol=1e-12)
        support = (w != 0) & ~np.eye(n, dtype=bool)
        assert top.num_messages(t) == support.sum()
        src, dst = top.edges(t)
        assert len(src) == support.sum() and support[dst, src].all()
        for i in range(n):
            peers = np.flatnonzero(support[i] | support[:, i])
            np.testing.assert_array_equal(top.neighbors(i, t), peers)
            np.testing.assert_array_equal(top.in_neighbors(i, t), np.flatnonzero(support[i]))
            np.testing.assert_array_equal(top.out_neighbors(i, t), np.flatnonzero(support[:, i]))
    # time-varying graphs repeat with their period
    np.testing.assert_array_equal(_dense(top, top.period), _dense(top, 0))


def test_mix_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="n=5"):
        build_topology("ring", 5).mix(np.zeros((4, 3)), 0)


def test_ring_weights_messages_and_closed_form_gap() -> None:
    assert build_topology("ring", 1).matrix(0).toarray().tolist() == [[1.0]]
    np.testing.assert_allclose(build_topology("ring", 2).matrix(0).toarray(), 0.5)
    for n in range(3, 60):
        top = build_topology("ring", n)
        w = _dense(top, 0)
        assert w[0, 0] == w[0, 1] == w[0, n - 1] == pytest.approx(1 / 3)
        assert top.num_messages(0) == 2 * n
        np.testing.assert_array_equal(top.neighbors(0, 0), [1, n - 1])
        eig = [(1 + 2 * math.cos(2 * math.pi * j / n)) / 3 for j in range(1, n)]
        assert top.spectral_gap() == pytest.approx(1 - max(abs(e) for e in eig), abs=1e-12)
        if n >= 4:  # lambda_2 = (1 + 2 cos(2 pi / n)) / 3 dominates the negative end
            lam2 = (1 + 2 * math.cos(2 * math.pi / n)) / 3
            assert top.spectral_gap() == pytest.approx(1 - lam2, abs=1e-12)
    # n = 3 is the complete graph
    assert build_topology("ring", 3).spectral_gap() == pytest.approx(1.0)


def test_complete_graph_mean_broadcast_without_dense_matrix() -> None:
    top = build_topology("complete", 5)
    np.testing.assert_allclose(top.matrix(0).toarray(), 0.2)
    assert top.spectral_gap() == 1.0
    assert top.num_messages(0) == 20
    big = build_topology("complete", 10_000)
    x = np.arange(10_000 * 3, dtype=np.float64).reshape(10_000, 3)
    y = big.mix(x, 0)
    np.testing.assert_allclose(y, np.broadcast_to(x.mean(axis=0), x.shape))
    assert big.num_messages(0) == 10_000 * 9_999
    assert big.spectral_gap() == 1.0
    with pytest.raises(ValueError, match="use mix"):
        big.matrix(0)


def test_torus_shape_and_closed_form_gap() -> None:
    assert torus_shape(9) == (3, 3)
    assert torus_shape(12) == (3, 4)
    assert torus_shape(16) == (4, 4)
    assert torus_shape(30) == (5, 6)
    assert torus_shape(98) == (7, 14)
    for bad in (1, 4, 8, 14, 17, 22):
        with pytest.raises(ValueError, match="r, c >= 3"):
            build_topology("torus", bad)
    for n in (9, 12, 20, 36, 45):
        top = build_topology("torus", n)
        r, c = top.shape
        w = _dense(top, 0)
        assert (np.count_nonzero(w, axis=1) == 5).all() and top.num_messages(0) == 4 * n
        eig = [
            (1 + 2 * math.cos(2 * math.pi * a / r) + 2 * math.cos(2 * math.pi * b / c)) / 5
            for a in range(r)
            for b in range(c)
            if (a, b) != (0, 0)
        ]
        gap = 1 - max(abs(e) for e in eig)
        assert top.spectral_gap() == pytest.approx(gap, abs=1e-12)
        # and the matrix itself has that spectrum
        dense = np.sort(np.abs(np.linalg.eigvalsh(w)))[::-1]
        assert 1 - dense[1] == pytest.approx(gap, abs=1e-10)


def test_exponential_graph_closed_forms() -> None:
    for n in (5, 10, 13, 24):
        top = build_topology("exponential", n)
        offsets = sorted(
            {p % n for k in range(n.bit_length()) if 2**k < n for p in (2**k, -(2**k))}
        )
        d = len(offsets)
        np.testing.assert_array_equal(top.neighbors(0, 0), offsets)
        # circulant: lambda_j = (1 + sum_s cos(2 pi j s / n)) / (d + 1)
        eig = [
            (1 + sum(math.cos(2 * math.pi * j * s / n) for s in offsets)) / (d + 1)
            for j in range(1, n)
        ]
        assert top.spectral_gap() == pytest.approx(1 - max(map(abs, eig)), abs=1e-12)
    # n = 2^m: degree 2m - 1, weights 1/(2m); the alternating vector (-1)^i sees two odd
    # offsets (+-1) and 2m - 3 even ones, eigenvalue (m - 2)/m, which is lambda_2: gap 2/m.
    for m in range(2, 10):
        n = 2**m
        top = build_topology("exponential", n)
        assert len(top.neighbors(3, 0)) == 2 * m - 1
        alt = (-1.0) ** np.arange(n)
        np.testing.assert_allclose(top.mix(alt, 0), (m - 2) / m * alt, atol=1e-12)
        assert top.spectral_gap() == pytest.approx(2 / m, abs=1e-12)


def test_one_peer_exponential_exact_consensus_for_powers_of_two() -> None:
    for m in range(1, 8):
        n = 2**m
        top = build_topology("one-peer-exponential", n)
        assert top.period == m
        np.testing.assert_allclose(_period_product(top), np.full((n, n), 1 / n), atol=1e-12)
        for t in range(m):
            assert top.num_messages(t) == n
            np.testing.assert_array_equal(top.in_neighbors(0, t), [2**t % n])
            # W_t = (I + shift by 2^t) / 2: eigenvalue moduli |cos(pi j 2^t / n)|
            eig = [abs(math.cos(math.pi * j * 2**t / n)) for j in range(1, n)]
            assert top.spectral_gap(t) == pytest.approx(1 - max(eig), abs=1e-12)
    # other n: period ceil(log2 n), one message per node, mixing but not exact
    top = build_topology("one-peer-exponential", 6)
    assert top.period == 3
    prod = _period_product(top)
    assert not np.allclose(prod, 1 / 6)
    np.testing.assert_allclose(prod.sum(axis=0), 1.0)
    assert build_topology("one-peer-exponential", 1).period == 1


def test_metropolis_hastings_weights_by_hand() -> None:
    # path 0-1-2 plus leaf 3 on 1: degrees 1, 3, 1, 1
    adj = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 1], [0, 1, 0, 0], [0, 1, 0, 0]]))
    w = metropolis_hastings(adj).toarray()
    expected = np.array(
        [
            [3 / 4, 1 / 4, 0, 0],
            [1 / 4, 1 / 4, 1 / 4, 1 / 4],
            [0, 1 / 4, 3 / 4, 0],
            [0, 1 / 4, 0, 3 / 4],
        ]
    )
    np.testing.assert_allclose(w, expected)


def test_erdos_renyi_seeded_connected_and_failing_clearly() -> None:
    a = build_topology("erdos-renyi", 40, edge_probability=0.2, seed=3).matrix(0)
    b = build_topology("erdos-renyi", 40, edge_probability=0.2, seed=3).matrix(0)
    c = build_topology("erdos-renyi", 40, edge_probability=0.2, seed=4).matrix(0)
    assert (a != b).nnz == 0 and (a != c).nnz > 0
    adj = (a - sp.diags(a.diagonal())) != 0
    np.testing.assert_allclose(a.toarray(), metropolis_hastings(adj).toarray())
    assert build_topology("erdos-renyi", 40, edge_probability=0.2, seed=3).spectral_gap() > 0
    with pytest.raises(ValueError, match=r"disconnected.*raise the edge probability"):
        build_topology("erdos-renyi", 50, edge_probability=0.01)
    with pytest.raises(ValueError, match="edge probability"):
        build_topology("erdos-renyi", 10, edge_probability=0.0)


def test_random_regular_degree_weights_and_errors() -> None:
    for n, d in ((20, 3), (30, 4), (10, 7), (9, 8), (12, 11)):
        top = build_topology("random-regular", n, degree=d, seed=2)
        w = _dense(top, 0)
        assert (np.count_nonzero(w, axis=1) == d + 1).all()
        np.testing.assert_allclose(w[w != 0], 1 / (d + 1))
        assert top.spectral_gap() > 0  # connected
    a = build_topology("random-regular", 50, degree=4, seed=5).matrix(0)
    b = build_topology("random-regular", 50, degree=4, seed=6).matrix(0)
    assert (a != b).nnz > 0
    with pytest.raises(ValueError, match="even"):
        build_topology("random-regular", 9, degree=3)
    with pytest.raises(ValueError, match=r"1\.\.n-1"):
        build_topology("random-regular", 5, degree=5)
    with pytest.raises(ValueError, match="not connected"):
        build_topology("random-regular", 10, degree=1)


def test_base_graph_exact_consensus_for_every_n_and_k() -> None:
    """The official test: product of one period is (1/n) 1 1^T for n in 1..99, k in 1..4."""
    for k in range(1, 5):
        for n in range(1, 100):
            mats = base_graph_matrices(n, k)
            assert len(mats) <= period_bound(n, k) + 1e-9, (n, k)
            prod = np.eye(n)
            for w in mats:
                d = w.toarray()
                assert (d >= 0).all()
                np.testing.assert_allclose(d, d.T, atol=1e-15)
                np.testing.assert_allclose(d.sum(axis=1), 1.0, atol=1e-12)
                peers = np.count_nonzero(d, axis=1) - (np.diag(d) != 0)
                assert peers.max() <= k, (n, k)
                prod = d @ prod
            np.testing.assert_allclose(prod, np.full((n, n), 1 / n), atol=1e-10, err_msg=f"{n=}")


def test_base_graph_names_and_known_periods() -> None:
    # powers of k+1: the (k+1)-ary hypercube, log_{k+1} n steps
    assert build_topology("base-2", 64).period == 6
    assert build_topology("base", 27, degree=2).period == 3
    assert build_topology("base", 125, degree=4).period == 3
    assert build_topology("base", 5, degree=4).period == 1  # one clique: the complete graph
    assert sorted(min_factorization(12, 3)) == [3, 4]
    factors = min_factorization(72, 7)
    assert len(factors) == 3 and math.prod(factors) == 72 and max(factors) <= 8
    assert min_factorization(7, 5) is None
    top = build_topology("base", 37, degree=3)
    assert top.period <= period_bound(37, 3)
    np.testing.assert_allclose(_period_product(top), 1 / 37, atol=1e-12)


def test_arpack_gap_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    top = build_topology("random-regular", 200, degree=4, seed=0)
    dense = top.spectral_gap()
    monkeypatch.setattr(topologies, "DENSE_EIG_MAX_N", 10)
    top._cache.clear()
    assert top.spectral_gap() == pytest.approx(dense, abs=1e-8)
    # the gap bounds one gossip step's contraction, with equality on lambda_2's eigenvector
    w = _dense(top, 0)
    vals, vecs = np.linalg.eigh(w)
    v = vecs[:, np.argsort(np.abs(vals))[-2]]
    np.testing.assert_allclose(np.linalg.norm(top.mix(v, 0)), 1 - dense, atol=1e-8)


def test_mix_scales_to_ten_thousand_nodes() -> None:
    n, p = 10_000, 100
    x = np.random.default_rng(1).standard_normal((n, p))
    ring = build_topology("ring", n)
    assert ring.matrix(0).nnz == 3 * n
    np.testing.assert_allclose(
        ring.mix(x, 0), (x + np.roll(x, 1, axis=0) + np.roll(x, -1, axis=0)) / 3, atol=1e-12
    )
    expo = build_topology("exponential", n)
    offsets = expo.neighbors(0, 0)
    assert (
        expo.matrix(0).nnz == n * (len(offsets) + 1) and len(offsets) == 2 * 14
    )  # +-2^k, k = 0..13
    ref = x + sum(np.roll(x, -s, axis=0) for s in offsets)
    np.testing.assert_allclose(expo.mix(x, 0), ref / (len(offsets) + 1), atol=1e-10)
    base = build_topology("base-2", n)
    assert base.period <= period_bound(n, 1)
    y = x
    for t in range(base.period):
        assert base.matrix(t).nnz <= 2 * n
        assert max(len(base.neighbors(i, t)) for i in range(0, n, 97)) <= 1
        y = base.mix(y, t)
    np.testing.assert_allclose(y, np.broadcast_to(x.mean(axis=0), x.shape), atol=1e-10)
