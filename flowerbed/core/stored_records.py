"""Flower records as checkpoint data: a ``RecordDict`` as byte arrays, shared records once.

A checkpoint stores arrays and JSON, never pickle (:mod:`flowerbed.run.checkpoint`). The
messages an asynchronous run has in flight (what each client was sent, and the replies
already trained but not yet arrived) are ``RecordDict``s; each record goes into one uint8
array in Flower's own protobuf encoding (``flwr.common.serde``: every array's bytes, dtype
and shape, every metric and config value, exactly), and a record that several messages
share (the model version sent to many clients) is stored once and shared again when read
back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict


class RecordStore:
    """Writes records into ``blobs`` (one uint8 array each, deduplicated by identity)."""

    def __init__(self) -> None:
        self.blobs: list[np.ndarray] = []
        self._index: dict[int, int] = {}
        self._alive: list[Any] = []  # keeps the stored records alive: ids stay unique

    def put(self, content: RecordDict) -> list[list[Any]]:
        """[[key, blob index], ...] of ``content``, in its order."""
        out: list[list[Any]] = []
        for key, record in content.items():
            i = self._index.get(id(record))
            if i is None:
                raw = recorddict_to_proto(RecordDict({key: record})).SerializeToString()
                i = self._index[id(record)] = len(self.blobs)
                self.blobs.append(np.frombuffer(raw, dtype=np.uint8).copy())
                self._alive.append(record)
            out.append([key, i])
        return out


class RecordReader:
    """Reads back what a :class:`RecordStore` wrote; each blob becomes one shared record."""

    def __init__(self, blobs: list[np.ndarray]) -> None:
        self.blobs = blobs
        self._records: dict[int, Any] = {}

    def get(self, entries: list[list[Any]]) -> RecordDict:
        content = RecordDict()
        for key, i in entries:
            i = int(i)
            if i not in self._records:
                proto = ProtoRecordDict()
                proto.ParseFromString(np.asarray(self.blobs[i], dtype=np.uint8).tobytes())
                (record,) = recorddict_from_proto(proto).values()
                self._records[i] = record
            content[str(key)] = self._records[i]
        return content


__all__ = ["RecordReader", "RecordStore"]
