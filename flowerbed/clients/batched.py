"""Batched local training: every client of a worker's batch in one ``torch.func.vmap``.

The arithmetic is exactly :func:`flowerbed.clients.training.local_train`'s, client by
client: each client draws its own mini-batches from :func:`~flowerbed.clients.training.
batch_plan` with its own :func:`~flowerbed.clients.training.client_rng`, and takes its own
number of steps with :func:`~flowerbed.clients.training.sgd_update` (momentum, weight
decay, FedProx's mu). What changes is the schedule: the clients' parameters are stacked
along a leading axis and one vmapped gradient call serves all of them at each step.

- Unequal step counts: clients are sorted by step count (descending), so at step ``s``
  the clients still training are a prefix ``[:a_s]`` of the stack; finished clients are
  not computed at all (no padded steps).
- Unequal batch sizes (the last batch of an epoch, clients smaller than a batch): the
  batches are padded to the largest and the loss is a masked mean, which is the plain mean
  over the real examples.
- Clients with different training parameters (a strategy may set ``lr`` per client) are
  trained in separate groups.

Models vmap cannot handle fall back to the sequential loop (see :func:`vmap_supported`):
models with buffers (BatchNorm's running statistics are updated in place) and models with
random layers (Dropout would draw different masks than the sequential path).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from torch import nn
from torch.func import grad_and_value, vmap

from flowerbed.clients.data import FederatedData, flat_tensor
from flowerbed.clients.training import TrainParams, batch_plan, client_rng, loss_fn, sgd_update
from flowerbed.core.arrays import State, from_record
from flowerbed.core.params import Config
from flowerbed.core.records import first
from flowerbed.core.wire import Item

log = logging.getLogger(__name__)

RANDOM_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)


def vmap_supported(model: nn.Module) -> bool:
    """True if every client's step can be one slice of a vmapped call.

    Not supported (sequential fallback): buffers (BatchNorm running stats and other
    in-place state) and random layers (Dropout).
    """
    if any(True for _ in model.buffers()):
        return False
    return not any(isinstance(m, RANDOM_LAYERS) for m in model.modules())


_GRAD_FNS: dict[int, object] = {}


def _grad_fn(model: nn.Module) -> object:
    """vmap(grad_and_value(masked loss)) for ``model``, built once per process."""
    fn = _GRAD_FNS.get(id(model))
    if fn is None:
        def f(w: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
            return loss_fn(model, w, xb, yb, mask)

        fn = vmap(grad_and_value(f))
        _GRAD_FNS[id(model)] = fn
    return fn


@dataclass
class ClientJob:
    """One client's work: its start state, its data (row indices into the flat arrays)."""

    state: State
    rows: np.ndarray  # the client's rows in x_flat / y_flat
    params: TrainParams
    rng: np.random.Generator


def train_batched(model: nn.Module, jobs: Sequence[ClientJob], x_flat: torch.Tensor,
                  y_flat: torch.Tensor) -> list[tuple[State, dict[str, float]]]:
    """Train every job; returns (new state, metrics) per job, in order.

    ``x_flat``/``y_flat`` hold the data of all clients; a job's examples are
    ``x_flat[job.rows]``. Same results as ``local_train`` per client (float rounding aside).
    """
    out: list[tuple[State, dict[str, float]] | None] = [None] * len(jobs)
    groups: dict[TrainParams, list[int]] = {}
    for j, job in enumerate(jobs):
        groups.setdefault(job.params, []).append(j)
    for params, members in groups.items():
        for j, res in zip(members, _train_group(model, [jobs[j] for j in members], params,
                                                x_flat, y_flat), strict=True):
            out[j] = res
    return [r for r in out if r is not None]


