"""Whom Flower's Krum, MultiKrum and Bulyan selected: their own selection rule, asked again.

Flower's ``MultiKrum.aggregate_train`` (and Krum, its subclass with one node to select)
averages the replies that ``flwr.serverapp.strategy.multikrum.select_multikrum`` returns;
Bulyan's first step keeps the theta = n - 2f replies of its ``selection_rule`` (by default
the same function) and then takes a coordinate-wise trimmed mean around their median. None
of them says whom it kept. :class:`SelectionRecorder` calls the same Flower function on the
same valid replies just before Flower aggregates them (a second, identical pass: the
selection is deterministic) and keeps the senders of the selected replies, so the platform,
which knows who is malicious, can count the malicious updates each round let through
(``malicious_accepted``). Flower's aggregation itself is not touched. For Bulyan the count
is of its selection step: the coordinate-wise trimmed mean that follows may still discard
a selected reply's value in any coordinate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import Bulyan, MultiKrum
from flwr.serverapp.strategy.multikrum import select_multikrum

SELECTING = (MultiKrum, Bulyan)  # Krum is a MultiKrum


class SelectionRecorder:
    """Mixin for an adopted Flower MultiKrum/Krum/Bulyan (see the module docstring)."""

    num_malicious_nodes: int

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self._accepted = selected_senders(self, replies)
        return super().aggregate_train(server_round, replies)  # type: ignore[misc]

    def accepted_senders(self) -> np.ndarray:
        """The senders of the replies the last round's selection kept."""
        return getattr(self, "_accepted", np.zeros(0, np.int64))


def selected_senders(strategy: Any, replies: list[Message]) -> np.ndarray:
    """Senders of the replies Flower's selection keeps among ``replies`` (error replies
    are left out, as Flower does)."""
    valid = [m for m in replies if not m.has_error()]
    if not valid:
        return np.zeros(0, np.int64)
    contents = [m.content for m in valid]
    f = int(strategy.num_malicious_nodes)
    if isinstance(strategy, Bulyan):
        if len(valid) < 4 * f + 3:  # Flower skips the round's aggregation
            return np.zeros(0, np.int64)
        chosen = strategy.selection_rule(contents, f, len(valid) - 2 * f)
    else:
        chosen = select_multikrum(contents, num_malicious_nodes=f,
                                  num_nodes_to_select=int(strategy.num_nodes_to_select))
    sender = {id(m.content): int(m.metadata.src_node_id) for m in valid}
    return np.array([sender[id(c)] for c in chosen], np.int64)


__all__ = ["SELECTING", "SelectionRecorder", "selected_senders"]
