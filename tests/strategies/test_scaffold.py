"""SCAFFOLD through the platform equals a hand-written NumPy SCAFFOLD on the quadratic; its
server update on a hand-computed case; control variates are kept per client, not counted."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.core.errors import ConfigError
from flowerbed.run import checkpoint
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.base import ClientUpdate
from flowerbed.strategies.contract import Services
from flowerbed.strategies.scaffold import Scaffold
from tests.conftest import tiny

N, D, K, LR, ROUNDS = 6, 3, 4, 0.3, 3


def quadratic_run(tmp_path, strategy: str) -> dict:
    return tiny(strategy=strategy, dataset="quadratic", model="flowerbed.clients.quadratic:model",
                num_clients=N, synthetic_dim=D, synthetic_samples=1, synthetic_alpha=1.0,
                synthetic_beta=0.0, quadratic_offset=2.0, local_steps=K, batch_size=1, lr=LR,
                num_server_rounds=ROUNDS, fraction_train=1.0, partitioner="natural-id",
                tracking=True, checkpoint_every=1, output_dir=str(tmp_path), run_name=strategy)


def numpy_scaffold(centers: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """Algorithm 1 (option II), full participation, eta_g = 1, gradient of client i at y:
    y - c_i (its one data point is its centre)."""
    x, c, c_i = np.zeros(D), np.zeros(D), np.zeros((N, D))
    for _ in range(rounds):
        ys, dcs = [], []
        for i in range(N):
            y = x.copy()
            for _ in range(K):
                y = y - LR * ((y - centers[i]) - c_i[i] + c)
            c_plus = c_i[i] - c + (x - y) / (K * LR)
            dcs.append(c_plus - c_i[i])
            c_i[i] = c_plus
            ys.append(y)
        x = x + np.mean(np.array(ys) - x, axis=0)
        c = c + np.sum(dcs, axis=0) / N
    return x, c, c_i


def test_scaffold_run_equals_numpy_reference(tmp_path) -> None:
    cfg = parse_run_config(quadratic_run(tmp_path, "scaffold"))
    result = run_experiment(cfg)
    centers, _ = centers_and_points(N, D, 1, 1.0, 0.0, cfg.seed, 2.0)
    x, c, c_i = numpy_scaffold(centers, ROUNDS)
    np.testing.assert_allclose(result.final_state["x"], x, atol=1e-5)
    np.testing.assert_allclose(result.strategy.control["x"], c, atol=1e-5)
    kept = checkpoint.load(result.run_dir)["client_states"]
    for i in range(N):
        np.testing.assert_allclose(kept[str(i)]["c_i.x"], c_i[i], atol=1e-5)
    # traffic: the model plus c down, the model plus Delta c_i up; c_i never counted
    model_bytes = D * 4
    rows = [json.loads(ln) for ln in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round_bytes_down"] for r in rows[1:]] == [N * 2 * model_bytes] * ROUNDS
    assert [r["round_bytes_up"] for r in rows[1:]] == [N * 2 * model_bytes] * ROUNDS


def test_server_update_by_hand() -> None:
    """x + eta_g mean(y_i - x) over the replies; c + (1/N) sum Delta c_i, N = 4 clients."""
    s = Scaffold(Scaffold.Params(server_lr=0.5), Services(num_nodes=4, seed=0))
    x = {"w": np.array([1.0, 2.0], np.float32)}
    s.control = {"w": np.array([0.4, -0.4], np.float32)}
    ups = [ClientUpdate(0, {"w": np.array([3.0, 2.0], np.float32)}, 10.0, {},
                        {"w": np.array([1.0, 1.0], np.float32)}),
           ClientUpdate(1, {"w": np.array([1.0, 0.0], np.float32)}, 90.0, {},
                        {"w": np.array([3.0, -1.0], np.float32)})]
    new = s.aggregate(1, x, ups)
    np.testing.assert_allclose(new["w"], [1.0 + 0.5 * 1.0, 2.0 + 0.5 * -1.0])  # uniform mean
    np.testing.assert_allclose(s.control["w"], [0.4 + 4.0 / 4, -0.4 + 0.0 / 4])


def test_scaffold_refuses_momentum() -> None:
    with pytest.raises(ConfigError,
                       match=re.escape("momentum = 0.9 is invalid: must be 0 for scaffold")):
        parse_run_config(tiny(strategy="scaffold", momentum=0.9))


def test_scaffold_beats_fedavg_under_drift(tmp_path) -> None:
    """The paper's claim in miniature: with heterogeneous clients and many local steps,
    SCAFFOLD's corrected steps reach a lower test loss than FedAvg in the same rounds."""
    losses = {}
    for strategy in ("fedavg", "scaffold"):
        cfg = parse_run_config(tiny(strategy=strategy, num_clients=10, num_server_rounds=6,
                                    partitioner="dirichlet", partitioner_alpha=0.1,
                                    local_steps=30, batch_size=16, lr=0.1))
        losses[strategy] = run_experiment(cfg).records[-1]["test_loss"]
    assert losses["scaffold"] < losses["fedavg"], losses
