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
random layers (Dropout would draw different masks than the sequential path). So do, on a
CPU, models larger than ``vmap-max-params`` (:func:`batching_pays`): vmap saves
per-operation overhead, which a large layer does not have, and its batched matrix products
run slower there than one client's.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from torch import nn
from torch.func import vmap

from flowerbed.clients.augment import augmented, draw, stack
from flowerbed.clients.compression import without_codec_state
from flowerbed.clients.data import FederatedData, flat_tensor
from flowerbed.clients.device import resolve
from flowerbed.clients.rules import INPUTS_KEY, rule_for
from flowerbed.clients.rules.base import ClientRule, RuleResult, Tensors
from flowerbed.clients.rules.sgd import LocalSGD
from flowerbed.clients.training import (
    CPU,
    TrainParams,
    batch_plan,
    client_rng,
    grad_and_loss,
    loss_fn,
)
from flowerbed.core.arrays import State, from_record
from flowerbed.core.params import Config
from flowerbed.core.records import first
from flowerbed.core.wire import Item, client_state_of

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


_GRAD_FNS: dict[tuple[int, bool], object] = {}


def _grad_fn(model: nn.Module, vectorised: bool = True) -> object:
    """Per-client (gradient, loss) of the masked mini-batch loss for a stack of clients,
    built once per process: the vmapped loss differentiated by autograd
    (:func:`~flowerbed.clients.training.grad_and_loss`), or (``vectorised=False``, the
    sequential fallback) one client's gradient called client by client and stacked."""
    fn = _GRAD_FNS.get((id(model), vectorised))
    if fn is None:
        def f(w: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
            return loss_fn(model, w, xb, yb, mask)

        if vectorised:
            fn = grad_and_loss(vmap(f))
        else:
            one = grad_and_loss(f)

            def fn(w: Tensors, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[Tensors, torch.Tensor]:
                outs = [one({k: v[c] for k, v in w.items()}, xb[c], yb[c], mask[c])
                        for c in range(len(xb))]
                return ({k: torch.stack([g[k] for g, _ in outs]) for k in w},
                        torch.stack([loss for _, loss in outs]))
        _GRAD_FNS[(id(model), vectorised)] = fn
    return fn


_LOSS_FNS: dict[tuple[int, bool], object] = {}


def _loss_fn(model: nn.Module, vectorised: bool = True) -> object:
    """Per-client masked mini-batch loss (no gradient) for a stack of clients: what a rule
    with ``wants_loss_at`` evaluates; vmapped, or client by client (``vectorised=False``)."""
    fn = _LOSS_FNS.get((id(model), vectorised))
    if fn is None:
        def f(w: Tensors, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor
              ) -> torch.Tensor:
            return loss_fn(model, w, xb, yb, mask)

        if vectorised:
            fn = vmap(f)
        else:
            def fn(w: Tensors, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor
                   ) -> torch.Tensor:
                return torch.stack([f({k: v[c] for k, v in w.items()}, xb[c], yb[c], mask[c])
                                    for c in range(len(xb))])
        _LOSS_FNS[(id(model), vectorised)] = fn
    return fn


@dataclass
class ClientJob:
    """One client's work: its start state, its data (row indices into the flat arrays), and
    for a client rule the server's inputs (shared) and the client's kept state (or None)."""

    state: State
    rows: np.ndarray  # the client's rows in x_flat / y_flat
    params: TrainParams
    rng: np.random.Generator
    rule: ClientRule | None = None  # None: the default local SGD
    inputs: State | None = None
    client_state: State | None = None
    vid: int = -1  # the virtual client's id (rules with wants_loss_at see it)


@dataclass
class TrainResult:
    """One client's training outcome: the model it sends, its metrics, and (client rules
    only) the extra arrays it sends and the state it keeps."""

    state: State
    metrics: dict[str, float]
    outputs: State | None = None
    client_state: State | None = None


# copies of one client's parameters alive while its chunk trains: the weights, their
# gradients, the optimiser's buffer, the rule's new weights and a stacking temporary
PARAM_COPIES = 5


def clients_per_call(model: nn.Module, budget_mb: float) -> int:
    """How many clients one vmapped call may train so that their stacked parameter copies
    (:data:`PARAM_COPIES`) fit ``budget_mb`` MiB; 0 (no limit) when ``budget_mb`` is 0.

    Activations are not counted: at the batch sizes of federated training they are small
    next to the parameters of the models that need chunking (LEAF's FEMNIST CNN: 6.6 M
    parameters, 25 MiB a copy, against a few MiB of activations for a batch of 10, so
    32 clients a call at the default 4,096 MiB).
    """
    if budget_mb <= 0:
        return 0
    per_client = PARAM_COPIES * 4 * sum(p.numel() for p in model.parameters())
    return max(1, int(budget_mb * 2**20 // max(per_client, 1)))


def train_batched(model: nn.Module, jobs: Sequence[ClientJob], x_flat: torch.Tensor,
                  y_flat: torch.Tensor, vectorised: bool = True, max_clients: int = 0
                  ) -> list[TrainResult]:
    """Train every job; returns one :class:`TrainResult` per job, in order.

    ``x_flat``/``y_flat`` hold the data of all clients; a job's examples are
    ``x_flat[job.rows]``. Same results as ``local_train`` per client (float rounding aside).
    Jobs are trained together when they share training parameters, rule and inputs, at
    most ``max_clients`` in one call (0: all; chunks of clients with similar sizes, so a
    chunk's steps are about equal). Training runs on ``x_flat``'s device; the results are
    NumPy arrays (host memory).
    """
    out: list[TrainResult | None] = [None] * len(jobs)
    groups: dict[tuple[TrainParams, int, int], list[int]] = {}
    for j, job in enumerate(jobs):
        groups.setdefault((job.params, id(job.rule), id(job.inputs)), []).append(j)
    for (params, _, _), members in groups.items():
        step = max_clients or len(members)
        if step < len(members):  # largest clients first: steps grow with examples
            members = sorted(members, key=lambda j: -len(jobs[j].rows))
        for start in range(0, len(members), step):
            part = members[start:start + step]
            for j, res in zip(part, _train_group(model, [jobs[j] for j in part], params,
                                                 x_flat, y_flat, vectorised), strict=True):
                out[j] = res
    return [r for r in out if r is not None]


def _stack_states(states: Sequence[State], names: Sequence[str], device: torch.device
                  ) -> dict[str, torch.Tensor]:
    """Stacked float32 parameters on ``device``; one state shared by all clients is stacked
    cheaply (copied to the device once, then repeated there)."""
    first = states[0]
    if all(s is first for s in states):
        return {k: torch.from_numpy(np.asarray(first[k], np.float32)).to(device).unsqueeze(0)
                .repeat(len(states), *([1] * np.ndim(first[k]))) for k in names}
    return {k: torch.from_numpy(np.stack([np.asarray(s[k], np.float32) for s in states]))
            .to(device) for k in names}


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


def _client_states(rule: ClientRule, jobs: Sequence[ClientJob], w: Tensors) -> Tensors:
    """The rule's per-client state, stacked in the order of ``jobs`` (= of ``w``): what a
    client kept, or the rule's initial state for a client in its first round. The kept
    rows of each state tensor are written in one indexing operation."""
    state = rule.initial_state(w)
    kept: dict[str, tuple[list[int], list[np.ndarray]]] = {k: ([], []) for k in state}
    for row, job in enumerate(jobs):
        for k, v in (job.client_state or {}).items():
            if k not in state:
                raise ValueError(f"client rule {rule.name!r}: kept state {k!r} is not one "
                                 f"of its state's names {sorted(state)}")
            kept[k][0].append(row)
            kept[k][1].append(np.asarray(v, np.float32))
    for k, (rows, values) in kept.items():
        if rows:
            state[k][torch.tensor(rows, dtype=torch.int64, device=state[k].device)] = (
                torch.from_numpy(np.stack(values)).to(state[k].device))
    return state


def _rows(flat: Any, it: torch.Tensor) -> torch.Tensor:
    """``flat[it]`` (rows of the flat data, ``it`` of shape (clients, batch)); for a plain
    tensor by ``index_select``, which copies the same rows about three times faster than
    advanced indexing on the CPU (a visible share of a small model's step)."""
    if isinstance(flat, torch.Tensor):
        return flat.index_select(0, it.reshape(-1)).view(*it.shape, *flat.shape[1:])
    return flat[it]


def _write(into: Tensors, new: Tensors, a: int, c: int) -> None:
    """``into[k][:a] = new[k]`` (a key seen for the first time gets zeros for the other
    rows); a value that is the slice itself (left unchanged by the rule) is not copied."""
    for k, v in new.items():
        if k not in into:
            into[k] = v.new_zeros((c, *v.shape[1:]))
        elif v.data_ptr() == into[k].data_ptr() and len(v) == a:
            continue
        into[k][:a] = v


def _train_group(model: nn.Module, jobs: Sequence[ClientJob], params: TrainParams,
                 x_flat: torch.Tensor, y_flat: torch.Tensor, vectorised: bool = True
                 ) -> list[TrainResult]:
    rule = jobs[0].rule or LocalSGD({})
    names = [k for k, _ in model.named_parameters()]
    plans = [batch_plan(len(job.rows), params, job.rng) for job in jobs]
    steps = np.array([len(p) for p in plans])
    order = np.argsort(-steps, kind="stable")  # longest first: active clients = a prefix
    c = len(jobs)
    sorted_jobs = [jobs[i] for i in order]
    dev = x_flat.device
    w = _stack_states([job.state for job in sorted_jobs], names, dev)
    inputs = {k: torch.from_numpy(np.asarray(v, np.float32)).to(dev)
              for k, v in (jobs[0].inputs or {}).items()}
    kept = _client_states(rule, sorted_jobs, w)
    opt = rule.begin(w, inputs, kept, params)
    loss_sum = torch.zeros(c, dtype=torch.float64, device=dev)
    grad_fn = _grad_fn(model, vectorised)
    loss_fn_ = _loss_fn(model, vectorised) if rule.wants_loss_at else None
    ids = torch.tensor([job.vid for job in sorted_jobs], dtype=torch.int64)
    b_max = max((len(p[0]) for p in plans if p), default=1)
    sorted_plans = [plans[i] for i in order]
    idx, mask = _batch_indices(sorted_plans, [job.rows for job in sorted_jobs], b_max)
    for s in range(idx.shape[1]):
        a = int((steps > s).sum())
        it = torch.from_numpy(idx[:a, s]).to(dev)
        xb, yb, mb = _rows(x_flat, it), _rows(y_flat, it), torch.from_numpy(mask[:a, s]).to(dev)
        if params.augment != "none":  # each client's draws from its own rng, as sequentially
            xb = augmented(xb, params.augment, stack(
                [draw(sorted_jobs[r].rng, len(sorted_plans[r][s])) for r in range(a)], b_max))
        first_loss: list[torch.Tensor] = []

        def grad_at(v: Tensors, xb: torch.Tensor = xb, yb: torch.Tensor = yb,
                    mb: torch.Tensor = mb, first_loss: list[torch.Tensor] = first_loss
                    ) -> Tensors:
            g, loss = grad_fn(v, xb, yb, mb)  # type: ignore[operator]
            if not first_loss:
                first_loss.append(loss.detach())  # the loss at the step's start point
            return g

        w_a = {k: v[:a] for k, v in w.items()}
        opt_a = {k: v[:a] for k, v in opt.items()}
        with torch.no_grad():
            if rule.wants_loss_at:  # zeroth-order rules: forward passes, client ids
                seen: list[torch.Tensor] = []

                def loss_at(v: Tensors, xb: torch.Tensor = xb, yb: torch.Tensor = yb,
                            mb: torch.Tensor = mb, seen: list[torch.Tensor] = seen
                            ) -> torch.Tensor:
                    loss = loss_fn_(v, xb, yb, mb)  # type: ignore[operator]
                    seen.append(loss.detach())
                    return loss

                new_w, new_opt = rule.step(w_a, grad_at, opt_a, params, s, loss_at=loss_at,
                                           clients=ids[:a])
                if not first_loss and seen:
                    first_loss.append(torch.stack(seen).mean(0))
            else:
                new_w, new_opt = rule.step(w_a, grad_at, opt_a, params, s)
            for k in names:
                w[k][:a] = new_w[k]
            _write(opt, new_opt, a, c)
        if first_loss:
            loss_sum[:a] += first_loss[0].double()
    with torch.no_grad():
        done = rule.finish(w, opt, inputs, kept,
                           torch.from_numpy(steps[order]).float().to(dev), params)
    return _results(jobs, order, steps, loss_sum, done, names, custom=jobs[0].rule is not None,
                    sends_model=rule.sends_model)


def _results(jobs: Sequence[ClientJob], order: np.ndarray, steps: np.ndarray,
             loss_sum: torch.Tensor, done: RuleResult, names: Sequence[str], custom: bool,
             sends_model: bool = True) -> list[TrainResult]:
    """Per-job results, back in the jobs' order, from the stacked (sorted) tensors."""
    model_np = {k: v.cpu().numpy() for k, v in done.model.items()}
    outputs_np = {k: v.cpu().numpy() for k, v in done.outputs.items()}
    state_np = {k: v.cpu().numpy() for k, v in done.state.items()}
    metrics_np = {k: v.double().cpu().numpy() for k, v in done.metrics.items()}
    loss_sum = loss_sum.cpu()
    results: list[TrainResult | None] = [None] * len(jobs)
    for pos, i in enumerate(order):
        job = jobs[i]
        state = {k: np.asarray(v) for k, v in job.state.items()} if sends_model else {}
        if sends_model:
            state.update({k: model_np[k][pos] for k in names})
        n_steps = int(steps[i])
        metrics = {"train_loss": float(loss_sum[pos]) / n_steps if n_steps else 0.0,
                   "num-examples": float(len(job.rows)), "num-steps": float(n_steps)}
        metrics.update({k: float(v[pos]) for k, v in metrics_np.items()})
        results[i] = TrainResult(
            state, metrics,
            {k: v[pos] for k, v in outputs_np.items()} if custom else None,
            {k: v[pos] for k, v in state_np.items()} if custom and state_np else None)
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


def flat_data(data: FederatedData, device: torch.device = CPU
              ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """All clients' examples back to back as tensors on ``device`` (zero-copy on the CPU;
    copied to a GPU once per process), and each client's offset."""
    key = (id(data), str(device))
    hit = _FLAT.get(key)
    if hit is None or hit[0] is not data:
        if data.x_flat is not None and data.y_flat is not None and data.offsets is not None:
            x, y, off = data.x_flat, data.y_flat, data.offsets
        else:
            x, y = np.concatenate(data.x), np.concatenate(data.y)
            off = np.concatenate([[0], np.cumsum([len(v) for v in data.y])]).astype(np.int64)
        # float32; stored pixels/tokens stay integers (on the device), float per batch
        tx = flat_tensor(x).to(device)
        ty = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device)
        _FLAT.clear()  # one dataset per process at a time is the common case
        hit = _FLAT[key] = (data, tx, ty, off)
    return hit[1], hit[2], hit[3]


_FLAT: dict[tuple[int, str], tuple[FederatedData, torch.Tensor, torch.Tensor, np.ndarray]] = {}


def make_job(vid: int, content: RecordDict, cfg: Config, offsets: np.ndarray,
             decoded: dict[int, State], params_of: dict[int, tuple[Any, ...] | None]
             ) -> ClientJob | None:
    """The training job of one train item; None for work the batched trainer does not do
    (relabelled tasks: Paris' router). Decoded records and per-config parameters are
    cached in ``decoded``/``params_of`` (records shared by many items are read once)."""
    arrays = first(content, ArrayRecord)  # the model ("arrays") comes first
    if arrays is None:
        raise ValueError("the message carries no ArrayRecord")
    record = first(content, ConfigRecord)
    if id(record) not in params_of:
        config = dict(record or {})
        params_of[id(record)] = (
            None if "target-label" in config else
            (TrainParams.from_config(cfg, config), int(config.get("server-round", 0)),
             rule_for(config)))
    found = params_of[id(record)]
    if found is None:
        return None
    params, server_round, rule = found
    inputs = kept = None
    if rule is not None:
        sent = content.get(INPUTS_KEY)
        if isinstance(sent, ArrayRecord):
            if id(sent) not in decoded:
                decoded[id(sent)] = from_record(sent)
            inputs = decoded[id(sent)]
        kept_record = client_state_of(content)
        kept = from_record(kept_record) if kept_record is not None else None
        kept = without_codec_state(kept)  # the codec's residual is not the rule's
    if id(arrays) not in decoded:
        decoded[id(arrays)] = from_record(arrays)
    rows = np.arange(offsets[vid], offsets[vid + 1], dtype=np.int64)
    return ClientJob(decoded[id(arrays)], rows, params, client_rng(cfg.seed, server_round, vid),
                     rule, inputs, kept, vid)


_TOLD: set[tuple[int, bool]] = set()  # (parameters, batched) already logged by this process


def batching_pays(model: nn.Module, device: torch.device, max_params: int) -> bool:
    """Whether vmap is the faster way to train ``model``'s clients on ``device``.

    Measured on a 2-core CPU (one thread, 8 clients of 100 examples, batch 10, ms per
    client, vmap / one at a time): an MLP of 51k parameters 3.2 / 6.8, of 204k 8.8 / 10.2,
    of 670k 32.1 / 20.9; LeNet-5 (62k, convolutions) 29.6 / 29.3; LEAF's FEMNIST CNN (6.6 M)
    613 / 332. Hence a CPU batches models of at most ``max_params`` parameters (0: any);
    an accelerator always batches. Either way the results are the same (to float rounding).
    """
    n = sum(p.numel() for p in model.parameters())
    pays = device.type != "cpu" or max_params <= 0 or n <= max_params
    if (n, pays) not in _TOLD:
        _TOLD.add((n, pays))
        log.info("training %s: %s", f"{n:,d} parameters on {device}",
                 "clients batched with vmap" if pays else
                 f"one client at a time (more than vmap-max-params = {max_params:,d} on a CPU)")
    return pays


def pretrain(kind: str, items: Sequence[Item], cfg: Config, data: FederatedData,
             model: nn.Module) -> dict[int, TrainResult]:
    """Train all train items of a worker batch at once: position in ``items`` -> result.

    Items this cannot serve (undecodable content, a model vmap cannot handle, or an
    error inside the batched computation) are left out; the caller trains them
    sequentially, which also reports their errors client by client.
    """
    if kind != "train" or not cfg.vmap or not items or not vmap_supported(model):
        return {}
    device = resolve(cfg.device)
    if not batching_pays(model, device, cfg.vmap_max_params):
        return {}
    decoded: dict[int, State] = {}
    params_of: dict[int, tuple[Any, ...] | None] = {}  # per config record (shared)
    positions: list[int] = []
    jobs: list[ClientJob] = []
    x_flat, y_flat, offsets = flat_data(data, device)
    for pos, (vid, content) in enumerate(items):
        try:
            job = make_job(vid, content, cfg, offsets, decoded, params_of)
        except Exception:  # the sequential path reports it
            continue
        if job is not None:
            jobs.append(job)
            positions.append(pos)
    if not jobs:
        return {}
    try:
        results = train_batched(model, jobs, x_flat, y_flat,
                                max_clients=clients_per_call(model, cfg.vmap_memory_mb))
    except Exception as err:
        log.warning("batched training failed (%s: %s); training this batch sequentially",
                    type(err).__name__, err)
        return {}
    return dict(zip(positions, results, strict=True))
