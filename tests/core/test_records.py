from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from flowerbed.core.arrays import to_record
from flowerbed.core.records import all_of, copied, filled, first


def test_first_and_all_of_follow_insertion_order() -> None:
    a1 = to_record({"w": np.ones(2, np.float32)})
    a2 = to_record({"v": np.zeros(1, np.float32)})
    m = MetricRecord({"loss": 0.5})
    content = RecordDict({"m": m, "a1": a1, "c": ConfigRecord({"server-round": 3}),
                          "a2": a2})
    assert first(content, ArrayRecord) is a1
    assert first(content, MetricRecord) is m
    assert first(content, ConfigRecord)["server-round"] == 3
    assert all_of(content, ArrayRecord) == [a1, a2]
    # the same records as Flower's own (slow) views
    assert list(content.array_records.values()) == all_of(content, ArrayRecord)


def test_first_is_none_when_absent() -> None:
    content = RecordDict({"m": MetricRecord({"loss": 1.0})})
    assert first(content, ArrayRecord) is None
    assert all_of(content, ConfigRecord) == []


def test_filled_equals_flowers_constructors() -> None:
    arrays = to_record({"w": np.arange(3, dtype=np.float32)})
    metrics = {"train_loss": 0.25, "num-examples": 64.0}
    ours = filled(RecordDict(), {"arrays": arrays,
                                 "metrics": filled(MetricRecord(), metrics)})
    theirs = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)})
    assert ours == theirs
    assert ours.object_id == theirs.object_id  # same serialised content
    assert first(ours, MetricRecord)["train_loss"] == 0.25


def test_copied_shares_records_and_leaves_the_original_alone() -> None:
    a = to_record({"w": np.ones(2, np.float32)})
    c = ConfigRecord({"server-round": 3})
    content = RecordDict({"arrays": a, "config": c})
    added = MetricRecord({"loss": 0.5})
    out = copied(content, {"metrics": added}, drop="config")
    assert type(out) is RecordDict and list(out.keys()) == ["arrays", "metrics"]
    assert out["arrays"] is a and out["metrics"] is added  # shared, not copied
    assert list(content.keys()) == ["arrays", "config"]  # the original is unchanged
    assert out == RecordDict({"arrays": a, "metrics": added})  # what Flower would build
    out["more"] = ConfigRecord({"x": 1})  # still a checked RecordDict afterwards
    assert "more" not in content
