"""FedSpeed through the platform equals a hand-written NumPy FedSpeed on the quadratic (one
point per client: every gradient is y - c_i exactly); h_i is kept per client, not counted."""

from __future__ import annotations

import json

import numpy as np

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.run import checkpoint
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from tests.conftest import tiny

N, D, K, LR, ROUNDS = 5, 3, 3, 0.2, 3
LAM, RHO, ALPHA = 0.5, 0.3, 0.7


def numpy_fedspeed(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1 with full participation: merged perturbed gradient, prox-correction."""
    x, h = np.zeros(D), np.zeros((N, D))
    for _ in range(ROUNDS):
        sent = []
        for i in range(N):
            y = x.copy()
            for _ in range(K):
                g1 = y - centers[i]
                g2 = (y + RHO * g1 / (np.linalg.norm(g1) + 1e-12)) - centers[i]
                g = (1 - ALPHA) * g1 + ALPHA * g2
                y = y - LR * (g + LAM * (y - x + h[i]))
            h[i] = h[i] + (y - x)
            sent.append(y + h[i])
        x = np.mean(sent, axis=0)
    return x, h


def test_fedspeed_run_equals_numpy_reference(tmp_path) -> None:
    cfg = parse_run_config(tiny(
        strategy="fedspeed", dataset="quadratic", model="flowerbed.clients.quadratic:model",
        num_clients=N, synthetic_dim=D, synthetic_samples=1, synthetic_alpha=1.0,
        synthetic_beta=0.0, quadratic_offset=2.0, local_steps=K, batch_size=1, lr=LR,
        num_server_rounds=ROUNDS, fraction_train=1.0, partitioner="natural-id",
        fedspeed_lambda=LAM, fedspeed_rho=RHO, fedspeed_alpha=ALPHA, tracking=True,
        checkpoint_every=1, output_dir=str(tmp_path), run_name="fedspeed"))
    result = run_experiment(cfg)
    centers, _ = centers_and_points(N, D, 1, 1.0, 0.0, cfg.seed, 2.0)
    x, h = numpy_fedspeed(centers)
    assert np.abs(h).min() > 1e-3  # the correction is really exercised
    np.testing.assert_allclose(result.final_state["x"], x, atol=1e-5)
    kept = checkpoint.load(result.run_dir)["client_states"]
    for i in range(N):
        np.testing.assert_allclose(kept[str(i)]["h_i.x"], h[i], atol=1e-5)
    rows = [json.loads(ln) for ln in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round_bytes_up"] for r in rows[1:]] == [N * D * 4] * ROUNDS  # h_i not sent