def _stack_states(states: Sequence[State], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Stacked float32 parameters; one state shared by all clients is stacked cheaply."""
    first = states[0]
    if all(s is first for s in states):
        return {k: torch.from_numpy(np.asarray(first[k], np.float32)).unsqueeze(0)
                .repeat(len(states), *([1] * np.ndim(first[k]))) for k in names}
    return {k: torch.from_numpy(np.stack([np.asarray(s[k], np.float32) for s in states]))
            for k in names}


def _batch_indices(plans: Sequence[Sequence[np.ndarray]], rows: Sequence[np.ndarray],
                   b_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows into the flat data (clients, steps, b_max) and the mask of real (not padded)
    examples, for every client's batch plan. A client's full-size batches are gathered in
    one indexing operation; only its short last batch (if any) is handled on its own."""
    s_max = max((len(p) for p in plans), default=0)
    idx = np.zeros((len(plans), s_max, b_max), dtype=np.int64)
    mask = np.zeros((len(plans), s_max, b_max), dtype=np.float32)
    for r, (plan, local_rows) in enumerate(zip(plans, rows, strict=True)):
        full = len(plan) - (1 if plan and len(plan[-1]) != b_max else 0)
        if full and all(len(b) == b_max for b in plan[:full]):
            idx[r, :full] = local_rows[np.concatenate(plan[:full])].reshape(full, b_max)
            mask[r, :full] = 1.0
        else:
            full = 0
        for s in range(full, len(plan)):
            idx[r, s, :len(plan[s])] = local_rows[plan[s]]
            mask[r, s, :len(plan[s])] = 1.0
    return idx, mask


def _train_group(model: nn.Module, jobs: Sequence[ClientJob], params: TrainParams,
                 x_flat: torch.Tensor, y_flat: torch.Tensor
                 ) -> list[tuple[State, dict[str, float]]]:
    names = [k for k, _ in model.named_parameters()]
    plans = [batch_plan(len(job.rows), params, job.rng) for job in jobs]
    steps = np.array([len(p) for p in plans])
    order = np.argsort(-steps, kind="stable")  # longest first: active clients = a prefix
    c = len(jobs)
    w = _stack_states([jobs[i].state for i in order], names)
    anchor = {k: v.clone() for k, v in w.items()} if params.proximal_mu else None
    bufs: dict[str, torch.Tensor] = {}
    loss_sum = torch.zeros(c, dtype=torch.float64)
    grad_fn = _grad_fn(model)
    b_max = max((len(p[0]) for p in plans if p), default=1)
    sorted_plans = [plans[i] for i in order]
    sorted_rows = [jobs[i].rows for i in order]
    idx, mask = _batch_indices(sorted_plans, sorted_rows, b_max)
    for s in range(idx.shape[1]):
        a = int((steps > s).sum())
        it = torch.from_numpy(idx[:a, s])
        xb, yb = x_flat[it], y_flat[it]
        w_a = {k: v[:a] for k, v in w.items()}
        g, loss = grad_fn(w_a, xb, yb, torch.from_numpy(mask[:a, s]))  # type: ignore[operator]
        loss_sum[:a] += loss.detach().double()
        b_a = {k: v[:a] for k, v in bufs.items()}
        anc = {k: v[:a] for k, v in anchor.items()} if anchor is not None else None
        with torch.no_grad():
            new_w, new_b = sgd_update(w_a, g, b_a, anc, params, first=s == 0)
            for k in names:
                w[k][:a] = new_w[k]
            if s == 0:
                bufs = {k: v.clone() for k, v in new_b.items()}
            else:
                for k, v in new_b.items():
                    bufs[k][:a] = v
    results: list[tuple[State, dict[str, float]] | None] = [None] * c
    w_np = {k: v.numpy() for k, v in w.items()}
    for pos, i in enumerate(order):
        job = jobs[i]
        state = {k: np.asarray(v) for k, v in job.state.items()}
        state.update({k: w_np[k][pos] for k in names})
        n_steps = int(steps[i])
        results[i] = (state, {"train_loss": float(loss_sum[pos]) / n_steps if n_steps else 0.0,
                              "num-examples": float(len(job.rows)),
                              "num-steps": float(n_steps)})
    return [r for r in results if r is not None]


def set_worker_threads() -> None:
    """One torch thread per worker inside Ray, where several workers share the cores.

    torch would otherwise start one thread per core in every worker process and the
    workers would fight over the same cores (tiny per-client tensors gain nothing from
    intra-op threads anyway). Outside Ray (in-process engine) torch's default stays.
    """
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def flat_data(data: FederatedData) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """All clients' examples back to back as tensors (zero-copy), and each client's offset."""
    key = id(data)
    hit = _FLAT.get(key)
    if hit is None or hit[0] is not data:
        if data.x_flat is not None and data.y_flat is not None and data.offsets is not None:
            x, y, off = data.x_flat, data.y_flat, data.offsets
        else:
            x, y = np.concatenate(data.x), np.concatenate(data.y)
            off = np.concatenate([[0], np.cumsum([len(v) for v in data.y])]).astype(np.int64)
        tx = flat_tensor(x)  # float32; stored pixels/tokens: uint8, float per gathered batch
        ty = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        _FLAT.clear()  # one dataset per process at a time is the common case
        hit = _FLAT[key] = (data, tx, ty, off)
    return hit[1], hit[2], hit[3]


_FLAT: dict[int, tuple[FederatedData, torch.Tensor, torch.Tensor, np.ndarray]] = {}


def pretrain(kind: str, items: Sequence[Item], cfg: Config, data: FederatedData,
             model: nn.Module) -> dict[int, tuple[State, dict[str, float]]]:
    """Train all train items of a worker batch at once: position in ``items`` -> result.

    Items this cannot serve (undecodable content, a model vmap cannot handle, or an
    error inside the batched computation) are left out; the caller trains them
    sequentially, which also reports their errors client by client.
    """
    if kind != "train" or not cfg.vmap or not items or not vmap_supported(model):
        return {}
    decoded: dict[int, State] = {}
    params_of: dict[int, tuple[TrainParams, int] | None] = {}  # per config record (shared)
    positions: list[int] = []
    jobs: list[ClientJob] = []
    x_flat, y_flat, offsets = flat_data(data)
    for pos, (vid, content) in enumerate(items):
        try:
            arrays = first(content, ArrayRecord)
            if arrays is None:  # the sequential path reports it
                continue
            record = first(content, ConfigRecord)
            if id(record) not in params_of:
                config = dict(record or {})
                params_of[id(record)] = (  # relabelled tasks (Paris' router): sequential path
                    None if "target-label" in config else
                    (TrainParams.from_config(cfg, config), int(config.get("server-round", 0))))
            found = params_of[id(record)]
            if found is None:
                continue
            params, server_round = found
            if id(arrays) not in decoded:
                decoded[id(arrays)] = from_record(arrays)
            rows = np.arange(offsets[vid], offsets[vid + 1], dtype=np.int64)
            jobs.append(ClientJob(decoded[id(arrays)], rows, params,
                                  client_rng(cfg.seed, server_round, vid)))
            positions.append(pos)
        except Exception:  # the sequential path reports it
            continue
    if not jobs:
        return {}
    try:
        results = train_batched(model, jobs, x_flat, y_flat)
    except Exception as err:
        log.warning("batched training failed (%s: %s); training this batch sequentially",
                    type(err).__name__, err)
        return {}
    return dict(zip(positions, results, strict=True))
