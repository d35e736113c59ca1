from __future__ import annotations

import gc

import numpy as np

from flowerbed.core.arrays import from_record, to_record
from flowerbed.core.validation import check_reply_record


def test_a_finite_record_is_remembered_but_names_and_shapes_are_still_checked() -> None:
    record = to_record({"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)})
    sent = {"w": (2, 3), "b": (3,)}
    assert check_reply_record(sent, record, exact=True) is None
    assert check_reply_record(sent, record, exact=True) is None  # remembered as finite
    # another caller's expectations are checked in full on the remembered record
    assert check_reply_record({"w": (3, 2), "b": (3,)}, record) == \
        "corrupt: 'w' has shape (2, 3), sent (3, 2)"
    assert check_reply_record({"w": (2, 3)}, record, exact=True) == \
        "corrupt: the reply's arrays are not the model's"


def test_a_non_finite_record_is_rejected_every_time() -> None:
    record = to_record({"w": np.array([1.0, np.nan], np.float32)})
    for _ in range(2):
        assert check_reply_record({"w": (2,)}, record) == "corrupt: non-finite values in 'w'"


def test_a_new_record_is_scanned_even_where_an_old_one_was_remembered() -> None:
    """The memory is per live record object: ids of dead records are reused by Python."""
    for _ in range(50):
        good = to_record({"w": np.ones(4, np.float32)})
        assert check_reply_record(None, good) is None
        del good
        gc.collect()
        bad = to_record({"w": np.array([0.0, np.inf, 0.0, 0.0], np.float32)})
        assert check_reply_record(None, bad) == "corrupt: non-finite values in 'w'"
        del bad


def test_read_only_views_are_decoded_once_and_handed_out_in_new_dicts() -> None:
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    record = to_record(state)
    a, b = from_record(record, copy=False), from_record(record, copy=False)
    assert a is not b and a["w"] is b["w"]  # one decode, two dicts
    np.testing.assert_array_equal(a["w"], state["w"])
    assert not a["w"].flags.writeable
    a["extra"] = np.zeros(1)  # a caller's changes to its dict stay its own
    assert "extra" not in from_record(record, copy=False)
    c = from_record(record)  # copy=True: writable copies
    assert c["w"].flags.writeable and c["w"] is not a["w"]
