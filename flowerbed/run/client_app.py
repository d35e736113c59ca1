"""The Flower ClientApp: a thin adapter from a packed worker message to :func:`worker.handle`."""

from __future__ import annotations

import functools
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flowerbed.clients import worker
from flowerbed.core.wire import pack, unpack
from flowerbed.run.config import RunConfig, parse_run_config

app = ClientApp()


@functools.lru_cache(maxsize=8)
def _config(items: tuple[tuple[str, Any], ...]) -> RunConfig:
    return parse_run_config(dict(items))


def _serve(kind: str, msg: Message, context: Context) -> Message:
    cfg = _config(tuple(sorted(context.run_config.items())))
    replies = worker.handle(kind, unpack(msg.content), cfg)
    return Message(pack(replies), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _serve("train", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _serve("evaluate", msg, context)
