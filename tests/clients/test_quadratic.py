"""The quadratic objective f_i(x) = 1/2||x - c_i||^2 runs through the unchanged platform."""

from __future__ import annotations

import numpy as np
import torch

from flowerbed.clients.data import load_federation
from flowerbed.clients.quadratic import EPS, Quadratic, centers_and_points
from flowerbed.clients.training import TrainParams, local_train
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from tests.conftest import tiny

QUAD = {"dataset": "quadratic", "partitioner": "natural-id", "model":
        "flowerbed.clients.quadratic:model", "synthetic-dim": 10, "synthetic-samples": 6,
        "synthetic-alpha": 4.0, "synthetic-beta": 1.0}


def test_cross_entropy_is_the_quadratic_and_its_gradient() -> None:
    m = Quadratic(3)
    with torch.no_grad():
        m.x.copy_(torch.tensor([1.0, -2.0, 0.5]))
    inp = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 2.5]])
    ce = torch.nn.functional.cross_entropy(m(inp), torch.zeros(2, dtype=torch.long),
                                           reduction="none")
    assert torch.allclose(ce, torch.tensor([0.5 * 5.25, 0.5 * 5.0]) + EPS, rtol=1e-6)
    ce[1].backward()
    assert torch.allclose(m.x.grad, torch.tensor([0.0, -1.0, -2.0]), atol=1e-5)


def test_data_sets_the_constants_exactly() -> None:
    cfg = parse_run_config(tiny(num_clients=8, **QUAD))
    data = load_federation(cfg)
    c, _ = centers_and_points(8, 10, 6, 4.0, 1.0, cfg.seed)
    for i in range(8):  # each node's points average to exactly its c_i
        assert np.allclose(data.x[i].mean(axis=0), c[i], atol=1e-5)
        assert (data.y[i] == 0).all() and len(data.y[i]) == 6
    assert np.allclose(data.test_x, c.mean(axis=0, keepdims=True), atol=1e-6)
    # one SGD step of batch 1 from x = 0 lands on lr times one of the node's points
    new, _ = local_train(Quadratic(10), {"x": np.zeros(10, np.float32)}, data.x[0], data.y[0],
                         TrainParams(lr=0.1, local_steps=1, batch_size=1),
                         np.random.default_rng(0))
    assert min(np.abs(new["x"] - 0.1 * p).max() for p in data.x[0]) < 1e-6


def test_fedavg_drives_the_gradient_norm_to_zero() -> None:
    cfg = parse_run_config(tiny(num_clients=8, num_server_rounds=20, local_steps=5,
                                batch_size=1, lr=0.1, **QUAD))
    records = run_experiment(cfg).records
    c, _ = centers_and_points(8, 10, 6, 4.0, 1.0, cfg.seed)
    cbar = c.mean(axis=0)
    # x starts at 0: test_loss = 1/2 ||0 - c-bar||^2 + eps = 1/2 ||grad f(x)||^2 + eps
    assert abs(records[0]["test_loss"] - (0.5 * float(cbar @ cbar) + EPS)) < 1e-5
    assert records[-1]["test_loss"] < 0.05 * records[0]["test_loss"]


def test_offset_shifts_every_centre_by_the_same_vector() -> None:
    c0, p0 = centers_and_points(5, 4, 3, 2.0, 1.0, seed=7)
    c1, p1 = centers_and_points(5, 4, 3, 2.0, 1.0, seed=7, offset=6.0)
    shift = np.full(4, 6.0 / 2.0)  # offset / sqrt(d): ||m|| = 6
    np.testing.assert_allclose(c1 - c0, np.tile(shift, (5, 1)), atol=1e-12)
    np.testing.assert_allclose(p1 - p0, np.broadcast_to(shift, p0.shape), atol=1e-12)
    # through the platform: the initial loss is 1/2 ||0 - c-bar||^2 with the shifted c-bar
    cfg = parse_run_config(tiny(num_clients=5, num_server_rounds=1, **{
        **QUAD, "synthetic-dim": 4, "synthetic-samples": 3, "synthetic-alpha": 2.0,
        "quadratic-offset": 6.0}))
    cbar = centers_and_points(5, 4, 3, 2.0, 1.0, cfg.seed, offset=6.0)[0].mean(axis=0)
    first = run_experiment(cfg).records[0]
    assert abs(first["test_loss"] - (0.5 * float(cbar @ cbar) + EPS)) < 1e-5


def test_far_from_the_centre_the_loss_stays_exact_and_finite() -> None:
    m = Quadratic(2)
    inp = torch.tensor([[10.0, 10.0], [0.1, 0.0]])  # L = 100 (float32 expm1 overflows) and 0.005
    ce = torch.nn.functional.cross_entropy(m(inp), torch.zeros(2, dtype=torch.long),
                                           reduction="none")
    assert torch.allclose(ce, torch.tensor([100.0, 0.005]) + EPS, rtol=1e-5)
    ce.sum().backward()
    assert torch.allclose(m.x.grad, torch.tensor([-10.1, -10.0]), atol=1e-4)
