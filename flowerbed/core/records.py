"""Cheap access to the records inside a Flower ``RecordDict``.

``RecordDict.array_records`` (and ``metric_records``, ``config_records``) builds a new
synced view on every access, re-inserting every record into the ``RecordDict`` with type
checks. With one message per virtual client and several accesses per message, that was a
visible share of a round, so the platform reads records through these functions instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

R = TypeVar("R", ArrayRecord, ConfigRecord, MetricRecord)
D = TypeVar("D", ArrayRecord, ConfigRecord, MetricRecord, RecordDict)


def first(content: RecordDict, kind: type[R]) -> R | None:
    """The first record of type ``kind`` in insertion order, or None."""
    for record in content.values():
        if isinstance(record, kind):
            return record
    return None


def all_of(content: RecordDict, kind: type[R]) -> list[R]:
    """Every record of type ``kind``, in insertion order."""
    return [r for r in content.values() if isinstance(r, kind)]


def filled(record: D, items: Mapping[str, Any]) -> D:
    """``record`` (new, empty) holding ``items``, put in without per-item type checks.

    Only for values the platform itself built with the right types (Arrays from
    ``fast_array``, float metrics, records): Flower's ``__setitem__`` would check each
    key and value, which costs more than building them. The result equals the record
    Flower's constructor gives (tested), since both end in the same internal dict.
    """
    record.__dict__["_data"].update(items)
    return record


def copied(content: D, add: Mapping[str, Any] | None = None, drop: str | None = None) -> D:
    """A new record of ``content``'s type holding its items, minus ``drop``, plus ``add``.

    Shallow (the records inside stay shared) and without Flower's per-item checks: the
    items already passed them when they went into ``content``, and ``add`` must hold
    values the platform built, as for :func:`filled`.
    """
    out = content.copy()
    data = out.__dict__["_data"]
    if drop is not None:
        data.pop(drop, None)
    if add:
        data.update(add)
    return out


__all__ = ["all_of", "copied", "filled", "first"]
