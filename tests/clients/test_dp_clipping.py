"""Per-virtual-client clipping for Flower's client-side DP wrappers (hand-computed)."""

import numpy as np
from flwr.app import ConfigRecord

from flowerbed.clients.dp_clipping import clip_update, wants_clipping


def test_an_update_above_the_norm_is_scaled_onto_it() -> None:
    received = {"w": np.array([1.0, 1.0], np.float32), "b": np.zeros(1, np.float32)}
    new = {"w": np.array([4.0, 5.0], np.float32), "b": np.zeros(1, np.float32)}  # |d| = 5
    cfg = ConfigRecord({"clipping_norm": 1.0})
    assert wants_clipping(cfg) and not wants_clipping(ConfigRecord({"lr": 0.1}))
    out, metrics = clip_update(new, received, cfg, {"train_loss": 2.0})
    np.testing.assert_allclose(out["w"], [1.6, 1.8], rtol=1e-6)  # 1 + (3, 4) / 5
    assert out["w"].dtype == np.float32
    assert metrics == {"train_loss": 2.0, "norm_bit": 1.0}  # Flower's bit: it was clipped
    np.testing.assert_array_equal(new["w"], [4.0, 5.0])  # the input is not modified


def test_an_update_within_the_norm_is_kept() -> None:
    received = {"w": np.zeros(2, np.float32)}
    new = {"w": np.array([0.3, 0.4], np.float32)}  # |d| = 0.5
    out, metrics = clip_update(new, received, ConfigRecord({"clipping_norm": 1.0}), {})
    np.testing.assert_allclose(out["w"], [0.3, 0.4])
    assert metrics["norm_bit"] == 0.0
