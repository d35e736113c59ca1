"""Communication topologies and their mixing matrices W (doubly stochastic, sparse).

x <- W x averages each node's model with its neighbours'. Static graphs use
Metropolis-Hastings weights W_ij = 1 / (1 + max(d_i, d_j)) (1/(d+1) on d-regular graphs,
e.g. 1/3 on a ring); time-varying ones (one-peer exponential) have a ``period``. Matrices
are sparse so n = 10,000 nodes never builds an n x n array; the complete graph mixes by a
mean broadcast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

TOPOLOGIES = ("ring", "torus", "complete", "exponential", "one-peer-exponential",
              "erdos-renyi", "random-regular")


def metropolis_hastings(n: int, edges: np.ndarray) -> sp.csr_matrix:
    """W for an undirected graph given as an (m, 2) array of edges (i != j)."""
    if edges.size == 0:
        return sp.identity(n, format="csr")
    i, j = edges[:, 0], edges[:, 1]
    adj = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64).tocoo()
    deg = np.asarray(adj.sum(axis=1)).ravel()
    w = 1.0 / (1.0 + np.maximum(deg[adj.row], deg[adj.col]))
    off = sp.coo_matrix((w, (adj.row, adj.col)), shape=(n, n)).tocsr()
    diag = 1.0 - np.asarray(off.sum(axis=1)).ravel()
    return (off + sp.diags(diag)).tocsr()


@dataclass
class Topology:
    """A (possibly time-varying) gossip topology over ``n`` nodes."""

    name: str
    n: int
    matrices: list[sp.csr_matrix] = field(default_factory=list)  # one per step of a period
    complete: bool = False

    @property
    def period(self) -> int:
        return 1 if self.complete else len(self.matrices)

    def matrix(self, step: int) -> sp.csr_matrix:
        if self.complete:
            return sp.csr_matrix(np.full((self.n, self.n), 1.0 / self.n))
        return self.matrices[step % len(self.matrices)]

    def mix(self, x: np.ndarray, step: int) -> np.ndarray:
        """W_step @ x for x of shape (n, P)."""
        if self.complete:
            return np.broadcast_to(x.mean(axis=0, keepdims=True), x.shape).copy()
        return np.asarray(self.matrices[step % len(self.matrices)] @ x, dtype=x.dtype)

    def neighbors(self, i: int, step: int) -> np.ndarray:
        if self.complete:
            return np.array([j for j in range(self.n) if j != i])
        row = self.matrix(step).getrow(i)
        return np.sort(row.indices[(row.indices != i) & (row.data != 0)])

    def num_messages(self, step: int) -> int:
        if self.complete:
            return self.n * (self.n - 1)
        w = self.matrix(step).tocoo()
        return int(((w.row != w.col) & (w.data != 0)).sum())

    def spectral_gap(self, step: int = 0) -> float:
        """1 - |lambda_2| of W_step (dense eigen-decomposition: for n up to a few 1,000)."""
        if self.n == 1:
            return 1.0
        w = self.matrix(step).toarray()
        ev = np.sort(np.abs(np.linalg.eigvals(w)))[::-1]
        return float(1.0 - ev[1])


def _ring_edges(n: int) -> np.ndarray:
    if n < 2:
        return np.zeros((0, 2), np.int64)
    i = np.arange(n)
    edges = np.stack([i, (i + 1) % n], axis=1)
    return edges[edges[:, 0] != edges[:, 1]]


def _torus_shape(n: int) -> tuple[int, int]:
    best = None
    for r in range(3, math.isqrt(n) + 1):
        if n % r == 0 and n // r >= 3:
            best = (r, n // r)
    if best is None:
        raise ValueError(f"a 2-D torus needs n = r x c with r, c >= 3; n = {n} has no such "
                         "factorisation")
    return best


def _torus_edges(n: int) -> np.ndarray:
    r, c = _torus_shape(n)
    idx = np.arange(n).reshape(r, c)
    right = np.stack([idx.ravel(), np.roll(idx, -1, axis=1).ravel()], axis=1)
    down = np.stack([idx.ravel(), np.roll(idx, -1, axis=0).ravel()], axis=1)
    return np.concatenate([right, down])


def _exponential_edges(n: int) -> np.ndarray:
    """Node i linked to i + 2^k mod n for 2^k < n (both directions by symmetry)."""
    i = np.arange(n)
    hops = [2 ** k for k in range(max(math.ceil(math.log2(n)), 0)) if 2 ** k < n]
    edges = [np.stack([i, (i + h) % n], axis=1) for h in hops]
    if not edges:
        return np.zeros((0, 2), np.int64)
    e = np.concatenate(edges)
    return e[e[:, 0] != e[:, 1]]


def _one_peer_exponential(n: int) -> list[sp.csr_matrix]:
    """Step t: node i averages with i + 2^(t mod log2 n) (and receives from i - 2^...).

    Each step W = (I + P)/2 with P a cyclic shift: doubly stochastic; for n a power of 2
    the product over one period is exactly (1/n) 1 1^T.
    """
    if n == 1:
        return [sp.identity(1, format="csr")]
    tau = max(math.ceil(math.log2(n)), 1)
    mats = []
    for t in range(tau):
        h = 2 ** t % n
        i = np.arange(n)
        shift = sp.coo_matrix((np.ones(n), (i, (i + h) % n)), shape=(n, n))
        mats.append(((sp.identity(n) + shift) * 0.5).tocsr())
    return mats


def _erdos_renyi_edges(n: int, p: float, rng: np.random.Generator) -> np.ndarray:
    for _ in range(20):
        iu, ju = np.triu_indices(n, k=1)
        keep = rng.random(iu.size) < p
        edges = np.stack([iu[keep], ju[keep]], axis=1)
        if _connected(n, edges):
            return edges
    raise ValueError(f"Erdos-Renyi graph with n = {n}, p = {p} was not connected in 20 "
                     "draws; raise edge-probability")


def _random_regular_edges(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random connected simple d-regular graph (networkx's pairing algorithm)."""
    import networkx as nx

    if d >= n or (n * d) % 2:
        raise ValueError(f"a {d}-regular graph on {n} nodes needs d < n and n d even")
    for _ in range(50):
        g = nx.random_regular_graph(d, n, seed=int(rng.integers(2**31)))
        edges = np.array(list(g.edges()), dtype=np.int64).reshape(-1, 2)
        if _connected(n, edges):
            return edges
    raise ValueError(f"could not draw a connected {d}-regular graph on {n} nodes")


