"""Local training and evaluation as plain functions: (state, data, params) -> (state, metrics).

The update is SGD with momentum and weight decay written out explicitly (same rule as
``torch.optim.SGD`` with dampening 0), plus FedProx's proximal term mu (x - x_global).
Writing the step once, functionally, lets the sequential path here and the batched
``vmap`` path in :mod:`flowerbed.clients.batched` share it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from flowerbed.clients.augment import augmented, draw
from flowerbed.core.arrays import State
from flowerbed.core.rng import client_stream

CPU = torch.device("cpu")
TRAIN_OVERRIDES = ("lr", "momentum", "weight-decay", "local-epochs", "local-steps",
                   "batch-size", "proximal-mu")


@dataclass(frozen=True)
class TrainParams:
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    local_epochs: int = 1
    local_steps: int = 0
    batch_size: int = 32
    proximal_mu: float = 0.0
    augment: str = "none"  # 'crop-flip': flowerbed.clients.augment, drawn from the client's rng

    @classmethod
    def from_config(cls, cfg: Any, overrides: Mapping[str, Any] | None = None) -> TrainParams:
        """From the run config, with per-message overrides (a strategy may set e.g. lr)."""
        p = cls(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                local_epochs=cfg.local_epochs, local_steps=cfg.local_steps,
                batch_size=cfg.batch_size, proximal_mu=cfg.proximal_mu,
                augment=cfg.augment)
        if overrides:
            changes = {k.replace("-", "_"): overrides[k] for k in TRAIN_OVERRIDES
                       if k in overrides}
            p = replace(p, **changes)
        return p

    def num_steps(self, n: int) -> int:
        if self.local_steps > 0:
            return self.local_steps
        return self.local_epochs * math.ceil(n / self.batch_size)


def client_rng(seed: int, server_round: int, client_id: int) -> np.random.Generator:
    """The RNG of one client in one round: same on every execution path."""
    return client_stream(seed, server_round, client_id)


def batch_plan(n: int, params: TrainParams, rng: np.random.Generator) -> list[np.ndarray]:
    """Mini-batch indices for one round: reshuffle every pass over the data.

    With ``local-steps`` the passes continue until that many steps are taken; with epochs
    the last batch of each pass may be smaller.
    """
    b = min(params.batch_size, n)
    batches: list[np.ndarray] = []
    steps = params.num_steps(n)
    while len(batches) < steps:
        perm = rng.permutation(n)
        starts = range(0, n, b)
        for s in starts:
            if len(batches) == steps:
                break
            if params.local_steps > 0 and s + b > n:  # fixed-size steps: wrap into next pass
                break
            batches.append(perm[s:s + b])
    return batches


def tensors(state: Mapping[str, np.ndarray], device: torch.device = CPU
            ) -> dict[str, torch.Tensor]:
    """Float32 copies of ``state`` in memory torch allocates (64-byte aligned; NumPy's
    buffers are only 16-byte aligned, and the CPU matrix products and convolutions run about 20%
    slower on a misaligned weight: 23-29 vs 22-23 ms a step for LEAF's FEMNIST CNN, batch 10)."""
    return {k: torch.tensor(np.asarray(v, dtype=np.float32), device=device)
            for k, v in state.items()}


Grads = dict[str, torch.Tensor]


def grad_and_loss(loss: Callable[..., torch.Tensor]
                  ) -> Callable[..., tuple[Grads, torch.Tensor]]:
    """``loss(w, *args)``'s gradient with respect to the tensors of the dict ``w``, and its
    value: ``(grads, loss)`` as ``torch.func.grad_and_value`` gives them, by plain autograd.
    The numbers are the same bit for bit for the MLP, the CNNs, LeNet-5 and the char-LSTM,
    vmapped or not (tested, and whole runs compared); ResNet-18-GN's differ in the last
    bits (train loss 3.908474 vs 3.908460 after a round). ``torch.func``'s gradient imports
    ``torch._dynamo`` on its first call (about 1 s, on the critical path of a worker's
    start-up) and is about 10% slower on a small vmapped model.

    ``loss`` may return one value, or one per client (a vmapped loss over stacked
    parameters): the gradient of their sum is each client's own, since a client's loss
    depends only on its own slice of ``w``. The gradient is taken even inside an outer
    ``torch.no_grad()``, as a function transform would; a parameter the loss does not use
    gets a zero gradient.
    """
    def fn(w: Mapping[str, torch.Tensor], *args: Any) -> tuple[Grads, torch.Tensor]:
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_() for k, v in w.items()}
            value = loss(leaves, *args)
            grads = torch.autograd.grad(value.sum(), list(leaves.values()),
                                        allow_unused=True, materialize_grads=True)
        return dict(zip(leaves, grads, strict=True)), value.detach()
    return fn


