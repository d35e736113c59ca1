"""How a round's virtual-client work reaches the workers.

- :class:`FlowerTransport`: through Flower's Grid, one packed message per worker
  (SuperNode), on the Ray simulation backend or a real deployment.
- :class:`InProcessTransport`: the same worker function called directly, no Flower
  transport (engine = 'inprocess'); no serialisation, same results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from flowerbed.clients import worker
from flowerbed.core.params import Config
from flowerbed.core.wire import Item, pack, unpack

log = logging.getLogger(__name__)


class Transport(Protocol):
    def run(self, kind: str, items: Sequence[Item], timeout: float | None
            ) -> list[RecordDict | None]:
        """Run ``kind`` ('train' or 'evaluate') for every item.

        Returns one entry per item, in order: the reply, or None if none arrived.
        """


class InProcessTransport:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def run(self, kind: str, items: Sequence[Item], timeout: float | None
            ) -> list[RecordDict | None]:
        return [content for _, content in worker.handle(kind, items, self.cfg)]


class FlowerTransport:
    """Shards the virtual clients over the connected SuperNodes (workers)."""

    def __init__(self, grid: Grid, cfg: Config) -> None:
        self.grid = grid
        nodes = sorted(grid.get_node_ids())
        if not nodes:
            raise RuntimeError("no SuperNode is connected to the SuperLink")
        if cfg.workers:
            nodes = nodes[:cfg.workers]
        self.workers = nodes
        log.info("Flower transport: %d virtual clients on %d workers", cfg.num_clients,
                 len(nodes))
        n, w = cfg.num_clients, len(nodes)
        # contiguous shards: client v lives on worker v * w // n
        self.worker_of = [nodes[v * w // n] for v in range(n)]

    def run(self, kind: str, items: Sequence[Item], timeout: float | None
            ) -> list[RecordDict | None]:
        by_worker: dict[int, list[int]] = {}  # worker node -> positions in items
        for pos, (vid, _) in enumerate(items):
            by_worker.setdefault(self.worker_of[vid], []).append(pos)
        mtype = MessageType.TRAIN if kind == "train" else MessageType.EVALUATE
        messages = [Message(content=pack([items[p] for p in positions]), dst_node_id=node,
                            message_type=mtype) for node, positions in by_worker.items()]
        out: list[RecordDict | None] = [None] * len(items)
        for reply in self._send_and_receive(messages, timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log.warning("worker %d failed: %s", node, reply.error.reason)
                continue
            for pos, (_, content) in zip(by_worker[node], unpack(reply.content), strict=True):
                out[pos] = content
        return out

    def _send_and_receive(self, messages: list[Message], timeout: float | None
                          ) -> list[Message]:
        """Push, then pull every 10 ms for 2 s, backing off to 0.5 s for long rounds.

        Flower's own ``send_and_receive`` pulls every 0.1 s (in simulation) or 3 s (a
        deployment), which would add up to that much to every short round on top of
        the simulation engine's own 0.1 s poll.
        """
        pending = set(self.grid.push_messages(messages))
        start = time.monotonic()
        replies: list[Message] = []
        while pending:
            got = list(self.grid.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            waited = time.monotonic() - start
            if not pending or (timeout is not None and waited > timeout):
                break
            time.sleep(0.01 if waited < 2.0 else min(0.5, 0.01 * waited))
        return replies
