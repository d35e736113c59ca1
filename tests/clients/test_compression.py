"""A worker encodes a batch of replies at once with the same bytes as client by client, and
the grid decodes them at once into the same models.

``encode_updates`` stacks the clients' updates into a clients x entries matrix per tensor
for the deterministic codecs; every payload, every error-feedback residual and every
"send it uncompressed" decision must equal :func:`encode_update`'s for each client.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

from flowerbed.clients.compression import (
    decompress,
    decompress_batch,
    encode_update,
    encode_updates,
)
from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.codecs import Codec
from flowerbed.core.wire import CLIENT_STATE_KEY
from flowerbed.run.config import parse_run_config
from tests.conftest import tiny

SHAPES = {"weight": (3, 5), "bias": (3,)}


def batch(n: int, seed: int = 0) -> list[tuple[State, State | None, State, RecordDict, int]]:
    """n clients trained from one sent model, with ties in |y - x| (values rounded to 0.1),
    NaN in client 4's update, a residual from an earlier round for every client but
    client 1, and a client rule's own kept state for the odd clients."""
    rng = np.random.default_rng(seed)
    sent = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    out = []
    for i in range(n):
        model = {k: sent[k] + np.round(rng.normal(size=s), 1).astype(np.float32)
                 for k, s in SHAPES.items()}
        if i == 4:
            model["bias"][0] = np.nan
        records: dict = {"arrays": to_record(sent),
                         "config": ConfigRecord({"server-round": 7, "attempt": 0})}
        if i != 1:
            records[CLIENT_STATE_KEY] = to_record(
                {f"codec.{k}": rng.normal(size=s).astype(np.float32) * 0.1
                 for k, s in SHAPES.items()})
        kept: State | None = {"scaffold.c": np.full(3, float(i), np.float32)} if i % 2 else None
        out.append((model, kept, sent, RecordDict(records), i))
    return out


def same(a: tuple[State, State | None] | None, b: tuple[State, State | None] | None) -> None:
    assert (a is None) == (b is None)
    if a is None or b is None:
        return
    assert list(a[0]) == list(b[0])  # payload keys, in order
    for k in a[0]:
        assert a[0][k].dtype == b[0][k].dtype and a[0][k].shape == b[0][k].shape
        np.testing.assert_array_equal(a[0][k], b[0][k])
    assert (a[1] is None) == (b[1] is None)
    if a[1] is not None and b[1] is not None:
        assert sorted(a[1]) == sorted(b[1])
        for k in a[1]:
            assert a[1][k].shape == b[1][k].shape
            np.testing.assert_array_equal(a[1][k], b[1][k])


@pytest.mark.parametrize("codec, ratio, feedback", [
    ("topk", 0.25, True), ("topk", 0.25, False), ("topk", 1.0, True), ("fp16", 0.0, False),
    ("bf16", 0.0, False), ("none", 0.0, False), ("randk", 0.25, True), ("sign", 0.0, True),
    ("qsgd", 0.0, False)])
def test_a_batch_encodes_as_client_by_client(codec: str, ratio: float, feedback: bool
                                             ) -> None:
    cfg = parse_run_config(tiny(codec=codec, codec_ratio=ratio or 0.01,
                                error_feedback=feedback))
    items = batch(6)
    together = encode_updates(items, cfg)
    for (model, kept, sent, content, vid), got in zip(items, together, strict=True):
        same(got, encode_update(model, kept, sent, content, cfg, vid))
    assert together[4] is None  # the NaN client is sent uncompressed
    if feedback:  # the residual joins the state the client keeps (client 3: a rule's too)
        assert together[3] is not None and together[3][1] is not None
        assert {"scaffold.c", "codec.weight", "codec.bias"} <= set(together[3][1])
    else:
        assert together[0] is not None and together[0][1] is None


def test_row_wise_topk_by_hand() -> None:
    """k = 2 of 4 per row; the residual is the row with the two sent entries zeroed."""
    rows = np.array([[0.5, -3.0, 1.0, 2.0], [4.0, 0.0, 0.0, -1.0]], np.float32)
    parts, residual = Codec("topk", 0.5).encode_rows(rows)
    np.testing.assert_array_equal(parts["indices"], [[1, 3], [0, 3]])
    np.testing.assert_array_equal(parts["values"], [[-3.0, 2.0], [4.0, -1.0]])
    np.testing.assert_array_equal(residual, [[0.5, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="client by client"):
        Codec("qsgd").encode_rows(rows)


@pytest.mark.parametrize("codec", ["topk", "randk", "qsgd", "sign", "fp16", "bf16"])
def test_the_grid_decodes_a_batch_as_client_by_client(codec: str) -> None:
    """``decompress_batch`` (the grid's path) gives every client the model ``decompress``
    gives it, bit for bit; a batch with one payload that does not fit the model is left
    to the one-by-one path (None), which names the bad payload."""
    c = Codec(codec, 0.25, 4)
    rng = np.random.default_rng(3)
    sent = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    payloads = [to_record(c.encode({k: rng.normal(size=s).astype(np.float32)
                                     for k, s in SHAPES.items()}, rng)) for _ in range(5)]
    together = decompress_batch(c, payloads, sent)
    assert together is not None
    for payload, got in zip(payloads, together, strict=True):
        one = decompress(c, payload, sent)
        assert list(got) == list(one)
        for k in one:
            assert got[k].dtype == np.float32 and got[k].shape == SHAPES[k]
            np.testing.assert_array_equal(got[k], one[k])
    bad = from_record(payloads[2])
    part = next(k for k in bad if k.startswith("bias|"))
    bad[part] = bad[part][:-1]  # one entry short
    assert decompress_batch(c, [*payloads[:2], to_record(bad), *payloads[3:]], sent) is None
    with pytest.raises((ValueError, IndexError)):
        decompress(c, to_record(bad), sent)


def test_batch_decode_of_topk_by_hand() -> None:
    """Two clients, d = 4, k = 2: x + the sent entries at their indices."""
    sent = {"w": np.array([1.0, 1.0, 1.0, 1.0], np.float32)}
    payloads = [to_record({"w|values": np.array(v, np.float32),
                           "w|indices": np.array(i, np.int32)})
                for v, i in (([-3.0, 2.0], [1, 3]), ([4.0, -1.0], [0, 3]))]
    got = decompress_batch(Codec("topk", 0.5), payloads, sent)
    assert got is not None
    np.testing.assert_array_equal(got[0]["w"], [1.0, -2.0, 1.0, 3.0])
    np.testing.assert_array_equal(got[1]["w"], [5.0, 1.0, 1.0, 0.0])