def loss_fn(model: nn.Module, params: dict[str, torch.Tensor], xb: torch.Tensor,
            yb: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over the batch (over ``mask`` when batches are padded).

    Written as log-softmax and a gather rather than ``cross_entropy``: the same numbers bit
    for bit, but under vmap ``cross_entropy``'s NLL step has no batching rule and runs
    through a decomposition whose first call imports sympy (about 0.6 s of every worker's
    start-up) and is slower on every call."""
    logits = functional_call(model, params, (xb,))
    ce = -logits.log_softmax(1).gather(1, yb.unsqueeze(1)).squeeze(1)
    if mask is None:
        return ce.mean()
    return (ce * mask).sum() / mask.sum().clamp_min(1.0)


def sgd_update(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
               bufs: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor] | None,
               p: TrainParams, first: bool, inplace: bool = False
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One SGD step: d = g + wd x + mu (x - x_anchor); buf = m buf + d; x -= lr buf.

    ``inplace`` writes x - lr buf into ``params``' own tensors in one fused operation, as
    ``torch.optim.SGD`` does: a large model then allocates, and page-faults in, no fresh
    copy of itself or of lr buf every step (the fused multiply-add may round the last bit
    differently from the two-step functional form that vmap uses)."""
    new_params, new_bufs = {}, {}
    for k, x in params.items():
        d = grads[k]
        if p.weight_decay:
            d = d + p.weight_decay * x
        if p.proximal_mu and anchor is not None:
            d = d + p.proximal_mu * (x - anchor[k])
        if p.momentum:
            d = d if first else p.momentum * bufs[k] + d
            new_bufs[k] = d
        new_params[k] = x.sub_(d, alpha=p.lr) if inplace else x - p.lr * d
    return new_params, new_bufs


def local_train(model: nn.Module, state: State, x: np.ndarray, y: np.ndarray,
                params: TrainParams, rng: np.random.Generator, device: torch.device = CPU
                ) -> tuple[State, dict[str, float]]:
    """Train ``state`` on (x, y); returns the new state and metrics (train_loss = mean loss)."""
    names = [k for k, _ in model.named_parameters()]
    full = tensors(state, device)
    w = {k: full[k] for k in names}
    anchor = {k: v.clone() for k, v in w.items()} if params.proximal_mu else None
    xt = torch.from_numpy(np.asarray(x, np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y)).to(device)
    # the loss at the step's start point comes with its gradient, from the same forward pass
    grad_fn = grad_and_loss(lambda pr, xb, yb: loss_fn(model, {**full, **pr}, xb, yb))
    bufs: dict[str, torch.Tensor] = {}
    losses = []
    for step, idx in enumerate(batch_plan(len(y), params, rng)):
        xb, yb = xt[idx], yt[idx]
        if params.augment != "none":  # the client's draws, after its batch plan
            xb = augmented(xb, params.augment, draw(rng, len(idx)))
        g, loss = grad_fn(w, xb, yb)
        losses.append(float(loss))
        with torch.no_grad():  # w and full are this call's own copies: update them in place
            w, bufs = sgd_update(w, g, bufs, anchor, params, first=step == 0, inplace=True)
    out = {k: v.cpu().numpy() for k, v in full.items()}
    out.update({k: v.detach().cpu().numpy() for k, v in w.items()})
    return out, {"train_loss": float(np.mean(losses)) if losses else 0.0,
                 "num-examples": float(len(y)), "num-steps": float(len(losses))}


@torch.no_grad()
def evaluate(model: nn.Module, state: State, x: np.ndarray, y: np.ndarray,
             batch: int = 4096, device: torch.device = CPU) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``state`` on (x, y)."""
    p = tensors(state, device)
    loss_sum, correct = 0.0, 0
    for s in range(0, len(y), batch):
        xb = torch.from_numpy(np.asarray(x[s:s + batch], np.float32)).to(device)
        yb = torch.from_numpy(np.asarray(y[s:s + batch])).to(device)
        logits = functional_call(model, p, (xb,))
        loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    n = max(len(y), 1)
    return {"loss": loss_sum / n, "accuracy": correct / n, "num-examples": float(len(y))}
