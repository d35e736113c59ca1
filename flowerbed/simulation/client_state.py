"""The state clients keep between rounds (client rules such as SCAFFOLD's c_i).

In a real deployment a client keeps its state on the device. Here virtual clients are
hosted by whichever worker gets their shard this round, so the platform keeps their state
instead and hands it to the worker with the client's training message: it does not depend
on which worker hosts the client (re-sharding loses nothing), it is saved with checkpoints,
and it is never counted as traffic (the grid attaches it after the ledger has counted the
message, and strips it from the reply before the ledger and the strategy see it).

Only a reply the round accepts updates a client's state (a client that failed, dropped out
or answered late keeps the state it had).
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord

from flowerbed.core.arrays import State, from_record, record_nbytes, to_record


class ClientStates:
    """Each client's kept state, held as the record it arrived in: it goes back out as it
    is (no conversion per client and round); decoded only for checkpoints and readers."""

    def __init__(self) -> None:
        self._kept: dict[int, ArrayRecord] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, vid: int) -> bool:
        return vid in self._kept

    def record_for(self, vid: int) -> ArrayRecord | None:
        return self._kept.get(vid)

    def keep(self, vid: int, record: ArrayRecord) -> None:
        self._kept[vid] = record

    def get(self, vid: int) -> State | None:
        record = self._kept.get(vid)
        return None if record is None else from_record(record)

    @property
    def nbytes(self) -> int:
        return sum(record_nbytes(r) for r in self._kept.values())

    def state_dict(self) -> dict[str, Any]:
        return {str(vid): from_record(record) for vid, record in sorted(self._kept.items())}

    def load_state_dict(self, doc: dict[str, Any]) -> None:
        self._kept = {int(vid): to_record(state) for vid, state in doc.items()}


__all__ = ["ClientStates"]
