"""The client-side algorithm interface: how a client trains locally and what it sends back.

A :class:`ClientRule` is written once for a *stack* of clients: every tensor it sees has a
leading client axis ``(C, ...)``, and the worker trains all clients of a batch together
under ``torch.func.vmap`` (or, in the sequential fallback, one gradient call per client,
with the same arithmetic). A rule is functional: it never touches a model object, only
dicts of tensors named like the model's parameters.

The worker calls, for each group of clients trained together:

1. ``opt = rule.begin(w, inputs, state, p)``: the optimiser state for the round, from the
   start models ``w`` (the downloaded model, stacked), the server's ``inputs`` (arrays the
   strategy put in the message's ``"rule-inputs"`` record, shared by all clients, no client
   axis: they broadcast) and the per-client ``state`` (what this client kept from its last
   round, or :meth:`ClientRule.initial_state` the first time). ``w`` is updated in place by
   the loop: clone what you keep.
2. ``w, opt = rule.step(w, grad_at, opt, p, s)`` for every local step ``s``: ``grad_at(v)``
   is the gradient of the current mini-batch loss at ``v`` (call it more than once for
   rules such as SAM that need a gradient at a perturbed point). Clients take different
   numbers of steps: at step ``s`` the rule sees only the clients still training (the
   first ``a`` rows of every tensor in ``w`` and ``opt``; inputs are shared).
3. ``rule.finish(w, opt, inputs, state, steps, p)`` -> :class:`RuleResult`: the model the
   client sends (``"arrays"``, as every strategy expects), optional extra arrays it sends
   (``"rule-outputs"``, e.g. SCAFFOLD's control-variate change), the per-client state it
   keeps (``state``), and per-client scalar metrics.

Two opt-in extensions (class flags; rules that leave them alone are called as above):

- ``wants_loss_at = True`` (zeroth-order rules): ``step`` is also given, as keywords,
  ``loss_at`` (``loss_at(v)`` is the current mini-batch loss of every active client at
  ``v``, shape ``(a,)``, a forward pass only) and ``clients`` (the active clients' ids,
  shape ``(a,)``, int64: what a rule needs to seed per-client randomness that the server
  can regenerate). A step that never calls ``grad_at`` reports as its training loss the
  mean of the losses ``loss_at`` returned (for SPSA's two points, f(x) + O(eps^2)).
- ``sends_model = False``: the reply's ``"arrays"`` record is empty; the client sends only
  its ``outputs`` (zeroth-order scalars, a gradient). The strategy must expect that (see
  ``CentralizedStrategy.replies_without_model``).

Per-client state is real client state: the platform keeps it between rounds wherever the
client is hosted (it survives checkpoint/resume and re-sharding) and never counts it as
traffic. What the client *sends* (``arrays`` and ``"rule-outputs"``) is what the ledger
counts, as are the server's ``"rule-inputs"``.

A strategy asks for a rule by name in its train config (``client-rule``, see
:mod:`flowerbed.clients.rules`); a rule's hyperparameters come from the same config record
(the constructor gets it). Models with buffers (BatchNorm) are trained only by the default
rule; the others refuse them with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from flowerbed.clients.training import TrainParams

Tensors = dict[str, torch.Tensor]
GradAt = Callable[[Tensors], Tensors]
LossAt = Callable[[Tensors], torch.Tensor]  # per-client mini-batch loss at a point, (a,)


@dataclass
class RuleResult:
    """What :meth:`ClientRule.finish` returns; every tensor has the leading client axis."""

    model: Tensors  # sent as the reply's "arrays"
    outputs: Tensors = field(default_factory=dict)  # sent as "rule-outputs" (counted)
    state: Tensors = field(default_factory=dict)  # kept by the client (never counted)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # (C,) each


def per_client_norm(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The l2 norm of each client's tensors taken together: shape (C,)."""
    squares = [v.reshape(v.shape[0], -1).pow(2).sum(1) for v in tensors.values()]
    return torch.stack(squares).sum(0).sqrt()


def per_client(scalars: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(C,) scalars shaped to broadcast against ``like`` (C, ...)."""
    return scalars.reshape(-1, *([1] * (like.dim() - 1)))


class ClientRule:
    """Base of client-side rules (see the module docstring). The default methods give plain
    local SGD with no optimiser state, no extra outputs and no per-client state."""

    name: ClassVar[str] = ""
    # True: the rule keeps per-client state; the platform stores it between rounds
    stateful: ClassVar[bool] = False
    # True: step() also gets loss_at= and clients= (see the module docstring)
    wants_loss_at: ClassVar[bool] = False
    # False: the reply's "arrays" is empty, the client sends its outputs only
    sends_model: ClassVar[bool] = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        """``config``: the message's train config (a rule reads its hyperparameters here)."""
        self.config = dict(config)

    def initial_state(self, w: Tensors) -> Tensors:
        """A client's state before its first round (stacked like ``w``)."""
        return {}

    def begin(self, w: Tensors, inputs: Tensors, state: Tensors, p: TrainParams) -> Tensors:
        return {}

    def step(self, w: Tensors, grad_at: GradAt, opt: Tensors, p: TrainParams, s: int
             ) -> tuple[Tensors, Tensors]:
        g = grad_at(w)
        return {k: w[k] - p.lr * g[k] for k in w}, opt

    def finish(self, w: Tensors, opt: Tensors, inputs: Tensors, state: Tensors,
               steps: torch.Tensor, p: TrainParams) -> RuleResult:
        return RuleResult(model=w)


__all__ = ["ClientRule", "GradAt", "LossAt", "RuleResult", "Tensors", "per_client",
           "per_client_norm"]
