"""Compression through the platform: FedAvg + top-k with error feedback equals a NumPy
reference on the quadratic; the ledger counts the encoded bytes; the residual lives in the
client-state store and survives checkpoint/resume; CHOCO-SGD on 3 nodes by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flowerbed.clients.quadratic import centers_and_points
from flowerbed.core.codecs import Codec
from flowerbed.core.errors import ConfigError
from flowerbed.run import checkpoint
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.run.trackers.base import Tracker
from tests.conftest import tiny

N, D, K, LR, ROUNDS = 5, 4, 3, 0.3, 3
RATIO = 0.5  # k = 2 of each client's 4 coordinates


def quadratic(tmp_path, name: str, **over) -> dict:
    base = {"dataset": "quadratic", "model": "flowerbed.clients.quadratic:model",
            "num_clients": N, "synthetic_dim": D, "synthetic_samples": 1,
            "synthetic_alpha": 1.0, "synthetic_beta": 0.0, "quadratic_offset": 2.0,
            "local_steps": K, "batch_size": 1, "lr": LR, "num_server_rounds": ROUNDS,
            "fraction_train": 1.0, "partitioner": "natural-id", "tracking": True,
            "checkpoint_every": 1, "output_dir": str(tmp_path), "run_name": name}
    return tiny(**{**base, **over})


def topk(v: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(v)
    idx = np.argsort(-np.abs(v))[:k]
    out[idx] = v[idx]
    return out


def local(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """K steps of y <- y - lr (y - c) from x (the one data point is the centre c)."""
    y = x.copy()
    for _ in range(K):
        y = y - LR * (y - c)
    return y


def numpy_fedavg_topk_ef(centers: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    x, e = np.zeros(D), np.zeros((N, D))
    k = math.ceil(RATIO * D)
    for _ in range(rounds):
        sent = []
        for i in range(N):
            p = local(x, centers[i]) - x + e[i]
            sent.append(topk(p, k))
            e[i] = p - sent[-1]
        x = x + np.mean(sent, axis=0)
    return x, e


def rows(run_dir) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_fedavg_topk_error_feedback_equals_numpy_and_counts_encoded_bytes(tmp_path) -> None:
    cfg = parse_run_config(quadratic(tmp_path, "ef", strategy="fedavg", codec="topk",
                                     codec_ratio=RATIO, error_feedback=True))
    result = run_experiment(cfg)
    centers, _ = centers_and_points(N, D, 1, 1.0, 0.0, cfg.seed, 2.0)
    x, e = numpy_fedavg_topk_ef(centers, ROUNDS)
    np.testing.assert_allclose(result.final_state["x"], x, atol=1e-5)
    kept = checkpoint.load(result.run_dir)["client_states"]
    for i in range(N):  # the residual, under the codec's prefix of the client-state store
        np.testing.assert_allclose(kept[str(i)]["codec.x"], e[i], atol=1e-5)
    # up: k float32 values + k int32 indices per client; down: the float32 model
    k = math.ceil(RATIO * D)
    assert [r["round_bytes_up"] for r in rows(result.run_dir)[1:]] == [N * 8 * k] * ROUNDS
    assert [r["round_bytes_down"] for r in rows(result.run_dir)[1:]] == [N * 4 * D] * ROUNDS


@pytest.mark.parametrize(("codec", "up"), [("sign", 4 + 1), ("qsgd", 4 + math.ceil(D * 6 / 8)),
                                           ("fp16", 2 * D), ("randk", 8 * 2)])
def test_every_codec_runs_and_the_ledger_counts_its_size(tmp_path, codec: str, up: int
                                                         ) -> None:
    cfg = parse_run_config(quadratic(tmp_path, codec, strategy="fedavg", codec=codec,
                                     codec_ratio=RATIO, qsgd_levels=16, checkpoint_every=0,
                                     num_server_rounds=2))
    result = run_experiment(cfg)
    assert [r["round_bytes_up"] for r in rows(result.run_dir)[1:]] == [N * up] * 2
    assert Codec(codec, RATIO, 16).nbytes({"x": (D,)}) == up
    assert np.isfinite(result.final_state["x"]).all()


class Crash(Tracker):
    def after_round(self, record: dict) -> None:
        if record["round"] == 2:
            raise KeyboardInterrupt


def test_resume_with_error_feedback_equals_the_uninterrupted_run(tmp_path) -> None:
    over = {"strategy": "scaffold", "codec": "topk", "codec_ratio": RATIO,
            "error_feedback": True}  # a client rule's state and the residual side by side
    ref = run_experiment(parse_run_config(quadratic(tmp_path / "a", "ref", **over)))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_run_config(quadratic(tmp_path / "b", "cut", **over)),
                       extra_trackers=[Crash()])
    cut = tmp_path / "b" / "cut"
    assert checkpoint.load(cut)["round"] == 1  # the crash came before round 2's checkpoint
    resumed = run_experiment(parse_run_config(quadratic(tmp_path / "b", "cut", **over,
                                                        resume_from=str(cut))))
    np.testing.assert_array_equal(resumed.final_state["x"], ref.final_state["x"])
    a, b = checkpoint.load(ref.run_dir)["client_states"], checkpoint.load(cut)["client_states"]
    assert sorted(a["0"]) == ["c_i.x", "codec.x"]
    for i in range(N):
        for key in a[str(i)]:
            np.testing.assert_array_equal(a[str(i)][key], b[str(i)][key])


# --- CHOCO-SGD ----------------------------------------------------------------------------


def numpy_choco(centers: np.ndarray, rounds: int, gamma: float, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 2 on 3 nodes (a ring of 3: W = 1/3 everywhere), Q = top-k, x̂(0) = x(0)."""
    n = len(centers)
    x, xhat = np.zeros((n, D)), np.zeros((n, D))
    w = np.full((n, n), 1 / 3)
    for _ in range(rounds):
        half = np.stack([local(x[i], centers[i]) for i in range(n)])
        xhat = xhat + np.stack([topk(half[i] - xhat[i], k) for i in range(n)])
        x = half + gamma * (w @ xhat - xhat)
    return x, xhat


