"""The synthetic quadratic of the Teleportation experiments, as a dataset and a model.

Node i's objective is f_i(x) = 1/2 ||x - c_i||^2 in R^d with c_i = m + delta_i,
delta_i ~ N(0, (zeta^2/d) I), and a stochastic gradient is grad f_i(x) + noise,
noise ~ N(0, (sigma^2/d) I), so that the two constants of the rate are set exactly:
(1/n) sum_i ||grad f_i - grad f||^2 ~ zeta^2 and E||noise||^2 ~ sigma^2
(a stand-in for the paper's Sec. 5.1 objective, whose exact form was not retrievable).
The common shift m = (``quadratic-offset`` / sqrt(d)) (1, ..., 1) puts the optimum c-bar
at distance about ``quadratic-offset`` from the start x_0 = 0 (with m = 0,
c-bar ~ N(0, zeta^2/(d n) I) tends to x_0 as n grows, and there is nothing left to
optimise at large n).

How it runs through the platform unchanged (local training minimises cross-entropy):

- data (``dataset = "quadratic"``): node i holds ``synthetic-samples`` points c_i + xi_j
  (the xi_j centred per node, so their mean is exactly c_i) with label 0; a step on one
  point of batch size 1 has gradient x - c_i - xi_j. The constants reuse the synthetic keys:
  zeta^2 = ``synthetic-alpha``, sigma^2 = ``synthetic-beta``, d = ``synthetic-dim``. The
  server's test set is the single point c-bar = mean_i c_i.
- model (``model = "flowerbed.clients.quadratic:model"``): the parameter x, with two logits
  (0, log(expm1(L))) for L = 1/2 ||x - input||^2 + eps, whose cross-entropy against label 0
  is exactly L. So ``test_loss`` = 1/2 ||x - c-bar||^2 + eps = 1/2 ||grad f(x)||^2 + eps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from flowerbed.core.rng import Stream, stream

if TYPE_CHECKING:
    from flowerbed.core.params import Config

EPS = 1e-6  # keeps log(expm1(L)) finite when x hits a data point exactly


def centers_and_points(num_nodes: int, dim: int, samples: int, zeta2: float, sigma2: float,
                       seed: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """c (n, d) and the points (n, m, d) whose per-node mean is exactly c_i."""
    rng = stream(seed, Stream.QUADRATIC)
    c = offset / np.sqrt(dim) + rng.normal(0.0, np.sqrt(zeta2 / dim), (num_nodes, dim))
    xi = rng.normal(0.0, np.sqrt(sigma2 / dim), (num_nodes, samples, dim))
    if samples > 1:
        xi -= xi.mean(axis=1, keepdims=True)
        xi *= np.sqrt(samples / (samples - 1))  # keep E||xi||^2 = sigma^2 after centring
    return c, c[:, None, :] + xi


def build(cfg: Config) -> tuple[Any, Any, tuple[int, ...], int]:
    """The offline dataset builder (see :mod:`flowerbed.clients.data`)."""
    import datasets

    n, d, m = cfg.num_clients, cfg.synthetic_dim, cfg.synthetic_samples
    c, points = centers_and_points(n, d, m, cfg.synthetic_alpha, cfg.synthetic_beta, cfg.seed,
                                   cfg.quadratic_offset)
    train = datasets.Dataset.from_dict({
        "x": points.reshape(n * m, d).astype(np.float32),
        "label": np.zeros(n * m, dtype=np.int64),
        "client_id": np.repeat(np.arange(n), m)})
    test = datasets.Dataset.from_dict({"x": c.mean(axis=0, keepdims=True).astype(np.float32),
                                       "label": np.zeros(1, dtype=np.int64)})
    return train, test, (d,), 2


class Quadratic(nn.Module):
    """The parameter x; logits whose cross-entropy with label 0 is 1/2 ||x - input||^2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.zeros(dim))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        loss = 0.5 * ((inputs - self.x) ** 2).sum(dim=1) + EPS
        # log(expm1(L)) overflows float32 past L ~ 88; beyond 30 it equals L to float
        # precision, and log(1 + e^L) = L either way
        big = loss > 30.0
        small = torch.log(torch.expm1(torch.where(big, torch.ones_like(loss), loss)))
        return torch.stack([torch.zeros_like(loss), torch.where(big, loss, small)], dim=1)


def model(input_shape: tuple[int, ...], num_classes: int, cfg: Config) -> nn.Module:
    """Model factory for ``model = "flowerbed.clients.quadratic:model"``; x starts at 0."""
    return Quadratic(int(np.prod(input_shape)))
