"""Zeroth-order SGD with shared randomness, centralized (``zo-sgd``) and decentralized
(``dzo-sgd``): platform runs equal NumPy references on the quadratic (directions
regenerated from the same ids), clients send K scalars (4 bytes a step, or 1 with the
one-byte code), never a model, and the receivers' rebuild inverts the client's steps."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.core.errors import ConfigError
from flowerbed.core.shared_randomness import byte_code, byte_value, direction
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.zo_sgd import rebuild
from tests.conftest import tiny

N, D, K, LR, EPS, ROUNDS = 4, 3, 5, 0.2, 0.1, 2


def _quadratic(tmp_path, **extra: object):
    return parse_run_config(tiny(**{
        "dataset": "quadratic", "model": "flowerbed.clients.quadratic:model",
        "num_clients": N, "synthetic_dim": D, "synthetic_samples": 1, "synthetic_alpha": 1.0,
        "synthetic_beta": 0.0, "quadratic_offset": 2.0, "local_steps": K, "batch_size": 1,
        "lr": LR, "zo_eps": EPS, "num_server_rounds": ROUNDS, "fraction_train": 1.0,
        "partitioner": "natural-id", "tracking": True, "output_dir": str(tmp_path),
        "run_name": "zo", **extra}))


def _local_step(seed: int, t: int, i: int, x: np.ndarray, c: np.ndarray, one_byte: bool
                ) -> np.ndarray:
    """Client i's K zeroth-order steps from x in round t: y_K - x."""
    y = x.copy()
    for s in range(K):
        z = direction(seed, t, i, s, {"x": (D,)})["x"].astype(np.float64)
        # SPSA on f = 1/2 ||y - c||^2 is exact: (f(y+eps z) - f(y-eps z))/(2 eps) = z.(y-c)
        g = float(z @ (y - c))
        if one_byte:
            g = float(byte_value(byte_code(np.array([g])))[0])
        y = y - LR * g * z
    return y - x


@pytest.mark.parametrize("one_byte", [False, True])
def test_zo_sgd_equals_numpy_reference_and_sends_scalars(tmp_path, one_byte: bool) -> None:
    cfg = _quadratic(tmp_path, strategy="zo-sgd", zo_byte=one_byte)
    result = run_experiment(cfg)
    c, _ = centers_and_points(N, D, 1, 1.0, 0.0, cfg.seed, 2.0)
    x = np.zeros(D)
    for t in range(1, ROUNDS + 1):  # equal sizes: uniform weights
        x = x + np.mean([_local_step(cfg.seed, t, i, x, c[i], one_byte) for i in range(N)],
                        axis=0)
    assert np.linalg.norm(x) > 0.1  # it moved
    np.testing.assert_allclose(result.final_state["x"], x, atol=1e-4)
    rows = [json.loads(ln) for ln in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    per_step = 1 if one_byte else 4  # an int8 code or a float32 a step
    assert [r["round_bytes_up"] for r in rows[1:]] == [N * K * per_step] * ROUNDS
    assert [r["round_bytes_down"] for r in rows[1:]] == [N * D * 4] * ROUNDS  # the model


def test_one_byte_code_by_hand() -> None:
    """sign and round(16 ln|g|) in one int8: |q| = p + 64, p clamped to [-63, 63]."""
    g = np.array([1.0, -np.e, 1.5, 1e-5, -1e6, 0.0, np.nan])
    q = byte_code(g)
    assert q.dtype == np.int8
    assert q.tolist() == [64, -80, 64 + round(16 * np.log(1.5)), 1, -127, 0, 0]
    v = byte_value(q)
    np.testing.assert_allclose(v[:3], [1.0, -np.e, np.exp(6 / 16)], rtol=1e-6)
    np.testing.assert_allclose(v[3:5], [np.exp(-63 / 16), -np.exp(63 / 16)], rtol=1e-6)
    assert v[5] == v[6] == 0.0
    xs = np.exp(np.linspace(-3.9, 3.9, 1001))  # inside the range: relative error <= 3.2%
    assert np.abs(byte_value(byte_code(xs)) / xs - 1).max() <= np.exp(1 / 32) - 1 + 1e-6


def _hops(n: int, i: int, j: int) -> int:
    return min(abs(i - j), n - abs(i - j))  # on a ring


@pytest.mark.parametrize("topology", ["ring", "complete"])
def test_dzo_sgd_floods_scalars_and_equals_numpy_reference(tmp_path, topology: str) -> None:
    """Every node trains from its own model; node j's round-t step reaches node i in round
    t + max(hops - 1, 0) and is applied there with weight 1/n. On the complete graph every
    model is the same: the centralized reference. Peers send K one-byte codes plus an
    8-byte tag per message, never a model."""
    rounds = 3
    cfg = _quadratic(tmp_path, strategy="dzo-sgd", topology=topology, zo_byte=True,
                     num_server_rounds=rounds)
    result = run_experiment(cfg)
    c, _ = centers_and_points(N, D, 1, 1.0, 0.0, cfg.seed, 2.0)
    hops = (np.array([[_hops(N, i, j) for j in range(N)] for i in range(N)])
            if topology == "ring" else 1 - np.eye(N, dtype=int))
    x = np.zeros((N, D))
    steps: dict[int, np.ndarray] = {}
    for t in range(1, rounds + 1):
        steps[t] = np.stack([_local_step(cfg.seed, t, j, x[j], c[j], True) for j in range(N)])
        for i in range(N):
            for j in range(N):
                sent = t - max(hops[i, j] - 1, 0)  # the round of the step arriving now
                if sent >= 1:
                    x[i] += steps[sent][j] / N
    np.testing.assert_allclose(result.strategy.x, x, atol=1e-5)
    assert np.linalg.norm(x) > 0.1
    if topology == "complete":
        np.testing.assert_allclose(x, np.broadcast_to(x[0], x.shape), atol=1e-6)
    rows = [json.loads(ln) for ln in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    m = 8 + K  # one message: tag + K codes
    # ring: each node sends its own message to both neighbours (8 links); from round 2 the
    # opposite node's message of the round before also crosses one more link (4 more);
    # complete: every message crosses N - 1 links at once. Each link: one message a round
    want = [8 * m, 12 * m, 12 * m] if topology == "ring" else [N * (N - 1) * m] * rounds
    links = [8, 8, 8] if topology == "ring" else [N * (N - 1)] * rounds
    assert [r["round_messages"] for r in rows[1:]] == links
    assert [r["round_bytes_p2p"] for r in rows[1:]] == want
    assert all(r["round_bytes_up"] == 0 for r in rows[1:])


def test_dzo_sgd_refuses_time_varying_graphs() -> None:
    with pytest.raises(ConfigError, match="fixed graph"):
        parse_run_config(tiny(strategy="dzo-sgd", topology="one-peer-exponential",
                              num_clients=8))


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
