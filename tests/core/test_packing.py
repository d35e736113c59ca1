"""Packing a round's messages into one worker message and back."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from flowerbed.core.arrays import from_record, to_record
from flowerbed.core.wire import pack, unpack


def _reply(i: int) -> RecordDict:
    state = {"w": np.full((3, 2), i, np.float32), "b": np.arange(2, dtype=np.float64) + i}
    return RecordDict({"arrays": to_record(state),
                       "metrics": MetricRecord({"train_loss": 0.5 * i, "num-examples": 10 + i,
                                                "num-steps": float(i)})})


def test_per_client_records_are_stacked_and_restored() -> None:
    items = [(v, _reply(v)) for v in (4, 9, 2)]
    packed = pack(items)
    # one stacked ArrayRecord and one stacked MetricRecord, not one per client
    assert len(packed.array_records) == 1
    stacked = next(iter(packed.array_records.values()))
    assert tuple(stacked["w"].shape) == (3, 3, 2)
    assert len(packed.metric_records) == 1
    out = unpack(packed)
    assert [v for v, _ in out] == [4, 9, 2]
    for (_, want), (_, got) in zip(items, out, strict=True):
        w, g = from_record(want["arrays"]), from_record(got["arrays"])
        assert list(g) == ["w", "b"]
        for k in w:
            assert g[k].dtype == w[k].dtype and np.array_equal(g[k], w[k])
        assert dict(got["metrics"]) == dict(want["metrics"])
        assert type(got["metrics"]["num-examples"]) is int
        assert type(got["metrics"]["train_loss"]) is float


def test_shared_record_travels_once_and_stays_shared() -> None:
    model = to_record({"w": np.ones((4, 4), np.float32)})
    cfg = ConfigRecord({"server-round": 3})
    items = [(v, RecordDict({"arrays": model, "config": cfg})) for v in range(5)]
    packed = pack(items)
    assert len(packed.array_records) == 1
    assert tuple(next(iter(packed.array_records.values()))["w"].shape) == (4, 4)
    out = unpack(packed)
    assert all(c["arrays"] is out[0][1]["arrays"] for _, c in out)
    assert np.array_equal(from_record(out[3][1]["arrays"])["w"], np.ones((4, 4)))
    assert out[2][1]["config"]["server-round"] == 3


def test_mixed_layouts_and_error_replies() -> None:
    odd = RecordDict({"arrays": to_record({"w": np.zeros(5, np.float32)}),
                      "metrics": MetricRecord({"train_loss": 1.0})})
    err = RecordDict({"flowerbed.error": ConfigRecord({"reason": "boom"})})
    items = [(0, _reply(0)), (1, err), (2, odd), (3, _reply(3))]
    out = unpack(pack(items))
    assert out[1][1]["flowerbed.error"]["reason"] == "boom"
    assert from_record(out[2][1]["arrays"])["w"].shape == (5,)
    assert from_record(out[3][1]["arrays"])["w"][0, 0] == 3
    assert dict(out[2][1]["metrics"]) == {"train_loss": 1.0}
    assert unpack(pack([])) == []


def test_single_reply_is_not_stacked() -> None:
    packed = pack([(7, _reply(7))])
    rec = next(iter(packed.array_records.values()))
    assert isinstance(rec, ArrayRecord) and tuple(rec["w"].shape) == (3, 2)
    assert from_record(unpack(packed)[0][1]["arrays"])["w"][0, 0] == 7
