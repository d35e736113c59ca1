"""FedAMD's two client roles (Wu, Guo, Qu, He, Liu, Gao, "Anchor Sampling for Federated
Learning with Partial Client Participation", ICML 2023): anchors and miners.

- Anchor (:class:`AnchorClient`): one gradient of its loss at the downloaded x on a large
  batch (the strategy sets ``batch-size`` to ``anchor-batch-size``, by default the whole
  local dataset, and ``local-steps`` to 1 in the anchor's train config), its "bullseye"
  b_i = grad f_i(x; B). It sends b_i and no model.
- Miner (:class:`MinerClient`): K small-batch steps guided by the server's target
  g = mean_i b_i (the message's ``rule-inputs``) through a recursive (SARAH-type)
  direction: v_0 = g, and at step s >= 1 on mini-batch b_s, both gradients on that batch,

      v_s = grad f_i(y_s; b_s) - grad f_i(y_{s-1}; b_s) + v_{s-1},     y_{s+1} = y_s - lr v_s.

  It sends y_K, as FedAvg's clients do. Momentum, weight decay and FedProx's mu apply to
  v_s as in the platform's local SGD (the authors' runs use none of them).

Pinned to the authors' code (github.com/HarliWu/FedAMD, ``algo/fedamd.py``:
``fedamd_train_iter`` for the miner, ``compute_grad`` for the anchor). There, step 0 also
evaluates both gradients, at the same point, so v_0 = g exactly; here step 0 takes
v_0 = g without computing them (its mini-batch is drawn but unused), the same arithmetic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowerbed.clients.rules.base import ClientRule, GradAt, RuleResult, Tensors
from flowerbed.clients.rules.sgd import LocalSGD

if TYPE_CHECKING:
    import torch

    from flowerbed.clients.training import TrainParams

V = "v."  # the miner's direction v_{s-1}
PREV = "prev."  # the miner's previous point y_{s-1}
GRAD = "grad."  # the anchor's bullseye


class MinerClient(LocalSGD):
    name = "fedamd-miner"

    def begin(self, w: Tensors, inputs: Tensors, state: Tensors, p: TrainParams) -> Tensors:
        opt = super().begin(w, inputs, state, p)
        opt.update({V + k: inputs[k].expand_as(v).clone() if k in inputs else v.new_zeros(
            v.shape) for k, v in w.items()})
        opt.update({PREV + k: v.clone() for k, v in w.items()})
        return opt

    def step(self, w: Tensors, grad_at: GradAt, opt: Tensors, p: TrainParams, s: int
             ) -> tuple[Tensors, Tensors]:
        if s == 0:
            v = {k: opt[V + k] for k in w}
        else:
            g_now = grad_at(w)
            g_prev = grad_at({k: opt[PREV + k] for k in w})
            v = {k: g_now[k] - g_prev[k] + opt[V + k] for k in w}
        new_w, new_opt = super().step(w, lambda _: v, opt, p, s)
        new_opt.update({V + k: v[k] for k in w})
        new_opt.update({PREV + k: w[k].clone() for k in w})
        return new_w, new_opt


class AnchorClient(ClientRule):
    name = "fedamd-anchor"
    sends_model = False

    def step(self, w: Tensors, grad_at: GradAt, opt: Tensors, p: TrainParams, s: int
             ) -> tuple[Tensors, Tensors]:
        g = grad_at(w)  # the model stays: an anchor only measures its gradient
        return w, {**opt, **{GRAD + k: g[k] for k in w}}

    def finish(self, w: Tensors, opt: Tensors, inputs: Tensors, state: Tensors,
               steps: torch.Tensor, p: TrainParams) -> RuleResult:
        return RuleResult(model={}, outputs={k: opt[GRAD + k] if GRAD + k in opt else
                                             v.new_zeros(v.shape) for k, v in w.items()})
