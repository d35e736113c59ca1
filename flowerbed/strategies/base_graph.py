"""Base-(k+1) graphs (Takezawa et al., NeurIPS 2023, arXiv 2305.11420).

A finite sequence of symmetric, doubly stochastic mixing matrices W_0..W_{m-1} over ANY number
of nodes n in which every node talks to at most k peers per step and whose product is exactly
(1/n) 1 1^T: after m steps every node holds the exact average, m <= 2 log_{k+1}(n) + 2.

Three building blocks (own implementation of the paper's construction):

* k-peer hyper-hypercube, for n whose prime factors are all <= k+1: write n = f_1 ... f_L
  (each f_l <= k+1, as few factors as possible) and index nodes in that mixed radix; at step l
  every node averages uniformly with the f_l nodes that differ from it only in digit l.
* simple Base-(k+1), for any n: split the nodes into groups V_1..V_L of sizes
  n_l = a_l (k+1)^{p_l} (the base-(k+1) digits of n, p_1 > ... > p_L, 1 <= a_l <= k), each
  V_l made of a_l subgroups of (k+1)^{p_l} nodes. (1) Hyper-hypercubes average every group.
  (2) For l = 1..L-1: every node of the smaller groups V_{l+1..L} pairs with one node of each
  subgroup of V_l, with weights that leave every subgroup of V_l and the union of the smaller
  groups at the average of V_l ∪ ... ∪ V_L; then (3) V_l's subgroups run their hyper-hypercubes
  while V_{l+1} takes its turn. Smaller groups stay uniform throughout, which makes the
  induction work; the last group ends at the global average.
* Base-(k+1): with n_power the largest divisor of n whose prime factors are <= k+1 and
  n_rest = n / n_power, run simple Base-(k+1) graphs on n_power blocks of n_rest nodes in
  parallel, then hyper-hypercubes across the blocks; keep whichever of this and the simple
  Base-(k+1) graph over all n nodes is shorter.

Like the paper's code, groups that have finished keep cycling their own steps (and idle nodes
of a pairing step average in cliques): this leaves the exact-consensus property intact and
mixes more when the models change between steps, as they do in decentralized SGD.

A step is kept as its off-diagonal entries (rows, cols, weights), symmetric; the diagonal is
``1 - row sum``, which makes every W doubly stochastic by construction.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import scipy.sparse as sp

# Off-diagonal entries of one step: (rows, cols, weights), both directions of every edge.
Step = tuple[np.ndarray, np.ndarray, np.ndarray]


def _empty_step() -> Step:
    return (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))


def _merge(steps: list[Step]) -> Step:
    """Steps of disjoint node sets run in parallel: one step."""
    if not steps:
        return _empty_step()
    rows, cols, vals = zip(*steps, strict=True)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _cliques(groups: np.ndarray) -> Step:
    """Uniform averaging inside each row of ``groups`` (shape: cliques x size)."""
    size = groups.shape[1]
    if size < 2 or groups.shape[0] == 0:
        return _empty_step()
    rows = np.repeat(groups, size, axis=1).ravel()
    cols = np.tile(groups, (1, size)).ravel()
    off = rows != cols
    rows, cols = rows[off], cols[off]
    return rows, cols, np.full(rows.size, 1.0 / size)


@cache
def min_factorization(n: int, k: int) -> tuple[int, ...] | None:
    """The fewest factors, each in 2..k+1, whose product is n (None if n has a prime > k+1).

    Fewer factors is a shorter hyper-hypercube; n = 1 needs none.
    """
    if n == 1:
        return ()
    if n <= k + 1:
        return (n,)
    best: tuple[int, ...] | None = None
    for f in range(min(k + 1, n), 1, -1):
        if n % f:
            continue
        rest = min_factorization(n // f, k)
        if rest is not None and (best is None or len(rest) + 1 < len(best)):
            best = (*rest, f)
    return best


def hyper_hypercube(nodes: np.ndarray, k: int) -> list[Step]:
    """k-peer hyper-hypercube on ``nodes`` (global ids); requires all primes of len <= k+1."""
    factors = min_factorization(len(nodes), k)
    if factors is None:
        raise ValueError(f"{len(nodes)} nodes have a prime factor above k+1 = {k + 1}")
    idx = np.arange(len(nodes))
    steps: list[Step] = []
    stride = 1
    for f in factors:
        digit = (idx // stride) % f
        bases = idx[digit == 0]
        groups = bases[:, None] + stride * np.arange(f)[None, :]
        steps.append(_cliques(nodes[groups]))
        stride *= f
    return steps


def _base_digits(n: int, k: int) -> list[tuple[int, int]]:
    """n = sum a_l (k+1)^p_l as (a_l, p_l), highest power first, zero digits skipped."""
    digits: list[tuple[int, int]] = []
    p = 0
    while n:
        n, a = divmod(n, k + 1)
        if a:
            digits.append((a, p))
        p += 1
    return digits[::-1]


def simple_base_graph(nodes: np.ndarray, k: int) -> list[Step]:
    """Simple Base-(k+1) graph on ``nodes`` (global ids); see the module docstring."""
    n = len(nodes)
    if min_factorization(n, k) is not None:
        return hyper_hypercube(nodes, k)
    digits = _base_digits(n, k)
    sizes = [a * (k + 1) ** p for a, p in digits]
    starts = np.cumsum([0, *sizes])
    groups = [nodes[starts[i] : starts[i + 1]] for i in range(len(sizes))]
    # subgroups[l]: a_l x (k+1)^p_l array of node ids.
    subgroups = [g.reshape(a, (k + 1) ** p) for g, (a, p) in zip(groups, digits, strict=True)]
    whole = [hyper_hypercube(g, k) for g in groups]
    inner = [hyper_hypercube(sg[0], k) for sg in subgroups]
    num_groups = len(groups)

    def cycle(schedule: list[list[Step]], l_: int, t: int) -> Step:
        """Step t of group l's schedule, repeated cyclically (nothing if it has no steps)."""
        return schedule[l_][t % len(schedule[l_])] if schedule[l_] else _empty_step()

    def inner_step(l_: int, t: int) -> Step:
        """Hyper-hypercube step t inside every subgroup of group l, in parallel."""
        if not inner[l_]:
            return _empty_step()
        return _merge([hyper_hypercube(sg, k)[t % len(inner[l_])] for sg in subgroups[l_]])

    steps: list[Step] = []
    # (1) average every group.
    for t in range(len(whole[0])):
        steps.append(_merge([cycle(whole, l_, t) for l_ in range(num_groups)]))
    # (2)+(3) group s absorbs the smaller groups, then averages inside its subgroups.
    total_len = len(whole[0]) + digits[0][1] + 1
    for s in range(num_groups - 1):
        parts: list[Step] = []
        a_s, _ = digits[s]
        remaining = sum(sizes[s:])
        weight = sizes[s] / remaining / a_s
        smaller = np.concatenate(groups[s + 1 :])
        partners = subgroups[s][:, : len(smaller)]  # a_s x R, R < (k+1)^p_s
        rows = np.repeat(smaller, a_s)
        cols = partners.T.ravel()
        parts.append(
            (
                np.concatenate([rows, cols]),
                np.concatenate([cols, rows]),
                np.full(2 * rows.size, weight),
            )
        )
        idle = subgroups[s][:, len(smaller) :].ravel()  # all hold V_s's (uniform) value
        full = idle.size // (k + 1) * (k + 1)
        parts.append(_cliques(idle[:full].reshape(-1, k + 1)))
        if idle.size - full:
            parts.append(_cliques(idle[full:][None, :]))
        for done in range(s):
            parts.append(inner_step(done, len(steps) - (len(whole[0]) + done + 1)))
        steps.append(_merge(parts))
    while len(steps) < total_len:
        t = len(steps)
        steps.append(
            _merge([inner_step(d, t - (len(whole[0]) + d + 1)) for d in range(num_groups)])
        )
    return steps


