"""The plug-in guide's client rule (examples/my_client_rule.py) runs by import path and
trains as it says, checked against a NumPy reference on the quadratic."""

from __future__ import annotations

import numpy as np

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from tests.conftest import tiny


def test_clipped_steps_through_the_platform() -> None:
    n, d, k, lr, clip = 4, 3, 3, 0.5, 0.4
    cfg = parse_run_config(tiny(
        strategy="examples.my_client_rule:FedAvgClipped", step_clip=clip, dataset="quadratic",
        model="flowerbed.clients.quadratic:model", num_clients=n, synthetic_dim=d,
        synthetic_samples=1, synthetic_alpha=1.0, synthetic_beta=0.0, quadratic_offset=2.0,
        local_steps=k, batch_size=1, lr=lr, fraction_train=1.0, partitioner="natural-id",
        num_server_rounds=1))
    got = run_experiment(cfg).final_state["x"]
    centers = centers_and_points(n, d, 1, 1.0, 0.0, cfg.seed, 2.0)[0]
    ys = []
    for a in centers:
        y = np.zeros(d)
        for _ in range(k):
            g = y - a
            y = y - lr * g * min(1.0, clip / np.linalg.norm(g))
        ys.append(y)
    np.testing.assert_allclose(got, np.mean(ys, axis=0), atol=1e-5)
    assert np.linalg.norm(centers[0]) > clip  # the clipping really bit