def test_choco_on_a_ring_of_three_by_hand(tmp_path) -> None:
    cfg = parse_run_config(quadratic(tmp_path, "choco", strategy="choco", num_clients=3,
                                     codec="topk", codec_ratio=0.25, consensus_step=0.6,
                                     topology="ring", checkpoint_every=0))
    result = run_experiment(cfg)
    centers, _ = centers_and_points(3, D, 1, 1.0, 0.0, cfg.seed, 2.0)
    x, xhat = numpy_choco(centers, ROUNDS, 0.6, k=1)
    np.testing.assert_allclose(result.strategy.x, x, atol=1e-5)
    np.testing.assert_allclose(result.strategy.xhat, xhat, atol=1e-5)
    np.testing.assert_allclose(result.final_state["x"], x.mean(axis=0), atol=1e-5)
    # 6 directed edges a round, each one q: 1 float32 value + 1 int32 index
    assert [r["round_bytes_p2p"] for r in rows(result.run_dir)[1:]] == [6 * 8] * ROUNDS


def test_choco_without_compression_and_gamma_one_is_dsgd(tmp_path) -> None:
    common = {"num_clients": 4, "topology": "ring", "checkpoint_every": 0}
    choco = run_experiment(parse_run_config(quadratic(tmp_path, "c", strategy="choco",
                                                      consensus_step=1.0, **common)))
    dsgd = run_experiment(parse_run_config(quadratic(tmp_path, "d", strategy="dsgd",
                                                     final_merge=False, **common)))
    np.testing.assert_allclose(choco.strategy.x, dsgd.strategy.x, atol=1e-6)


def test_choco_refuses_error_feedback() -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({"strategy": "choco", "codec": "topk", "error-feedback": True})
    assert err.value.key == "error-feedback"


def test_dsgd_peer_bytes_scale_with_the_codec(tmp_path) -> None:
    common = {"num_clients": 4, "topology": "ring", "checkpoint_every": 0, "strategy": "dsgd",
              "final_merge": False, "num_server_rounds": 1}
    plain = run_experiment(parse_run_config(quadratic(tmp_path, "p", **common)))
    packed = run_experiment(parse_run_config(quadratic(tmp_path, "q", codec="fp16", **common)))
    assert rows(plain.run_dir)[1]["round_bytes_p2p"] == 8 * 4 * D  # 8 edges, float32
    assert rows(packed.run_dir)[1]["round_bytes_p2p"] == 8 * 2 * D  # fp16
