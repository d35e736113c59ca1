"""Zeroth-order local SGD with shared randomness: the client of "Just One Byte (per
gradient)" (Zelikman, Huang, Liang, Haber, Goodman, 2023), whose estimate is MeZO's SPSA
(Malladi et al., "Fine-Tuning Language Models with Just Forward Passes", NeurIPS 2023).

At local step s of round t, client i draws z ~ N(0, I) from the id (seed, t, i, s)
(:func:`flowerbed.core.shared_randomness.direction`), evaluates its mini-batch loss at two
points only (forward passes, no gradient) and takes the step

    g_s = (f(y + eps z) - f(y - eps z)) / (2 eps),      y <- y - lr g_s z.

It sends the K scalars a_s = lr g_s (the step's coefficient along z, float32: 4 bytes a
step) and no model; the server, knowing the ids, rebuilds y_K = x - sum_s a_s z_s exactly.
Sending lr g_s rather than g_s lets the server rebuild without knowing the client's step
size. With ``zo-byte`` (the paper's "one byte per gradient") it sends instead the int8
code q_s of g_s (:func:`flowerbed.core.shared_randomness.byte_code`, the authors'
log-scale quantiser) and steps with the value the code stands for, a_s = lr byte_value(q_s),
so that the receivers (who know lr from the run config) rebuild exactly the same y_K.
Not done here: MeZO's in-place regeneration trick (memory is not the constraint at these
model sizes). The run seed comes in the train config (``zo-seed``), the radius in
``zo-eps``.
Momentum, weight decay and FedProx's mu are refused by the strategies (their terms
would need the model, not a direction, to be rebuilt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from flowerbed.clients.rules.base import (
    ClientRule,
    GradAt,
    LossAt,
    RuleResult,
    Tensors,
    per_client,
)
from flowerbed.core.shared_randomness import byte_code, byte_value, direction

if TYPE_CHECKING:
    from flowerbed.clients.training import TrainParams

STEP = "a."  # a."s": the coefficients a_s of step s, (C,) (with zo-byte: the codes q_s)
OUTPUT = "zo-steps"  # the reply's (K,) coefficients (float32) or codes (int8)


class ZerothOrderClient(ClientRule):
    name = "zo-sgd"
    wants_loss_at = True
    sends_model = False

    @property
    def eps(self) -> float:
        return float(self.config.get("zo-eps", 1e-3))

    @property
    def one_byte(self) -> bool:
        return bool(self.config.get("zo-byte", False))

    def step(self, w: Tensors, grad_at: GradAt, opt: Tensors, p: TrainParams, s: int, *,
             loss_at: LossAt | None = None, clients: torch.Tensor | None = None
             ) -> tuple[Tensors, Tensors]:
        assert loss_at is not None and clients is not None
        seed, rnd = int(self.config["zo-seed"]), int(self.config.get("server-round", 0))
        shapes = {k: tuple(v.shape[1:]) for k, v in w.items()}
        zs = [direction(seed, rnd, int(c), s, shapes) for c in clients.tolist()]
        z = {k: torch.from_numpy(np.stack([zc[k] for zc in zs]))
             for k in w}
        eps = self.eps
        plus = loss_at({k: v + eps * z[k] for k, v in w.items()})
        minus = loss_at({k: v - eps * z[k] for k, v in w.items()})
        g = (plus - minus) / (2.0 * eps)
        if self.one_byte:
            code = torch.from_numpy(byte_code(g.detach().cpu().numpy()))
            a = p.lr * torch.from_numpy(byte_value(code.numpy())).to(g.dtype)
            sent = code
        else:
            a = sent = p.lr * g
        return {k: v - per_client(a, v) * z[k] for k, v in w.items()}, {**opt, STEP + str(s): sent}

    def finish(self, w: Tensors, opt: Tensors, inputs: Tensors, state: Tensors,
               steps: torch.Tensor, p: TrainParams) -> RuleResult:
        n = sum(1 for k in opt if k.startswith(STEP))
        dtype = torch.int8 if self.one_byte else torch.float32
        coeffs = (torch.stack([opt[STEP + str(s)] for s in range(n)], 1).to(dtype) if n
                  else torch.zeros((len(steps), 0), dtype=dtype))
        return RuleResult(model={}, outputs={OUTPUT: coeffs})
