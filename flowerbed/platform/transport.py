"""How a round's virtual-client work reaches the workers.

- :class:`FlowerTransport`: through Flower's Grid, one packed message per worker
  (SuperNode), on the Ray simulation backend or a real deployment.
- :class:`InProcessTransport`: the same worker function called directly, no Flower
  transport (engine = 'inprocess'); no serialisation, same results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from flowerbed.clients import worker
from flowerbed.platform.config import RunConfig
from flowerbed.platform.packing import Item, pack, unpack

log = logging.getLogger(__name__)


class Transport(Protocol):
    def run(self, kind: str, items: Sequence[Item], timeout: float | None) -> list[Item]:
        """Run ``kind`` ('train' or 'evaluate') for every item; replies that arrived."""


class InProcessTransport:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def run(self, kind: str, items: Sequence[Item], timeout: float | None) -> list[Item]:
        return worker.handle(kind, items, self.cfg)


class FlowerTransport:
    """Shards the virtual clients over the connected SuperNodes (workers)."""

    def __init__(self, grid: Grid, cfg: RunConfig) -> None:
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

    def run(self, kind: str, items: Sequence[Item], timeout: float | None) -> list[Item]:
        by_worker: dict[int, list[Item]] = {}
        for item in items:
            by_worker.setdefault(self.worker_of[item[0]], []).append(item)
        mtype = MessageType.TRAIN if kind == "train" else MessageType.EVALUATE
        messages = [Message(content=pack(batch), dst_node_id=node, message_type=mtype)
                    for node, batch in by_worker.items()]
        replies: list[Item] = []
        for reply in self.grid.send_and_receive(messages, timeout=timeout):
            if reply.has_error():
                log.warning("worker %d failed: %s", reply.metadata.src_node_id,
                            reply.error.reason)
                continue
            replies.extend(unpack(reply.content))
        return replies
