"""The fast Array codec must produce exactly what Flower's own Array(ndarray) produces."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from flowerbed.core.arrays import fast_array, fast_numpy, from_record, stacked_numpy, to_record


@pytest.mark.parametrize("value", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([1.5, -2.0], dtype=np.float64),
    np.arange(6, dtype=np.int64).reshape(2, 1, 3),
    np.array(3.25, dtype=np.float32),  # 0-d
])
def test_fast_array_matches_flower(value: np.ndarray) -> None:
    ours, theirs = fast_array(value), Array(value)
    assert (ours.dtype, ours.shape, ours.stype) == (theirs.dtype, theirs.shape, theirs.stype)
    assert ours.data == theirs.data
    assert ours.object_id == theirs.object_id  # same bytes on the wire
    np.testing.assert_array_equal(ours.numpy(), value)


def test_fast_numpy_copy_and_view() -> None:
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = fast_array(value)
    copy = fast_numpy(a)
    copy[0, 0] = 99.0  # a writable copy: the record is untouched
    np.testing.assert_array_equal(fast_numpy(a), value)
    view = fast_numpy(a, copy=False)
    np.testing.assert_array_equal(view, value)
    with pytest.raises(ValueError):
        view[0, 0] = 1.0  # read-only


def test_record_round_trip_keeps_order() -> None:
    state = {"b": np.ones((2, 2), np.float32), "a": np.zeros(3, np.float32)}
    back = from_record(to_record(state))
    assert list(back) == ["b", "a"]
    for k in state:
        np.testing.assert_array_equal(back[k], state[k])


def test_to_record_equals_flowers_array_record() -> None:
    state = {"b": np.ones((2, 2), np.float32), "a": np.arange(3, dtype=np.float64)}
    theirs = ArrayRecord({k: Array(v) for k, v in state.items()})
    ours = to_record(state)
    assert ours == theirs
    assert ours.object_id == theirs.object_id


@pytest.mark.parametrize("dtype, shape", [(np.float32, (3, 4)), (np.int32, (5,)),
                                          (np.uint8, (2,)), (np.float16, ())])
def test_stacked_numpy_equals_stacking_each(dtype: type, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    values = [np.asarray(rng.normal(size=shape) * 50).astype(dtype) for _ in range(4)]
    got = stacked_numpy([Array(v) for v in values])  # Flower's own serialisation
    assert got.dtype == np.dtype(dtype) and got.shape == (4, *shape)
    np.testing.assert_array_equal(got, np.stack(values))
    got[0] = 0  # a writable copy


def test_stacked_numpy_refuses_mixed_layouts() -> None:
    a = fast_array(np.zeros((2, 3), np.float32))
    for other in (np.zeros((3, 2), np.float32), np.zeros((2, 3), np.int32),
                  np.zeros((2, 4), np.float32)):
        with pytest.raises(ValueError):
            stacked_numpy([a, fast_array(other)])
    with pytest.raises(ValueError):
        stacked_numpy([])
