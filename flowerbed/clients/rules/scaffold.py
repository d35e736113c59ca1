"""SCAFFOLD's client (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", ICML 2020, Algorithm 1 with option II).

Client i starts from the server's x, with the server's control variate c (the message's
``rule-inputs``) and its own c_i (per-client state, zero before its first round), and takes
K local steps ``y <- y - lr (g_i(y) - c_i + c)``. Then (option II)

    c_i+ = c_i - c + (x - y) / (K lr),

it keeps c_i+ and sends y (the server computes Delta y = y - x) and Delta c_i = c_i+ - c_i.
The server half is :mod:`flowerbed.strategies.scaffold`.

Not in the paper, kept from the platform's local rule: weight decay and FedProx's mu add to
the corrected direction as they do to the plain gradient. With momentum the option II
estimate (x - y)/(K lr) is no longer the mean corrected gradient, so the strategy refuses
momentum. There is no official code by the authors; the rule follows the paper's pseudocode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowerbed.clients.rules.base import ClientRule, GradAt, RuleResult, Tensors, per_client

if TYPE_CHECKING:
    import torch

    from flowerbed.clients.training import TrainParams

C_I = "c_i."  # the client's control variate, per parameter (its kept state)
CORR = "corr."  # c - c_i, the correction added to every step's gradient
X = "x."  # the downloaded model


class ScaffoldClient(ClientRule):
    name = "scaffold"
    stateful = True

    def initial_state(self, w: Tensors) -> Tensors:
        return {C_I + k: v.new_zeros(v.shape) for k, v in w.items()}

    def begin(self, w: Tensors, inputs: Tensors, state: Tensors, p: TrainParams) -> Tensors:
        opt = {X + k: v.clone() for k, v in w.items()}
        opt.update({CORR + k: inputs[k] - state[C_I + k] for k in w})
        return opt

    def step(self, w: Tensors, grad_at: GradAt, opt: Tensors, p: TrainParams, s: int
             ) -> tuple[Tensors, Tensors]:
        g = grad_at(w)
        new = {}
        for k, v in w.items():
            d = g[k] + opt[CORR + k]
            if p.weight_decay:
                d = d + p.weight_decay * v
            if p.proximal_mu:
                d = d + p.proximal_mu * (v - opt[X + k])
            new[k] = v - p.lr * d
        return new, opt

    def finish(self, w: Tensors, opt: Tensors, inputs: Tensors, state: Tensors,
               steps: torch.Tensor, p: TrainParams) -> RuleResult:
        new_c, delta_c = {}, {}
        for k, v in w.items():
            k_lr = per_client(steps.clamp_min(1.0) * p.lr, v)
            c_plus = state[C_I + k] - inputs[k] + (opt[X + k] - v) / k_lr
            c_plus = c_plus.where(per_client(steps > 0, v), state[C_I + k])  # no step: keep
            new_c[C_I + k] = c_plus
            delta_c[k] = c_plus - state[C_I + k]
        return RuleResult(model=w, outputs=delta_c, state=new_c)

