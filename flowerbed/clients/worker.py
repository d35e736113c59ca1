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
from collections.abc import Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients import batched
from flowerbed.clients.compression import compress_reply
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
from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.params import Config
from flowerbed.core.records import filled, first
from flowerbed.core.wire import (
    CLIENT_STATE_KEY,
    CODEC_KEY,
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


def train_reply(result: batched.TrainResult) -> RecordDict:
    """The reply of a trained client: its model and metrics, and for a client rule the
    extra arrays it sends and the state it keeps (the platform strips that one)."""
    records: dict[str, object] = {
        "arrays": to_record(result.state),
        "metrics": filled(MetricRecord(), {k: float(v) for k, v in result.metrics.items()})}
    if result.outputs:
        records[OUTPUTS_KEY] = to_record(result.outputs)
    if result.client_state is not None:
        records[CLIENT_STATE_KEY] = to_record(result.client_state)
    return filled(RecordDict(), records)  # built from trusted values: no checks


def handle(kind: str, items: Sequence[Item], cfg: Config) -> list[Item]:
    """Train or evaluate every (virtual node id, content) item; one reply per item.

    A client whose work raises gets an error reply; the others are unaffected. A message
    that carries a directive of the simulation (:mod:`flowerbed.clients.injected`) makes
    the client fail or corrupt its update.
    """
    batched.set_worker_threads()
    data = load_federation(cfg)
    model = skeleton(cfg, data)
    plan = [directive(content) for _, content in items]
    # cfg.vmap: all train items at once (position -> result); the rest go one by one.
    # Clients whose work is to fail this round are not trained at all.
    # (label-flipping clients train on relabelled data: the sequential path)
    alive = [pos for pos, action in enumerate(plan) if action not in (FAIL, FLIP_LABELS)]
    done = {alive[p]: r for p, r in batched.pretrain(kind, [items[p] for p in alive], cfg,
                                                         data, model).items()}
    decoded: dict[int, State] = {}
    replies: list[Item] = []
    for pos, (vid, content) in enumerate(items):
        try:
            action = plan[pos]
            if action == FAIL:
                raise InjectedFailure("injected client failure")
            arrays, config = _arrays_and_config(content)

            def received(arrays: ArrayRecord = arrays) -> State:  # decoded once, if needed
                if id(arrays) not in decoded:
                    decoded[id(arrays)] = from_record(arrays)
                return decoded[id(arrays)]

            if kind == "train":
                result = done.get(pos) or train_one(vid, content, cfg, data, model,
                                                    flip=action == FLIP_LABELS)
                if wants_clipping(config):  # Flower's client-side DP wrappers
                    result.state, result.metrics = clip_update(
                        result.state, received(), config, dict(result.metrics))
                if action == CORRUPT:
                    result.state = corrupt_state(result.state, cfg.seed,
                                                 *round_and_attempt(content), vid)
                reply = train_reply(result)
                # the update compressed when the platform asks (flowerbed.core.codecs)
                if CODEC_KEY in content:
                    reply = compress_reply(reply, received(), content, cfg, vid)
            else:
                x, y = data.x[vid], training_labels(data.y[vid], config)
                m = evaluate(model, received(), x, y, device=resolve(cfg.device))
                reply = RecordDict({"metrics": MetricRecord(
                    {"eval_loss": m["loss"], "eval_accuracy": m["accuracy"],
                     "num-examples": m["num-examples"]})})
        except Exception as err:  # one client's failure must not fail the batch
            log.debug("client %d failed: %s", vid, traceback.format_exc())
            reply = error_reply(f"{type(err).__name__}: {err}")
        replies.append((vid, reply))
    return replies
