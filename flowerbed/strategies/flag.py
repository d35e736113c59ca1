"""The Flag Aggregator (Almasi, Mishra, Velasquez, Ravi et al., "Flag Aggregator: Scalable
Distributed Training under Failures and Augmented Losses using Convex Optimization",
ICLR 2024; official code hamidralmasi/FlagAggregator, ``aggregators/flag_median.py`` and
``center_algorithms_torch.py``, read to pin every step below).

Each update is normalised, x_i = Delta_i / ||Delta_i||, and the aggregator looks for the
r-dimensional subspace Y (d x r, orthonormal columns) that best explains all of them in the
"flag median" sense: it minimises sum_i sqrt(1 - ||Y^T x_i||^2) (the sines of the angles
between the updates and the subspace), which down-weights updates far from the subspace the
others agree on. It is solved by iteratively reweighted least squares (FlagIRLS): with
weights w_i = (|1 - ||Y^T x_i||^2| + eps)^(-1/4), eps = 1e-7, Y is the top-r left singular
vectors of [w_1 x_1, ..., w_m x_m] (computed from their m x m Gram matrix); at most
``flag-iterations`` (official: 4) steps, from a seeded random orthonormal start, stopping
early when the objective stops decreasing (and keeping the previous Y if the last step made
it worse). With ``flag-lambda`` > 0 the
pairwise differences x_i - x_j join the columns with weights lambda / (m (m - 1)) times
the same reweighting (the paper's augmented-loss regulariser; official default 0).
The aggregate is sum_i Y Y^T x_i / r, exactly as the official code returns it.

Scale: that aggregate is built from unit vectors, so its norm is of the order of m / r,
whatever the size of the updates; the official code feeds it to SGD as a gradient with the
learning rate tuned for it. Used as a federated update with server-lr 1 that is far too large,
so ``flag-scale = "median-norm"`` (the default here) rescales it to the median norm of the
inputs; ``"official"`` keeps it as the code returns it. The random start is drawn from this
run's seed (the official code uses ``torch.manual_seed(1)``), and r is capped at m.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowerbed.core.arrays import State
from flowerbed.core.params import non_negative, one_of, param, positive
from flowerbed.core.rng import Stream, stream
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate
from flowerbed.strategies.robust_common import deltas, step

EPS = 1e-7  # the official weight perturbation


@dataclass(frozen=True)
class FlagParams(CentralizedParams):
    flag_columns: int = param(8, "Flag Aggregator: subspace dimension r (official r_col = 8)",
                              positive)
    flag_iterations: int = param(4, "Flag Aggregator: FlagIRLS iterations (official 4)",
                                 positive)
    flag_lambda: float = param(0.0, "Flag Aggregator: pairwise regulariser lambda",
                               non_negative)
    flag_scale: str = param("median-norm", "Flag Aggregator: 'median-norm' (rescale to the "
                            "inputs' median norm) or 'official' (as the code returns it)",
                            one_of("median-norm", "official"))


def sine_objective(x: np.ndarray, y: np.ndarray) -> float:
    """sum_i sqrt(max(0, 1 - ||Y^T x_i||^2)) for unit columns x_i (rows of ``x``)."""
    proj = np.sum((x @ y) ** 2, axis=1)
    return float(np.sqrt(np.maximum(1.0 - proj, 0.0)).sum())


def irls_step(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """One FlagIRLS step: the weighted flag mean of the (reweighted) inputs."""
    r = y.shape[1]
    w = (np.abs(1.0 - np.sum((x @ y) ** 2, axis=1)) + EPS) ** -0.25
    cols = [x * w[:, None]]
    m = len(x)
    if lam > 0 and m > 1:
        i, j = np.where(~np.eye(m, dtype=bool))
        diff = x[i] - x[j]
        wd = ((np.abs(1.0 - np.sum((diff @ y) ** 2, axis=1)) + EPS) ** -0.25
              * lam / (m * (m - 1)))
        cols.append(diff * wd[:, None])
    return top_left_singular(np.concatenate(cols).T, r)


def top_left_singular(a: np.ndarray, r: int) -> np.ndarray:
    """The top-r left singular vectors of a tall (d, k) matrix, k << d.

    From the small Gram matrix: A^T A = V S^2 V^T, U = A V S^-1 (k x k work instead of a
    d x k SVD); a full SVD when A is (numerically) of rank < r.
    """
    vals, vecs = np.linalg.eigh(a.T @ a)
    order = np.argsort(vals)[::-1][:r]
    s = np.sqrt(np.maximum(vals[order], 0.0))
    if len(s) < r or s[-1] <= 1e-10 * max(s[0], 1e-300):
        return np.linalg.svd(a, full_matrices=False)[0][:, :r]
    return (a @ vecs[:, order]) / s


def flag_subspace(x: np.ndarray, r: int, iterations: int, lam: float,
                  rng: np.random.Generator) -> np.ndarray:
    """FlagIRLS for the flag median of the unit rows of ``x``: Y of shape (d, r)."""
    y = np.linalg.qr(rng.random((x.shape[1], r)) - 0.5)[0][:, :r]
    err = [sine_objective(x, y)]
    prev, diff = y, 1.0
    while len(err) <= iterations and diff > 1e-10 and err[-1] > 1e-10:
        prev = y
        y = irls_step(x, y, lam)
        err.append(sine_objective(x, y))
        diff = err[-2] - err[-1]
    return y if diff > 0 else prev


def flag_aggregate(d: np.ndarray, r: int, iterations: int, lam: float,
                   rng: np.random.Generator, scale: str = "official") -> np.ndarray:
    """sum_i Y Y^T x_i / r of the normalised rows x_i of ``d`` (see the module docstring)."""
    norms = np.linalg.norm(d, axis=1)
    keep = norms > 0
    if not keep.any():
        return np.zeros(d.shape[1])
    x = d[keep] / norms[keep, None]
    r = min(r, len(x))
    y = flag_subspace(x, r, iterations, lam, rng)
    out = y @ (y.T @ x.sum(axis=0)) / r
    if scale == "median-norm":
        n = np.linalg.norm(out)
        out = out * (float(np.median(norms)) / n) if n > 0 else out
    return out


class FlagAggregator(CentralizedStrategy):
    """The Flag Aggregator on the clients' updates; see the module docstring."""

    Params = FlagParams

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        p = self.params
        rng = stream(self.services.seed, Stream.ROBUST_AGGREGATION, server_round)
        v = flag_aggregate(deltas(global_state, updates), p.flag_columns, p.flag_iterations,
                           p.flag_lambda, rng, p.flag_scale)
        return step(global_state, v, p.server_lr)
