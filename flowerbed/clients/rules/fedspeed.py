"""FedSpeed's client (Sun, Shen, Huang, Ding, Tao, "FedSpeed: Larger Local Interval, Less
Communication Round, and Higher Generalization Accuracy", ICLR 2023, Algorithm 1).

Client i starts from the server's x with its prox-correction h_i (per-client state, zero
before its first round). Every local step uses the merged, perturbed gradient

    g1 = grad f_i(y; b),   g2 = grad f_i(y + rho g1 / ||g1||; b),   g = (1 - alpha) g1 + alpha g2

on one mini-batch b, and the prox-term plus its correction:

    y <- y - lr (g + lambda (y - x) + lambda h_i).

After the K steps the correction absorbs the round's drift, ``h_i <- h_i + (y_K - x)``, and
the client sends ``y_K + h_i`` (the new h_i): the model the server averages.

Symbols: ``fedspeed-lambda`` is the official code's ``lamb`` (the paper's 1/lambda) and
our h_i is the paper's -lambda * g-hat_i (its h-hat with the paper's scaling), so
``-g-hat_i + (1/lambda)(y - x)`` above is ``lambda (y - x + h_i)`` here.

Pinned against the official code (woodenchild95/FL-Simulator, ``client/fedspeed.py``,
``server/FedSpeed.py``, ``optimizer/ESAM.py``): the ascent step is SAM's normalised
``rho g1/||g1||`` and the step uses g2 alone (alpha = 1, the default here), with
``lamb (y - x + h_i)`` added to it and ``h_i += y_K - x`` after the round. Differences,
kept on purpose: (1) the official server adds the mean of *all* clients' h_i to the mean of
the participants' y_K (the simulator holds every h_i on the server); we follow the
paper's Algorithm 1, where the client sends y_K + h_i and the server averages the
participants' models: the same under full participation. (2) The official client clips the
step's gradient norm at 10; we do not. (3) Momentum, weight decay and FedProx's mu apply to
g as in the platform's local SGD (the official code has weight decay 1e-3 and no momentum).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowerbed.clients.rules.base import GradAt, RuleResult, Tensors, per_client, per_client_norm
from flowerbed.clients.rules.sgd import LocalSGD

if TYPE_CHECKING:
    import torch

    from flowerbed.clients.training import TrainParams

H_I = "h_i."  # the client's prox-correction, per parameter (its kept state)
X = "x."  # the downloaded model
EPS = 1e-12  # a zero gradient gives no ascent step


class FedSpeedClient(LocalSGD):
    name = "fedspeed"
    stateful = True

    @property
    def rho(self) -> float:
        return float(self.config.get("fedspeed-rho", 0.1))

    @property
    def alpha(self) -> float:
        return float(self.config.get("fedspeed-alpha", 1.0))

    @property
    def lam(self) -> float:
        return float(self.config.get("fedspeed-lambda", 0.1))

    def initial_state(self, w: Tensors) -> Tensors:
        return {H_I + k: v.new_zeros(v.shape) for k, v in w.items()}

    def begin(self, w: Tensors, inputs: Tensors, state: Tensors, p: TrainParams) -> Tensors:
        opt = super().begin(w, inputs, state, p)
        opt.update({X + k: v.clone() for k, v in w.items()})
        opt.update({H_I + k: state[H_I + k] for k in w})
        return opt

    def step(self, w: Tensors, grad_at: GradAt, opt: Tensors, p: TrainParams, s: int
             ) -> tuple[Tensors, Tensors]:
        g1 = grad_at(w)
        scale = self.rho / (per_client_norm(g1) + EPS)
        g2 = grad_at({k: v + per_client(scale, v) * g1[k] for k, v in w.items()})
        a, lam = self.alpha, self.lam
        g = {k: (1.0 - a) * g1[k] + a * g2[k] + lam * (v - opt[X + k] + opt[H_I + k])
             for k, v in w.items()}
        return super().step(w, lambda _: g, opt, p, s)

    def finish(self, w: Tensors, opt: Tensors, inputs: Tensors, state: Tensors,
               steps: torch.Tensor, p: TrainParams) -> RuleResult:
        new_h = {H_I + k: state[H_I + k] + (v - opt[X + k]) for k, v in w.items()}
        return RuleResult(model={k: v + new_h[H_I + k] for k, v in w.items()}, state=new_h)
