"""The Flower ClientApp: a thin adapter from a packed worker message to :func:`worker.handle`.

Nothing heavy is imported at module level: ``flwr-simulation`` loads this module once in
its main thread (to check that the ClientApp loads) before it starts Ray, so torch and
the worker code imported here would delay Ray's start by their import time (seconds on
two busy cores). A worker imports them with its first message instead.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

if TYPE_CHECKING:
    from flowerbed.run.config import RunConfig

app = ClientApp()


@functools.lru_cache(maxsize=8)
def _config(items: tuple[tuple[str, Any], ...]) -> RunConfig:
    from flowerbed.run.config import parse_run_config

    return parse_run_config(dict(items))


def _serve(kind: str, msg: Message, context: Context) -> Message:
    from flowerbed.clients import worker
    from flowerbed.core.wire import pack, unpack

    cfg = _config(tuple(sorted(context.run_config.items())))
    replies = worker.handle(kind, unpack(msg.content), cfg)
    return Message(pack(replies), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _serve("train", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _serve("evaluate", msg, context)
