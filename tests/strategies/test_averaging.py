from __future__ import annotations

import numpy as np
import pytest

from flowerbed.strategies.averaging import weighted_sum


def test_weighted_sum_across_chunks_matches_hand_computation() -> None:
    like = {"w": np.zeros((2,), np.float32), "b": np.zeros((), np.float32)}
    states = [{"w": np.array([1.0, 2.0], np.float32), "b": np.array(1.0, np.float32)},
              {"w": np.array([3.0, -1.0], np.float32), "b": np.array(2.0, np.float32)},
              {"w": np.array([0.5, 0.5], np.float32), "b": np.array(-4.0, np.float32)}]
    weights = [0.5, 0.25, 0.25]
    # by hand: w = 0.5*[1,2] + 0.25*[3,-1] + 0.25*[0.5,0.5] = [1.375, 0.875]
    #          b = 0.5*1 + 0.25*2 + 0.25*(-4) = 0.0
    for chunk in (1, 2, 256):  # chunk boundaries must not change the sum
        out = weighted_sum(states, weights, like, chunk=chunk)
        assert out["w"].dtype == np.float64
        np.testing.assert_allclose(out["w"], [1.375, 0.875], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["b"], 0.0, atol=1e-12)


def test_weighted_sum_checks_lengths() -> None:
    like = {"w": np.zeros(1, np.float32)}
    with pytest.raises(ValueError, match="2 states but 1 weights"):
        weighted_sum([like, like], [1.0], like)


def test_weighted_sum_of_nothing_is_zero() -> None:
    out = weighted_sum([], [], {"w": np.ones(3, np.float32)})
    np.testing.assert_array_equal(out["w"], np.zeros(3))


def test_weighted_sum_bounds_its_temporaries_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large tensors are stacked a few clients at a time: the float64 copies of a stacked
    chunk stay within CHUNK_BYTES (unbounded, 20 clients of 4 MB would take 240 MB)."""
    import tracemalloc

    from flowerbed.strategies import averaging

    monkeypatch.setattr(averaging, "CHUNK_BYTES", 16 * 2**20)  # 2 clients of 8 MB float64
    n, size = 20, 2**20
    states = [{"w": np.full(size, i, np.float32), "b": np.array(float(i), np.float32)}
              for i in range(n)]
    weights = [1.0 / n] * n
    tracemalloc.start()
    try:
        out = averaging.weighted_sum(states, weights, states[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(out["w"], np.full(size, (n - 1) / 2), rtol=1e-12)
    np.testing.assert_allclose(out["b"], (n - 1) / 2, rtol=1e-12)
    assert peak < 48 * 2**20, f"{peak / 2**20:.0f} MiB of temporaries"
