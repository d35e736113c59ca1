"""FedAMD through the platform equals a NumPy reference on the quadratic (one point per
client: every gradient is y - c_i exactly); anchors send a gradient and no model. The
rules follow the authors' code (github.com/HarliWu/FedAMD): every client's bullseye first,
SARAH miners started at the mean bullseye, a uniform mean of the miners."""

from __future__ import annotations

import json

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.core.arrays import to_record
from flowerbed.core.wire import INPUTS_KEY, RULE_KEY
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.base import ClientUpdate
from flowerbed.strategies.contract import Services
from flowerbed.strategies.fedamd import FedAMD
from tests.conftest import tiny

N, D, K, LR, ROUNDS = 4, 3, 4, 0.2, 3


def test_fedamd_run_equals_numpy_reference(tmp_path) -> None:
    """Round 1: all anchors (bullseyes b_i = x_0 - c_i, x unchanged); rounds 2-3 with
    anchor-probability 0: all miners, v_0 = mean b, v_s = (y_s - y_{s-1}) + v_{s-1}."""
    cfg = parse_run_config(tiny(
        strategy="fedamd", dataset="quadratic", model="flowerbed.clients.quadratic:model",
        num_clients=N, synthetic_dim=D, synthetic_samples=1, synthetic_alpha=1.0,
        synthetic_beta=0.0, quadratic_offset=2.0, local_steps=K, batch_size=1, lr=LR,
        num_server_rounds=ROUNDS, fraction_train=1.0, partitioner="natural-id",
        anchor_probability=0.0, anchor_warmup_rounds=1, tracking=True,
        output_dir=str(tmp_path), run_name="fedamd"))
    result = run_experiment(cfg)
    c, _ = centers_and_points(N, D, 1, 1.0, 0.0, cfg.seed, 2.0)
    x = np.zeros(D)
    g = np.mean(x - c, axis=0)  # round 1's bullseyes, kept (never refreshed after)
    for _ in range(ROUNDS - 1):
        ys = []
        for i in range(N):
            y_prev, y, v = x.copy(), x.copy(), g.copy()
            for s in range(K):
                if s:
                    v = ((y - c[i]) - (y_prev - c[i])) + v
                y_prev, y = y, y - LR * v
            ys.append(y)
        x = np.mean(ys, axis=0)
    np.testing.assert_allclose(result.final_state["x"], x, atol=1e-5)
    np.testing.assert_allclose(np.mean(list(b["x"] for b in result.strategy.bullseyes.values()),
                                       axis=0), g, atol=1e-6)
    rows = [json.loads(ln) for ln in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    model = D * 4
    assert [r["round_bytes_up"] for r in rows[1:]] == [N * model] * ROUNDS
    # round 1: anchors download x; then miners download x and g
    assert [r["round_bytes_down"] for r in rows[1:]] == [N * model] + [N * 2 * model] * 2


def test_roles_and_aggregate_by_hand() -> None:
    s = FedAMD(FedAMD.Params(anchor_probability=0.5, anchor_warmup_rounds=2),
               Services(num_nodes=4, seed=3))
    assert s.roles(2, 0, [0, 1, 2]).all()  # warm-up: all anchors
    drawn = np.concatenate([s.roles(r, 0, list(range(50))) for r in range(3, 13)])
    assert 0.4 < drawn.mean() < 0.6
    x = {"w": np.array([1.0, 1.0], np.float32)}
    s.global_state = x
    ups = [ClientUpdate(0, {}, 5.0, {}, {"w": np.array([2.0, 0.0], np.float32)}),
           ClientUpdate(1, {"w": np.array([3.0, 1.0], np.float32)}, 1.0, {}, None),
           ClientUpdate(2, {"w": np.array([0.0, 1.0], np.float32)}, 3.0, {}, None)]
    new = s.aggregate(5, x, ups)  # the anchor does not move x; miners: uniform mean
    np.testing.assert_allclose(new["w"], [1.0 + (2.0 - 1.0) / 2, 1.0])
    np.testing.assert_allclose(s.target()["w"], [2.0, 0.0])


class _Grid:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


def test_warmup_asks_every_client_then_samples() -> None:
    """Warm-up: every available client computes its bullseye on its whole dataset (the
    authors' initialisation), whatever fraction-train is; later rounds sample."""
    s = FedAMD(FedAMD.Params(fraction_train=0.25, anchor_probability=0.0,
                             anchor_warmup_rounds=1), Services(num_nodes=8, seed=1))
    arrays: ArrayRecord = to_record({"w": np.zeros(2, np.float32)})
    first = list(s.configure_train(1, arrays, ConfigRecord(), _Grid(list(range(8)))))
    assert sorted(m.metadata.dst_node_id for m in first) == list(range(8))
    cfg = first[0].content["config"]
    assert cfg[RULE_KEY] == "fedamd-anchor" and cfg["local-steps"] == 1
    assert cfg["batch-size"] >= 2**31 - 1  # capped at each client's data size: full batch
    later = list(s.configure_train(2, arrays, ConfigRecord(), _Grid(list(range(8)))))
    assert len(later) == 2 and later[0].content["config"][RULE_KEY] == "fedamd-miner"
    assert INPUTS_KEY in later[0].content  # the miners' target g
