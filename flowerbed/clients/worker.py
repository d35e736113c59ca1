"""A worker: runs the ClientApp logic for a batch of virtual clients.

The Flower ClientApp (one SuperNode = one worker) and the in-process engine both call
:func:`handle`, so every execution path trains the same way. Model skeletons and the
partitioned data are cached per process; a shared payload (the global model) is decoded
once per batch, not once per client.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable, Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients import batched
from flowerbed.clients.compression import encode_update, encode_updates
from flowerbed.clients.data import FederatedData, load_federation
from flowerbed.clients.device import resolve
from flowerbed.clients.dp_clipping import clip_update, wants_clipping
from flowerbed.clients.injected import (
    CORRUPT,
    FAIL,
    FLIP_LABELS,
    InjectedFailure,
    corrupt_state,
    flipped_labels,
)
from flowerbed.clients.models import build_model
from flowerbed.clients.rules import OUTPUTS_KEY, rule_for
from flowerbed.clients.training import TrainParams, client_rng, evaluate, local_train
from flowerbed.core import collector
from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.params import Config
from flowerbed.core.records import filled, first
from flowerbed.core.wire import (
    CLIENT_STATE_KEY,
    CODEC_KEY,
    CODEC_PAYLOAD_KEY,
    Item,
    directive,
    error_reply,
    round_and_attempt,
)

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _skeleton(model: str, hidden: str, input_shape: tuple[int, ...], classes: int,
              cfg: Config) -> nn.Module:
    return build_model(cfg, input_shape, classes)


def skeleton(cfg: Config, data: FederatedData) -> nn.Module:
    """The model architecture (weights are passed functionally), cached per process."""
    return _skeleton(cfg.model, cfg.hidden_sizes, data.input_shape, data.num_classes, cfg)


def _arrays_and_config(content: RecordDict) -> tuple[ArrayRecord, ConfigRecord]:
    arrays = first(content, ArrayRecord)
    if arrays is None:
        raise ValueError("the message carries no ArrayRecord")
    return arrays, first(content, ConfigRecord) or ConfigRecord()


def training_labels(y: np.ndarray, config: ConfigRecord) -> np.ndarray:
    """The client's labels, or one label for all its examples if the message sets
    ``target-label`` (Paris trains its router to predict the client's expert group)."""
    if "target-label" in config:
        return np.full_like(y, int(config["target-label"]))  # type: ignore[arg-type]
    return y


def train_one(vid: int, content: RecordDict, cfg: Config, data: FederatedData,
              model: nn.Module, flip: bool = False) -> batched.TrainResult:
    """One client's training on the sequential path (no vmap); ``flip``: on poisoned labels
    (a malicious node's label flipping, :mod:`flowerbed.clients.injected`)."""
    arrays, config = _arrays_and_config(content)
    rule = rule_for(config)
    if rule is None:  # the default local SGD: its own loop (handles models with buffers)
        state = from_record(arrays)
        x, y = data.x[vid], training_labels(data.y[vid], config)
        if flip:
            y = flipped_labels(y, data.num_classes, cfg.label_flip_classes)
        params = TrainParams.from_config(cfg, dict(config))
        rng = client_rng(cfg.seed, int(config.get("server-round", 0)), vid)
        return batched.TrainResult(*local_train(model, state, x, y, params, rng,
                                                resolve(cfg.device)))
    if any(True for _ in model.buffers()):
        raise ValueError(f"client rule {rule.name!r} needs a model without buffers "
                         "(BatchNorm keeps running statistics in the model); use GroupNorm")
    if "target-label" in config:
        raise ValueError("a client rule cannot train a relabelled task (target-label)")
    x_flat, y_flat, offsets = batched.flat_data(data, resolve(cfg.device))
    job = batched.make_job(vid, content, cfg, offsets, {}, {})
    assert job is not None
    if flip:  # this client's rows of a copy of the labels, poisoned
        y_flat = y_flat.clone()
        rows = torch.from_numpy(job.rows).to(y_flat.device)
        y_flat[rows] = torch.from_numpy(flipped_labels(
            y_flat[rows].cpu().numpy(), data.num_classes, cfg.label_flip_classes)
        ).to(y_flat.device)
    return batched.train_batched(model, [job], x_flat, y_flat, vectorised=False)[0]


def train_reply(result: batched.TrainResult,
                encoded: tuple[State, State | None] | None = None) -> RecordDict:
    """The reply of a trained client: its model (or, ``encoded``, the payload of its
    compressed update and the state it then keeps) and metrics, and for a client rule the
    extra arrays it sends and the state it keeps (the platform strips that one)."""
    model, kept = (result.state, result.client_state) if encoded is None else encoded
    records: dict[str, object] = {
        "arrays" if encoded is None else CODEC_PAYLOAD_KEY: to_record(model),
        "metrics": filled(MetricRecord(), {k: float(v) for k, v in result.metrics.items()})}
    if result.outputs:
        records[OUTPUTS_KEY] = to_record(result.outputs)
    if kept is not None:
        records[CLIENT_STATE_KEY] = to_record(kept)
    return filled(RecordDict(), records)  # built from trusted values: no checks


def encode_batch(items: Sequence[Item], done: dict[int, batched.TrainResult],
                 plan: Sequence[str | None], cfg: Config,
                 received_by: Callable[[ArrayRecord], State]
                 ) -> dict[int, tuple[State, State | None] | None]:
    """The compressed updates of the batch-trained clients whose reply is sent as it was
    trained (no DP clipping, no injected corruption), encoded together
    (:func:`~flowerbed.clients.compression.encode_updates`): position -> encoding. Empty
    when the batch cannot be encoded at once (the clients are then encoded one by one,
    which also reports a client's own error)."""
    chosen = []
    for pos, result in done.items():
        vid, content = items[pos]
        if CODEC_KEY not in content or plan[pos] is not None:
            continue
        arrays, config = _arrays_and_config(content)
        if not wants_clipping(config):
            chosen.append((pos, (result.state, result.client_state, received_by(arrays),
                                 content, vid)))
    if not chosen:
        return {}
    try:
        out = encode_updates([job for _, job in chosen], cfg)
    except (KeyError, ValueError, IndexError) as err:
        log.debug("encoding the batch at once failed (%s): client by client", err)
        return {}
    return {pos: e for (pos, _), e in zip(chosen, out, strict=True)}


def handle(kind: str, items: Sequence[Item], cfg: Config) -> list[Item]:
    """Train or evaluate every (virtual node id, content) item; one reply per item.

    A client whose work raises gets an error reply; the others are unaffected. A message
    that carries a directive of the simulation (:mod:`flowerbed.clients.injected`) makes
    the client fail or corrupt its update.
    """
    batched.set_worker_threads()
    data = load_federation(cfg)
    model = skeleton(cfg, data)
    collector.settle()  # the worker is set up (flowerbed.core.collector)
    plan = [directive(content) for _, content in items]
    # cfg.vmap: all train items at once (position -> result); the rest go one by one.
    # Clients whose work is to fail this round are not trained at all.
    # (label-flipping clients train on relabelled data: the sequential path)
    alive = [pos for pos, action in enumerate(plan) if action not in (FAIL, FLIP_LABELS)]
    done = {alive[p]: r for p, r in batched.pretrain(kind, [items[p] for p in alive], cfg,
                                                         data, model).items()}
    decoded: dict[int, State] = {}

    def received_by(arrays: ArrayRecord) -> State:  # each sent model decoded once, if needed
        if id(arrays) not in decoded:
            decoded[id(arrays)] = from_record(arrays)
        return decoded[id(arrays)]

    encoded = encode_batch(items, done, plan, cfg, received_by)
    replies: list[Item] = []
    for pos, (vid, content) in enumerate(items):
        try:
            action = plan[pos]
            if action == FAIL:
                raise InjectedFailure("injected client failure")
            arrays, config = _arrays_and_config(content)
            if kind == "train":
                # popped: a client's trained arrays are freed once its reply holds them
                result = done.pop(pos, None) or train_one(vid, content, cfg, data, model,
                                                          flip=action == FLIP_LABELS)
                if wants_clipping(config):  # Flower's client-side DP wrappers
                    result.state, result.metrics = clip_update(
                        result.state, received_by(arrays), config, dict(result.metrics))
                if action == CORRUPT:
                    result.state = corrupt_state(result.state, cfg.seed,
                                                 *round_and_attempt(content), vid)
                # the update compressed when the platform asks (flowerbed.core.codecs)
                code = encoded[pos] if pos in encoded else encode_update(
                    result.state, result.client_state, received_by(arrays), content, cfg,
                    vid) if CODEC_KEY in content else None
                reply = train_reply(result, code)
            else:
                x, y = data.x[vid], training_labels(data.y[vid], config)
                m = evaluate(model, received_by(arrays), x, y, device=resolve(cfg.device))
                reply = RecordDict({"metrics": MetricRecord(
                    {"eval_loss": m["loss"], "eval_accuracy": m["accuracy"],
                     "num-examples": m["num-examples"]})})
        except Exception as err:  # one client's failure must not fail the batch
            log.debug("client %d failed: %s", vid, traceback.format_exc())
            reply = error_reply(f"{type(err).__name__}: {err}")
        replies.append((vid, reply))
    return replies
