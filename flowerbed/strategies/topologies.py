"""Communication topologies of decentralized learning and their mixing matrices.

A topology is a (possibly time-varying, with period ``period``) sequence of doubly stochastic
mixing matrices W_t: one gossip exchange is x_i <- sum_j W_t[i, j] x_j, i.e. node i receives
the model of every j with W_t[i, j] != 0 (D-PSGD, Lian et al. 2017). Pure NumPy/SciPy; the
decentralized strategies and the ledger build on this interface.

Names (``TOPOLOGIES``): ring, torus, complete, exponential, one-peer-exponential,
erdos-renyi, random-regular, base-2, base. Impossible inputs raise ValueError.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import LinearOperator, eigs, eigsh

from flowerbed.core.rng import Stream, stream
from flowerbed.strategies.base_graph import base_graph_matrices

logger = logging.getLogger(__name__)

TOPOLOGIES: tuple[str, ...] = (
    "ring",
    "torus",
    "complete",
    "exponential",
    "one-peer-exponential",
    "erdos-renyi",
    "random-regular",
    "base-2",
    "base",
)

# Above this many nodes spectral_gap uses ARPACK (sparse, Lanczos) instead of a dense eig.
DENSE_EIG_MAX_N = 500
# The complete graph refuses to materialise W beyond this many entries (use mix()).
COMPLETE_MATRIX_MAX_ENTRIES = 25_000_000
# Samples an Erdos-Renyi or random regular graph gets to come out connected.
CONNECT_ATTEMPTS = 10


class Topology:
    """A periodic sequence of n x n doubly stochastic mixing matrices W_0..W_{period-1}.

    Subclasses provide ``_build(phase)``; matrices are built once and cached. ``symmetric``
    says whether every W_t equals its transpose (then row i lists both whom node i receives
    from and whom it sends to).
    """

    symmetric: bool = True
    scratch_fields = ("_cache", "_typed")  # matrices built from (name, n, period) on demand

    def __init__(self, name: str, n: int, period: int = 1) -> None:
        self.name = name
        self.n = n
        self.period = period
        self._cache: dict[int, sp.csr_matrix] = {}
        self._typed: dict[tuple[int, np.dtype], sp.csr_matrix] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={self.n}, period={self.period})"

    # -- to override -------------------------------------------------------------------
    def _build(self, phase: int) -> sp.csr_matrix:
        raise NotImplementedError

    def _eigenvalues(self, phase: int) -> np.ndarray | None:
        """All eigenvalues of W_phase in closed form, or None if unknown."""
        return None

    # -- public interface --------------------------------------------------------------
    def phase(self, step: int) -> int:
        """Index into the period of gossip step ``step`` (steps count from 0)."""
        return int(step) % self.period

    def matrix(self, step: int) -> sp.csr_matrix:
        """W_step as a CSR matrix (time-varying graphs use step % period); cached: read only."""
        p = self.phase(step)
        if p not in self._cache:
            self._cache[p] = self._build(p)
        return self._cache[p]

    def mix(self, x: np.ndarray, step: int) -> np.ndarray:
        """W_step @ x for x of shape (n,) or (n, P).

        Floating x keeps its dtype and is mixed in it (float32 models: a float32 copy of W,
        so no float64 temporary of the size of all models); other dtypes mix in float64.
        """
        x = self._check_x(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
        key = (self.phase(step), dtype)
        if key not in self._typed:
            w = self.matrix(step)
            self._typed[key] = w if w.dtype == dtype else w.astype(dtype)
        return self._typed[key] @ x

    def in_neighbors(self, i: int, step: int) -> np.ndarray:
        """Sorted peers whose models node i receives at this step (W[i, j] != 0, j != i)."""
        w = self.matrix(step)
        row = w.indices[w.indptr[i] : w.indptr[i + 1]]
        return np.sort(row[row != i])

    def out_neighbors(self, i: int, step: int) -> np.ndarray:
        """Sorted peers that receive node i's model at this step (W[j, i] != 0, j != i)."""
        if self.symmetric:
            return self.in_neighbors(i, step)
        col = self.matrix(step)[:, i].tocoo().row
        return np.sort(col[col != i])

    def neighbors(self, i: int, step: int) -> np.ndarray:
        """Sorted peers node i exchanges with at this step (receives from or sends to)."""
        if self.symmetric:
            return self.in_neighbors(i, step)
        return np.union1d(self.in_neighbors(i, step), self.out_neighbors(i, step))

    def edges(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(src, dst) of every directed peer message of one exchange: src's model to dst."""
        w = self.matrix(step).tocoo()
        off = w.row != w.col
        return w.col[off], w.row[off]

    def num_messages(self, step: int) -> int:
        """Directed peer messages of one exchange: nonzero off-diagonal entries of W_step."""
        w = self.matrix(step)
        return int(w.nnz - np.count_nonzero(w.diagonal()))

    def spectral_gap(self, step: int = 0) -> float:
        """1 - |lambda_2(W_step)|, lambda_2 the second largest eigenvalue in modulus.

        Closed form (FFT of the circulant kernel) where known; otherwise a dense eig for
        n <= DENSE_EIG_MAX_N and ARPACK (largest modulus of W - (1/n) 1 1^T, sparse) above.
        One step of a time-varying graph is usually disconnected: its gap is then 0.
        """
        if self.n == 1:
            return 1.0
        p = self.phase(step)
        eig = self._eigenvalues(p)
        if eig is None and self.n <= DENSE_EIG_MAX_N:
            dense = self.matrix(p).toarray()
            eig = np.linalg.eigvalsh(dense) if self.symmetric else np.linalg.eigvals(dense)
        if eig is not None:
            moduli = np.sort(np.abs(eig))[::-1]
            return float(np.clip(1.0 - moduli[1], 0.0, 1.0))
        # W is doubly stochastic, so W - J has W's spectrum with the eigenvalue 1 replaced by 0.
        w = self.matrix(p)
        dtype = np.float64 if self.symmetric else np.complex128
        op = LinearOperator((self.n, self.n), matvec=lambda v: w @ v - v.mean(), dtype=dtype)
        solver = eigsh if self.symmetric else eigs
        lam = solver(op, k=1, which="LM", return_eigenvectors=False, tol=1e-10, maxiter=100_000)
        return float(np.clip(1.0 - abs(lam[0]), 0.0, 1.0))

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim not in (1, 2) or x.shape[0] != self.n:
            raise ValueError(f"mix expects shape (n,) or (n, P) with n={self.n}, got {x.shape}")
        return x


def _as_dtype(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if np.issubdtype(like.dtype, np.floating):
        return y.astype(like.dtype, copy=False)
    return y


class MatrixTopology(Topology):
    """A topology given by its explicit list of matrices (one per phase)."""

    def __init__(self, name: str, matrices: list[sp.csr_matrix], *, symmetric: bool = True) -> None:
        super().__init__(name, matrices[0].shape[0], len(matrices))
        self.symmetric = symmetric
        self._matrices = matrices

    def _build(self, phase: int) -> sp.csr_matrix:
        return self._matrices[phase]


class CirculantTopology(Topology):
    """W_t[i, (i + s) % n] = kernel_t[s]: ring, exponential and one-peer exponential graphs.

    Eigenvalues in closed form: the DFT of the kernel (W is circulant).
    """

    def __init__(self, name: str, n: int, kernels: list[dict[int, float]]) -> None:
        super().__init__(name, n, len(kernels))
        self._kernels = []
        for kernel in kernels:
            row = np.zeros(n)
            for s, w in kernel.items():
                row[s % n] += w
            self._kernels.append(row)
        self.symmetric = all(np.allclose(r, np.roll(r[::-1], 1)) for r in self._kernels)

    def _build(self, phase: int) -> sp.csr_matrix:
        row = self._kernels[phase]
        shifts = np.flatnonzero(row)
        rows = np.repeat(np.arange(self.n), shifts.size)
        cols = (rows + np.tile(shifts, self.n)) % self.n
        vals = np.tile(row[shifts], self.n)
        return sp.csr_matrix((vals, (rows, cols)), shape=(self.n, self.n))

    def _eigenvalues(self, phase: int) -> np.ndarray:
        return np.fft.fft(self._kernels[phase])


class TorusTopology(Topology):
    """2-D torus of r x c nodes (node a*c + b at row a, column b), weights 1/5."""

    def __init__(self, n: int) -> None:
        super().__init__("torus", n)
        self.shape = torus_shape(n)
        r, c = self.shape
        self._kernel = np.zeros((r, c))
        for da, db in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
            self._kernel[da % r, db % c] = 1.0 / 5.0

    def _build(self, phase: int) -> sp.csr_matrix:
        r, c = self.shape
        a, b = np.divmod(np.arange(self.n), c)
        rows, cols = [], []
        for da, db in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
            rows.append(a * c + b)
            cols.append(((a + da) % r) * c + (b + db) % c)
        rows_, cols_ = np.concatenate(rows), np.concatenate(cols)
        vals = np.full(rows_.size, 1.0 / 5.0)
        return sp.csr_matrix((vals, (rows_, cols_)), shape=(self.n, self.n))

    def _eigenvalues(self, phase: int) -> np.ndarray:
        return np.fft.fft2(self._kernel).ravel()


class CompleteTopology(Topology):
    """Everyone averages with everyone: W = (1/n) 1 1^T, mixed as a mean broadcast."""

    def __init__(self, n: int) -> None:
        super().__init__("complete", n)

    def _build(self, phase: int) -> sp.csr_matrix:
        if self.n * self.n > COMPLETE_MATRIX_MAX_ENTRIES:
            raise ValueError(
                f"the complete graph on n={self.n} nodes has n^2 = {self.n**2} entries; "
                "use mix() (a mean broadcast) instead of matrix()"
            )
        return sp.csr_matrix(np.full((self.n, self.n), 1.0 / self.n))

    def mix(self, x: np.ndarray, step: int) -> np.ndarray:
        x = self._check_x(x)
        mean = x.mean(axis=0, dtype=np.float64)
        return _as_dtype(np.repeat(mean[None, ...], self.n, axis=0), x)

    def in_neighbors(self, i: int, step: int) -> np.ndarray:
        return np.delete(np.arange(self.n), i)

    def edges(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        self.matrix(step)  # the same size guard
        src, dst = np.meshgrid(np.arange(self.n), np.arange(self.n))
        off = src != dst
        return src[off], dst[off]

    def num_messages(self, step: int) -> int:
        return self.n * (self.n - 1)

    def spectral_gap(self, step: int = 0) -> float:
        return 1.0


def torus_shape(n: int) -> tuple[int, int]:
    """r x c = n with r, c >= 3 and r <= c as close as possible (a 2-D torus without loops)."""
    for r in range(math.isqrt(n), 2, -1):
        if n % r == 0 and n // r >= 3:
            return r, n // r
    raise ValueError(
        f"torus needs n = r * c with r, c >= 3 (e.g. 9, 12, 15, 16, 20, 25); got n={n}"
    )


def metropolis_hastings(adjacency: sp.spmatrix) -> sp.csr_matrix:
    """W_ij = 1 / (1 + max(d_i, d_j)) on edges, W_ii = 1 - sum_j W_ij (symmetric, DS)."""
    a = sp.triu(sp.csr_matrix(adjacency), k=1).tocoo()
    n = adjacency.shape[0]
    deg = np.asarray((sp.csr_matrix(adjacency) != 0).sum(axis=1)).ravel()
    w = 1.0 / (1.0 + np.maximum(deg[a.row], deg[a.col]))
    off = sp.csr_matrix(
        (np.concatenate([w, w]), (np.concatenate([a.row, a.col]), np.concatenate([a.col, a.row]))),
        shape=(n, n),
    )
    return (off + sp.diags(1.0 - np.asarray(off.sum(axis=1)).ravel())).tocsr()


def _is_connected(adjacency: sp.spmatrix) -> bool:
    return connected_components(adjacency, directed=False)[0] == 1


def _erdos_renyi_adjacency(n: int, p: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Upper-triangular G(n, p) sample, symmetrised; drawn in row blocks to bound memory."""
    rows, cols = [], []
    block = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n, block):
        stop = min(n, start + block)
        hit = rng.random((stop - start, n)) < p
        r, c = np.nonzero(hit)
        r = r + start
        keep = c > r
        rows.append(r[keep])
        cols.append(c[keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    data = np.ones(2 * r.size)
    return sp.csr_matrix((data, (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n))


def erdos_renyi(n: int, p: float, seed: int) -> MatrixTopology:
    """Connected G(n, p) with Metropolis-Hastings weights; resamples, then fails clearly."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"erdos-renyi edge probability must be in (0, 1], got {p}")
    rng = stream(seed, Stream.ERDOS_RENYI)
    for _ in range(CONNECT_ATTEMPTS):
        adj = _erdos_renyi_adjacency(n, p, rng)
        if _is_connected(adj):
            return MatrixTopology("erdos-renyi", [metropolis_hastings(adj)])
        logger.info("erdos-renyi sample (n=%d, p=%g) disconnected; resampling", n, p)
    threshold = math.log(n) / n if n > 1 else 0.0
    raise ValueError(
        f"erdos-renyi graph with n={n}, edge probability {p} was disconnected in "
        f"{CONNECT_ATTEMPTS} samples (seed {seed}); raise the edge probability "
        f"(connectivity needs roughly p > ln(n)/n = {threshold:.3g})"
    )


def _random_regular_edges(n: int, d: int, rng: np.random.Generator) -> np.ndarray | None:
    """A simple d-regular graph's edges (m x 2), or None if this sample got stuck.

    Configuration model (random pairing of n*d stubs), then loops and repeated edges are
    removed by random degree-preserving double-edge swaps: near-uniform, fast for d << n.
    """
    stubs = np.repeat(np.arange(n), d)
    rng.shuffle(stubs)
    edges = np.sort(stubs.reshape(-1, 2), axis=1)
    m = len(edges)
    count: dict[tuple[int, int], int] = {}
    for u, v in edges.tolist():
        count[(u, v)] = count.get((u, v), 0) + 1

    def bad(i: int) -> bool:
        u, v = int(edges[i, 0]), int(edges[i, 1])
        return u == v or count[(u, v)] > 1

    todo = [i for i in range(m) if bad(i)]
    budget = 100 * (len(todo) + 10)
    while todo and budget:
        budget -= 1
        b = todo[-1]
        if not bad(b):
            todo.pop()
            continue
        g = int(rng.integers(m))
        (a1, b1), (a2, b2) = edges[b].tolist(), edges[g].tolist()
        if rng.random() < 0.5:
            a2, b2 = b2, a2
        e1, e2 = tuple(sorted((a1, a2))), tuple(sorted((b1, b2)))
        if g == b or e1[0] == e1[1] or e2[0] == e2[1] or e1 == e2:
            continue
        if count.get(e1, 0) or count.get(e2, 0):
            continue
        for old in (tuple(edges[b].tolist()), tuple(edges[g].tolist())):
            count[old] -= 1
        count[e1] = 1
        count[e2] = 1
        edges[b], edges[g] = e1, e2
        if bad(g):
            todo.append(g)
    return None if todo else edges


def _check_random_regular(n: int, d: int) -> None:
    if not 1 <= d <= n - 1:
        raise ValueError(f"random-regular degree must be in 1..n-1 = {n - 1}, got {d}")
    if (n * d) % 2:
        raise ValueError(f"random-regular needs n * degree even, got n={n}, degree={d}")


def random_regular(n: int, d: int, seed: int) -> MatrixTopology:
    """Connected random d-regular graph, weights 1/(d+1) (self included)."""
    _check_random_regular(n, d)
    rng = stream(seed, Stream.RANDOM_REGULAR)
    # Dense graphs: sample the sparser complement, which is (n-1-d)-regular.
    complement = d > (n - 1) // 2
    d_sample = n - 1 - d if complement else d
    for _ in range(CONNECT_ATTEMPTS):
        edges = _random_regular_edges(n, d_sample, rng) if d_sample else np.empty((0, 2), int)
        if edges is None:
            continue
        adj = sp.csr_matrix(
            (np.ones(2 * len(edges)), (edges.ravel(), edges[:, ::-1].ravel())), shape=(n, n)
        )
        if complement:
            adj = sp.csr_matrix(1.0 - adj.toarray() - np.eye(n))
        if _is_connected(adj):
            w = (adj / (d + 1) + sp.identity(n) / (d + 1)).tocsr()
            return MatrixTopology("random-regular", [w])
        logger.info("random-regular sample (n=%d, d=%d) disconnected; resampling", n, d)
    raise ValueError(
        f"random-regular graph with n={n}, degree={d} was not connected in "
        f"{CONNECT_ATTEMPTS} samples (seed {seed}); degree 1 and 2 graphs rarely are: "
        "use degree >= 3 (or the ring)"
    )


def ring(n: int) -> CirculantTopology:
    """Ring with 1/3 weights (n >= 3); n = 2 averages the pair, n = 1 is the identity."""
    if n == 1:
        return CirculantTopology("ring", 1, [{0: 1.0}])
    if n == 2:
        return CirculantTopology("ring", 2, [{0: 0.5, 1: 0.5}])
    return CirculantTopology("ring", n, [{0: 1 / 3, 1: 1 / 3, -1: 1 / 3}])


def exponential(n: int) -> CirculantTopology:
    """Static exponential graph: i linked to i +- 2^k mod n (2^k < n), uniform 1/(d+1).

    The graph is circulant hence regular, so uniform and Metropolis-Hastings weights agree.
    """
    offsets: set[int] = set()
    power = 1
    while power < n:
        offsets |= {power % n, -power % n}
        power *= 2
    w = 1.0 / (len(offsets) + 1)
    return CirculantTopology("exponential", n, [{0: w} | dict.fromkeys(offsets, w)])


def one_peer_exponential(n: int) -> CirculantTopology:
    """One-peer exponential graph (Ying et al. 2021): at step t node i averages with i + 2^t.

    W_t = (I + P_t) / 2 with P_t the shift by 2^(t mod tau), tau = ceil(log2 n): directed
    (i receives from i + 2^t, sends to i - 2^t), doubly stochastic, one message per node.
    For n = 2^tau the product of one period is exactly (1/n) 1 1^T; for other n the period is
    still ceil(log2 n) with offsets 2^t < n, mixing well but not exactly.
    """
    if n == 1:
        return CirculantTopology("one-peer-exponential", 1, [{0: 1.0}])
    tau = max(1, math.ceil(math.log2(n)))
    return CirculantTopology("one-peer-exponential", n, [{0: 0.5, 2**t: 0.5} for t in range(tau)])


def base_graph(n: int, k: int, name: str) -> MatrixTopology:
    """Base-(k+1) graph: exact consensus after one period, <= k peers per node per step."""
    if k < 1:
        raise ValueError(f"base graph needs degree (k) >= 1, got {k}")
    return MatrixTopology(name, base_graph_matrices(n, k))


def check_topology(name: str, n: int, *, degree: int = 4) -> None:
    """Raise ValueError if ``name`` cannot exist on n nodes, without building it (cheap even
    for large n). Random graphs that may come out disconnected are only found out by
    :func:`build_topology`."""
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}; valid: {', '.join(TOPOLOGIES)}")
    if name == "torus":
        torus_shape(n)
    elif name == "random-regular":
        _check_random_regular(n, degree)
    elif name == "base" and degree < 1:
        raise ValueError(f"base graph needs degree (k) >= 1, got {degree}")


def build_topology(
    name: str,
    n: int,
    *,
    degree: int = 4,
    edge_probability: float = 0.1,
    seed: int = 0,
) -> Topology:
    """The topology ``name`` on n nodes.

    ``degree``: d of random-regular and k of base (Base-(k+1)); ``edge_probability``:
    erdos-renyi; ``seed``: the random graphs.
    """
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}; valid: {', '.join(TOPOLOGIES)}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"topology needs an integer number of nodes n >= 1, got {n!r}")
    n = int(n)
    if name == "ring":
        return ring(n)
    if name == "torus":
        return TorusTopology(n)
    if name == "complete":
        return CompleteTopology(n)
    if name == "exponential":
        return exponential(n)
    if name == "one-peer-exponential":
        return one_peer_exponential(n)
    if name == "erdos-renyi":
        return erdos_renyi(n, edge_probability, seed)
    if name == "random-regular":
        return random_regular(n, degree, seed)
    if name == "base-2":
        return base_graph(n, 1, name)
    return base_graph(n, degree, name)
