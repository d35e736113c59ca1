"""Zeroth-order SGD with shared randomness: the platform run equals a NumPy reference on the
quadratic (directions regenerated from the same ids), clients upload K scalars (4 bytes a
step, no model), and the server's rebuild inverts the client's steps."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.core.errors import ConfigError
from flowerbed.core.shared_randomness import direction
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.zo_sgd import rebuild
from tests.conftest import tiny

N, D, K, LR, EPS, ROUNDS = 4, 3, 5, 0.2, 0.1, 2


def test_zo_sgd_equals_numpy_reference_and_sends_scalars(tmp_path) -> None:
    cfg = parse_run_config(tiny(
        strategy="zo-sgd", dataset="quadratic", model="flowerbed.clients.quadratic:model",
        num_clients=N, synthetic_dim=D, synthetic_samples=1, synthetic_alpha=1.0,
        synthetic_beta=0.0, quadratic_offset=2.0, local_steps=K, batch_size=1, lr=LR,
        zo_eps=EPS, num_server_rounds=ROUNDS, fraction_train=1.0, partitioner="natural-id",
        tracking=True, output_dir=str(tmp_path), run_name="zo"))
    result = run_experiment(cfg)
    c, _ = centers_and_points(N, D, 1, 1.0, 0.0, cfg.seed, 2.0)
    x = np.zeros(D)
    for t in range(1, ROUNDS + 1):
        ys = []
        for i in range(N):
            y = x.copy()
            for s in range(K):
                z = direction(cfg.seed, t, i, s, {"x": (D,)})["x"].astype(np.float64)
                # SPSA on f = 1/2 ||y - c||^2 is exact: (f(y+eps z) - f(y-eps z))/(2 eps)
                y = y - LR * float(z @ (y - c[i])) * z
            ys.append(y)
        x = np.mean(ys, axis=0)  # equal sizes: uniform weights
    assert np.linalg.norm(x) > 0.1  # it moved
    np.testing.assert_allclose(result.final_state["x"], x, atol=1e-4)
    rows = [json.loads(ln) for ln in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round_bytes_up"] for r in rows[1:]] == [N * K * 4] * ROUNDS  # K float32 each
    assert [r["round_bytes_down"] for r in rows[1:]] == [N * D * 4] * ROUNDS  # the model


def test_rebuild_by_hand() -> None:
    """y = x - sum_s a_s z_s with z_s regenerated from (seed, round, client, s)."""
    x = {"w": np.array([1.0, -1.0], np.float32), "b": np.array([0.5], np.float32)}
    shapes = {"w": (2,), "b": (1,)}
    z0, z2 = direction(7, 3, 5, 0, shapes), direction(7, 3, 5, 2, shapes)
    y = rebuild(x, np.array([0.5, 0.0, -2.0], np.float32), seed=7, server_round=3, client=5)
    for k in x:
        np.testing.assert_allclose(y[k], x[k] - 0.5 * z0[k] + 2.0 * z2[k], rtol=1e-6)
    assert not np.allclose(direction(7, 3, 5, 0, shapes)["w"], direction(7, 3, 6, 0, shapes)["w"])


def test_zo_sgd_refuses_momentum() -> None:
    with pytest.raises(ConfigError, match=re.escape("momentum = 0.9 is invalid: must be 0 "
                                                    "for zo-sgd")):
        parse_run_config(tiny(strategy="zo-sgd", momentum=0.9))
