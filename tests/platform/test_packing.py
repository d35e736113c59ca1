"""Packing a round's messages per worker: shared records travel once, order is kept."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from flowerbed.platform.arrays import to_record
from flowerbed.platform.packing import pack, unpack


def test_shared_payload_is_stored_once_and_roundtrips() -> None:
    model = to_record({"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    own = to_record({"w": np.ones((2, 3), np.float32)})
    items = [(5, RecordDict({"arrays": model, "config": ConfigRecord({"server-round": 1})})),
             (9, RecordDict({"arrays": model, "config": ConfigRecord({"server-round": 1})})),
             (2, RecordDict({"arrays": own, "metrics": MetricRecord({"x": 1.0})}))]
    packed = pack(items)
    arrays_stored = [k for k, v in packed.items() if isinstance(v, ArrayRecord)]
    assert len(arrays_stored) == 2  # the shared model once + the per-client one
    out = unpack(packed)
    assert [vid for vid, _ in out] == [5, 9, 2]
    assert out[0][1]["arrays"] is out[1][1]["arrays"]
    np.testing.assert_array_equal(out[2][1]["arrays"]["w"].numpy(), np.ones((2, 3)))
    assert out[2][1]["metrics"]["x"] == 1.0
    assert out[1][1]["config"]["server-round"] == 1
