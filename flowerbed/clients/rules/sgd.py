"""The default client rule: SGD with momentum and weight decay, plus FedProx's mu.

The same arithmetic as :func:`flowerbed.clients.training.sgd_update` (it is that function),
so a strategy that names no rule trains exactly as before the interface existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowerbed.clients.rules.base import ClientRule, GradAt, Tensors
from flowerbed.clients.training import sgd_update

if TYPE_CHECKING:
    from flowerbed.clients.training import TrainParams

ANCHOR = "anchor."  # FedProx's x_global, per parameter
BUF = "buf."  # the momentum buffers


class LocalSGD(ClientRule):
    name = "sgd"

    def begin(self, w: Tensors, inputs: Tensors, state: Tensors, p: TrainParams) -> Tensors:
        return {ANCHOR + k: v.clone() for k, v in w.items()} if p.proximal_mu else {}

    def step(self, w: Tensors, grad_at: GradAt, opt: Tensors, p: TrainParams, s: int
             ) -> tuple[Tensors, Tensors]:
        anchor = {k: opt[ANCHOR + k] for k in w} if p.proximal_mu else None
        bufs = {k: opt[BUF + k] for k in w if BUF + k in opt}
        new_w, new_bufs = sgd_update(w, grad_at(w), bufs, anchor, p, first=s == 0)
        return new_w, {**opt, **{BUF + k: v for k, v in new_bufs.items()}}
