"""Pack many virtual clients' messages into one Flower message, and unpack them.

A worker (one Flower SuperNode) hosts a shard of the virtual clients. Flower's simulation
engine pays per message and per poll, not per FLOP, so a round sends one message per
worker. A record shared by several virtual messages (the global model that FedAvg puts in
every message) is stored once: records are deduplicated by identity.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

PACK_KEY = "flowerbed.pack"
Item = tuple[int, RecordDict]  # (virtual node id, content)
Record = ArrayRecord | ConfigRecord | MetricRecord


def pack(items: Sequence[Item]) -> RecordDict:
    """One RecordDict holding every item; each distinct record object appears once."""
    out = RecordDict()
    slot_of: dict[int, str] = {}
    layout: list[list[list[str]]] = []
    for _, content in items:
        entry = []
        for name, record in content.items():
            slot = slot_of.get(id(record))
            if slot is None:
                slot = str(len(slot_of))
                slot_of[id(record)] = slot
                out[slot] = record
            entry.append([name, slot])
        layout.append(entry)
    out[PACK_KEY] = ConfigRecord({"ids": [int(i) for i, _ in items],
                                  "layout": json.dumps(layout)})
    return out


def unpack(packed: RecordDict) -> list[Item]:
    """Inverse of :func:`pack`; items that shared a record share the same object again."""
    meta = packed[PACK_KEY]
    ids = list(meta["ids"])  # type: ignore[arg-type]
    layout = json.loads(str(meta["layout"]))
    items: list[Item] = []
    for vid, entry in zip(ids, layout, strict=True):
        content = RecordDict({name: packed[slot] for name, slot in entry})
        items.append((int(vid), content))
    return items


def is_packed(content: RecordDict) -> bool:
    return PACK_KEY in content