def _largest_smooth_divisor(n: int, k: int) -> int:
    """The largest divisor of n whose prime factors are all <= k+1."""
    d = 1
    for p in range(2, k + 2):
        while n % p == 0:
            n //= p
            d *= p
    return d


def base_graph_steps(n: int, k: int) -> list[Step]:
    """Base-(k+1) graph on n nodes: the shorter of simple Base-(k+1) and the combination."""
    if n < 1 or k < 1:
        raise ValueError(f"Base-(k+1) graph needs n >= 1 and k >= 1, got n={n}, k={k}")
    nodes = np.arange(n)
    simple = simple_base_graph(nodes, k)
    n_power = _largest_smooth_divisor(n, k)
    n_rest = n // n_power
    if n_power == 1 or n_rest == 1:
        return simple
    blocks = nodes.reshape(n_power, n_rest)
    first = [simple_base_graph(b, k) for b in blocks]
    second = [hyper_hypercube(blocks[:, j], k) for j in range(n_rest)]
    combined = [_merge([f[t] for f in first]) for t in range(len(first[0]))]
    combined += [_merge([s[t] for s in second]) for t in range(len(second[0]))]
    return combined if len(combined) <= len(simple) else simple


def step_matrix(n: int, step: Step) -> sp.csr_matrix:
    """W of one step: the off-diagonal entries plus the diagonal 1 - row sum."""
    rows, cols, vals = step
    off = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    diag = 1.0 - np.asarray(off.sum(axis=1)).ravel()
    w = (off + sp.diags(diag)).tocsr()
    w.eliminate_zeros()
    return w


def base_graph_matrices(n: int, k: int) -> list[sp.csr_matrix]:
    """The mixing matrices of one period of the Base-(k+1) graph (identity for n = 1)."""
    steps = base_graph_steps(n, k) or [_empty_step()]
    return [step_matrix(n, s) for s in steps]


def period_bound(n: int, k: int) -> float:
    """The paper's bound on the period, 2 log_{k+1}(n) + 2."""
    return 2 * math.log(n, k + 1) + 2
