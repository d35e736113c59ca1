"""Each codec on hand-computed vectors; wire sizes exactly as documented; error feedback."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowerbed.core.codecs import CODECS, Codec
from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config


def rng(i: int = 0) -> np.random.Generator:
    return np.random.default_rng(i)


def roundtrip(codec: Codec, v: np.ndarray, seed: int = 0) -> np.ndarray:
    return codec.decode(codec.encode({"w": v}, rng(seed)), {"w": v.shape})["w"]


def test_topk_keeps_the_k_largest_magnitudes() -> None:
    v = np.array([0.1, -3.0, 2.0, 0.5, -0.2], np.float32)
    codec = Codec("topk", ratio=0.4)  # k = ceil(0.4 * 5) = 2
    np.testing.assert_array_equal(roundtrip(codec, v), [0, -3.0, 2.0, 0, 0])
    payload = codec.encode({"w": v}, rng())
    assert payload["w|indices"].tolist() == [1, 2] and payload["w|indices"].dtype == np.int32
    assert sum(a.nbytes for a in payload.values()) == 2 * 4 + 2 * 4


def test_sign_is_l1_over_d_times_sign() -> None:
    v = np.array([1.0, -2.0, 3.0, 0.0, -6.0], np.float32)  # ||v||_1 / d = 12 / 5
    out = roundtrip(Codec("sign"), v)
    np.testing.assert_allclose(out, [2.4, -2.4, 2.4, 2.4, -2.4], rtol=1e-6)
    payload = Codec("sign").encode({"w": v}, rng())
    assert sum(a.nbytes for a in payload.values()) == 4 + 1  # scale + 5 bits in one byte


def test_randk_keeps_k_entries_unscaled_and_is_seeded() -> None:
    v = np.arange(1, 21, dtype=np.float32)
    codec = Codec("randk", ratio=0.25)  # k = 5
    a, b, c = roundtrip(codec, v, 1), roundtrip(codec, v, 1), roundtrip(codec, v, 2)
    kept = np.flatnonzero(a)
    assert len(kept) == 5
    np.testing.assert_array_equal(a[kept], v[kept])  # values as they are (no d/k scale)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_qsgd_levels_and_unbiasedness() -> None:
    v = np.array([0.3, -1.2, 0.0, 2.5, -0.7], np.float32)
    s = 4
    codec = Codec("qsgd", levels=s)
    norm = float(np.linalg.norm(v))
    draws = np.stack([roundtrip(codec, v, i) for i in range(4000)])
    # every value is ||v|| sign(v_i) l / s with l the floor or the ceiling of s |v_i| / ||v||
    lv = np.abs(draws) / norm * s
    np.testing.assert_allclose(lv, np.round(lv), atol=1e-4)
    lo = np.floor(np.abs(v) / norm * s)
    assert ((np.round(lv) == lo) | (np.round(lv) == lo + 1)).all()
    assert (draws * v >= 0).all() and (draws[:, 2] == 0).all()  # the sign kept (or 0)
    # E Q(v) = v: the mean of 4,000 draws within 4 standard errors
    se = draws.std(axis=0) / math.sqrt(len(draws))
    assert (np.abs(draws.mean(axis=0) - v) <= 4 * se + 1e-6).all()


@pytest.mark.parametrize(("name", "rel"), [("fp16", 2.0**-11), ("bf16", 2.0**-8)])
def test_half_precision_round_trip_error_bound(name: str, rel: float) -> None:
    v = np.random.default_rng(3).normal(0, 10, 1000).astype(np.float32)
    out = roundtrip(Codec(name), v)
    assert (np.abs(out - v) <= rel * np.abs(v) + 1e-30).all()  # round to nearest: half ulp
    assert Codec(name).nbytes({"w": v.shape}) == 2 * v.size


@pytest.mark.parametrize("name", CODECS)
def test_documented_size_equals_the_payload_bytes(name: str) -> None:
    shapes = {"a": (7, 13), "b": (3,), "c": (1,)}
    delta = {k: np.random.default_rng(1).normal(size=s).astype(np.float32)
             for k, s in shapes.items()}
    for codec in (Codec(name, ratio=0.1, levels=5), Codec(name, ratio=1.0, levels=255)):
        payload = codec.encode(delta, rng())
        assert sum(a.nbytes for a in payload.values()) == codec.nbytes(shapes)
        back = codec.decode(payload, shapes)
        assert {k: v.shape for k, v in back.items()} == shapes
    d = 91
    assert Codec("qsgd", levels=5).tensor_nbytes(d) == 4 + math.ceil(d * (1 + 3) / 8)
    assert Codec("topk", ratio=0.1).tensor_nbytes(d) == 8 * 10


def test_error_feedback_residual_over_two_rounds() -> None:
    """p = delta + e, send topk(p), keep e' = p - topk(p); k = 1 of d = 2."""
    codec = Codec("topk", ratio=0.5, error_feedback=True)
    _, sent, e = codec.compress({"w": np.array([3.0, 1.0], np.float32)}, None, rng())
    np.testing.assert_array_equal(sent["w"], [3.0, 0.0])
    np.testing.assert_array_equal(e["w"], [0.0, 1.0])
    _, sent, e = codec.compress({"w": np.array([0.5, 0.8], np.float32)}, e, rng())
    np.testing.assert_allclose(sent["w"], [0.0, 1.8])  # p = [0.5, 1.8]
    np.testing.assert_allclose(e["w"], [0.5, 0.0])
    _, sent, e = Codec("topk", ratio=0.5).compress(  # without feedback: nothing kept
        {"w": np.array([0.5, 0.8], np.float32)}, {"w": np.ones(2, np.float32)}, rng())
    np.testing.assert_allclose(sent["w"], [0.0, 0.8], rtol=1e-6)
    assert e == {}


def test_a_payload_that_does_not_fit_the_model_is_refused() -> None:
    codec = Codec("topk", ratio=0.5)
    payload = codec.encode({"w": np.ones(4, np.float32)}, rng())
    with pytest.raises(ValueError, match="names no tensor"):
        codec.decode(payload, {"v": (4,)})
    with pytest.raises(KeyError):
        codec.decode(payload, {"w": (4,), "v": (2,)})


def test_bad_codec_settings_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({"codec": "zip"})
    assert err.value.key == "codec"
    with pytest.raises(ConfigError) as err:
        parse_run_config({"codec": "qsgd", "error-feedback": True})
    assert err.value.key == "error-feedback"
    with pytest.raises(ConfigError) as err:
        parse_run_config({"codec": "topk", "codec-ratio": 0.0})
    assert err.value.key == "codec-ratio"