def _connected(n: int, edges: np.ndarray) -> bool:
    if n <= 1:
        return True
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, _ = sp.csgraph.connected_components(adj, directed=False)
    return count == 1


def build_topology(name: str, n: int, *, degree: int = 4, edge_probability: float = 0.1,
                   seed: int = 0) -> Topology:
    """The topology ``name`` over ``n`` nodes (ValueError for impossible inputs)."""
    if n < 1:
        raise ValueError("a topology needs at least one node")
    rng = np.random.default_rng([seed, 6007])
    if name == "complete":
        return Topology(name, n, complete=True)
    if name == "one-peer-exponential":
        return Topology(name, n, _one_peer_exponential(n))
    if name in ("base-2", "base"):
        from flowerbed.platform.base_graph import base_graph_matrices

        k = 1 if name == "base-2" else degree
        return Topology(name, n, [sp.csr_matrix(m) for m in base_graph_matrices(n, k)])
    edge_builders = {
        "ring": lambda: _ring_edges(n),
        "torus": lambda: _torus_edges(n),
        "exponential": lambda: _exponential_edges(n),
        "erdos-renyi": lambda: _erdos_renyi_edges(n, edge_probability, rng),
        "random-regular": lambda: _random_regular_edges(n, degree, rng),
    }
    if name not in edge_builders:
        raise ValueError(f"unknown topology {name!r}; one of " + ", ".join(TOPOLOGIES))
    return Topology(name, n, [metropolis_hastings(n, edge_builders[name]())])
