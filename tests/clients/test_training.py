"""Local training: reduces loss, is reproducible, and its SGD equals torch.optim.SGD."""

from __future__ import annotations

import numpy as np
import torch

from flowerbed.clients.data import load_federation
from flowerbed.clients.models import build_model
from flowerbed.clients.training import (
    TrainParams,
    batch_plan,
    client_rng,
    evaluate,
    local_train,
    tensors,
)
from flowerbed.core.arrays import module_state
from flowerbed.run.config import parse_run_config
from tests.conftest import tiny


def _setup() -> tuple:
    cfg = parse_run_config(tiny(num_clients=10, partitioner="iid"))
    data = load_federation(cfg)
    model = build_model(cfg, data.input_shape, data.num_classes)
    return cfg, data, model


def test_local_training_reduces_loss_on_a_tiny_partition() -> None:
    _, data, model = _setup()
    state = module_state(model)
    x, y = data.x[0], data.y[0]
    before = evaluate(model, state, x, y)["loss"]
    new, metrics = local_train(model, state, x, y, TrainParams(lr=0.3, local_epochs=10,
                                                               batch_size=16),
                               client_rng(0, 1, 0))
    after = evaluate(model, new, x, y)["loss"]
    assert after < 0.5 * before
    assert metrics["num-examples"] == len(y)
    assert metrics["num-steps"] == 10 * int(np.ceil(len(y) / 16))


def test_same_seed_same_result_different_round_different_batches() -> None:
    _, data, model = _setup()
    state = module_state(model)
    p = TrainParams(lr=0.1, local_steps=5, batch_size=8)
    a, _ = local_train(model, state, data.x[1], data.y[1], p, client_rng(0, 3, 1))
    b, _ = local_train(model, state, data.x[1], data.y[1], p, client_rng(0, 3, 1))
    c, _ = local_train(model, state, data.x[1], data.y[1], p, client_rng(0, 4, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_batch_plan_steps_and_epochs() -> None:
    rng = np.random.default_rng(0)
    plan = batch_plan(10, TrainParams(local_epochs=2, batch_size=4), rng)
    assert [len(b) for b in plan] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(plan[:3]).tolist()) == list(range(10))
    steps = batch_plan(10, TrainParams(local_steps=7, batch_size=4), rng)
    assert len(steps) == 7 and all(len(b) == 4 for b in steps)


def test_sgd_with_momentum_and_weight_decay_matches_torch_optim() -> None:
    _, data, model = _setup()
    state = module_state(model)
    x, y = data.x[2], data.y[2]
    p = TrainParams(lr=0.05, momentum=0.9, weight_decay=0.01, local_steps=4, batch_size=8)
    ours, _ = local_train(model, state, x, y, p, client_rng(0, 1, 2))

    ref = build_model(parse_run_config(tiny()), (1, 8, 8), 10)
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    for idx in batch_plan(len(y), p, client_rng(0, 1, 2)):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ref(torch.from_numpy(x[idx])),
                                                 torch.from_numpy(y[idx]))
        loss.backward()
        opt.step()
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(ours[k], v.numpy(), atol=1e-6)


def test_proximal_term_pulls_towards_the_anchor() -> None:
    """One full-batch step: grad of (mu/2)||w - w0||^2 is zero at w0, so the first step
    equals plain SGD; after two steps the proximal model is closer to the anchor."""
    _, data, model = _setup()
    state = module_state(model)
    x, y = data.x[3], data.y[3]
    n = len(y)
    one = TrainParams(lr=0.5, local_steps=1, batch_size=n)
    a, _ = local_train(model, state, x, y, one, client_rng(0, 1, 3))
    b, _ = local_train(model, state, x, y, TrainParams(lr=0.5, local_steps=1, batch_size=n,
                                                       proximal_mu=10.0), client_rng(0, 1, 3))
    assert all(np.allclose(a[k], b[k], atol=1e-7) for k in a)
    plain, _ = local_train(model, state, x, y, TrainParams(lr=0.5, local_steps=5, batch_size=n),
                           client_rng(0, 1, 3))
    prox, _ = local_train(model, state, x, y, TrainParams(lr=0.5, local_steps=5, batch_size=n,
                                                          proximal_mu=1.0), client_rng(0, 1, 3))

    def dist(s: dict) -> float:
        return float(sum(((s[k] - state[k]) ** 2).sum() for k in state))

    assert dist(prox) < dist(plain)


def test_training_copies_are_64_byte_aligned_whatever_numpy_gave() -> None:
    # NumPy hands out 16-byte aligned buffers; the CPU kernels run a misaligned weight ~20%
    # slower, so the copies local training updates must be torch's (64-byte aligned)
    raw = np.arange(1024 * 1025 + 1, dtype=np.float32)
    state = {"w": raw[1:].reshape(1024, 1025)[:, :1024], "b": raw[3:13]}  # misaligned views
    assert state["w"].ctypes.data % 64 != 0 and state["b"].ctypes.data % 64 != 0
    out = tensors(state)
    for k, t in out.items():
        assert t.data_ptr() % 64 == 0, k
        assert t.dtype == torch.float32
        np.testing.assert_array_equal(t.numpy(), state[k])
        assert not np.shares_memory(t.numpy(), raw)


def _stacked(model: torch.nn.Module, clients: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {k: v.detach().unsqueeze(0).repeat(clients, *[1] * v.dim())
            + 0.01 * torch.randn(clients, *v.shape, generator=gen)
            for k, v in model.named_parameters()}


def test_grad_and_loss_matches_cross_entropy_exactly_and_torch_func_closely() -> None:
    from torch.func import grad_and_value, vmap

    from flowerbed.clients.models import lenet5
    from flowerbed.clients.training import grad_and_loss, loss_fn

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 10))
    for model, shape in ((mlp, (1, 8, 8)), (lenet5((3, 32, 32), 10, None), (3, 32, 32))):
        w = _stacked(model, 6)
        xb, yb = torch.randn(6, 5, *shape), torch.randint(0, 10, (6, 5))
        mask = torch.ones(6, 5)
        mask[2, 3:] = 0.0  # a padded batch

        def f(w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, m: torch.Tensor,
              model: torch.nn.Module = model) -> torch.Tensor:
            return loss_fn(model, w, x, y, m)

        def f_ce(w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 m: torch.Tensor, model: torch.nn.Module = model) -> torch.Tensor:
            logits = torch.func.functional_call(model, w, (x,))
            ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            return (ce * m).sum() / m.sum().clamp_min(1.0)

        want_g, want_l = vmap(grad_and_value(f))(w, xb, yb, mask)
        with torch.no_grad():  # as rules call it: the gradient is taken all the same
            got_g, got_l = grad_and_loss(vmap(f))(w, xb, yb, mask)
        assert torch.equal(got_l, want_l) and not got_l.requires_grad
        # torch.func sums the backward in another order: equal up to the last bits
        for k in w:
            torch.testing.assert_close(got_g[k], want_g[k], rtol=1e-6, atol=1e-7)
        # and exactly what cross_entropy gave through the same route
        ce_g, ce_l = grad_and_loss(vmap(f_ce))(w, xb, yb, mask)
        assert torch.equal(got_l, ce_l)
        assert all(torch.equal(got_g[k], ce_g[k]) for k in w)
        one = ({k: v[2] for k, v in w.items()}, xb[2], yb[2], mask[2])  # one client alone
        want_g, want_l = grad_and_value(f)(*one)
        got_g, got_l = grad_and_loss(f)(*one)
        assert torch.equal(got_l, want_l)
        assert all(torch.equal(got_g[k], want_g[k]) for k in w)


def test_grad_and_loss_unused_parameter_gets_zeros() -> None:
    from flowerbed.clients.training import grad_and_loss

    w = {"a": torch.tensor([1.0, 2.0]), "unused": torch.ones(3)}
    g, loss = grad_and_loss(lambda w, x: (w["a"] * x).sum())(w, torch.tensor([3.0, 4.0]))
    assert float(loss) == 11.0
    assert g["a"].tolist() == [3.0, 4.0] and g["unused"].tolist() == [0.0, 0.0, 0.0]
    assert not w["a"].requires_grad  # the caller's tensors are left alone


def test_training_does_not_import_torch_dynamo_or_sympy() -> None:
    # torch.func's gradient imports torch._dynamo on its first call (~1 s of every worker's
    # start-up), and a vmapped cross_entropy sympy (~0.6 s); flowerbed's training (batched
    # and one client at a time) must need neither
    import subprocess
    import sys

    code = """
import sys
import numpy as np
from flowerbed.clients.batched import ClientJob, train_batched
from flowerbed.clients.training import TrainParams, client_rng, local_train
from flowerbed.core.arrays import module_state
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 3))
state = module_state(model)
x = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
y = np.arange(12) % 3
p = TrainParams(lr=0.1, batch_size=4)
local_train(model, state, x, y, p, client_rng(0, 1, 0))
jobs = [ClientJob(state, np.arange(6 * c, 6 * c + 6), p, client_rng(0, 1, c)) for c in (0, 1)]
train_batched(model, jobs, torch.from_numpy(x), torch.from_numpy(y))
print("torch._dynamo" in sys.modules, "sympy" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stdout + out.stderr


def test_the_loss_is_cross_entropy_bit_for_bit_plain_and_vmapped() -> None:
    """loss_fn's log-softmax + gather gives torch's cross_entropy exactly: values and
    gradients, one client and a vmapped batch of clients, with and without a mask."""
    from torch.func import vmap

    from flowerbed.clients.training import loss_fn

    model = torch.nn.Linear(6, 5)
    gen = torch.Generator().manual_seed(3)
    xb = torch.randn(4, 9, 6, generator=gen) * 3
    yb = torch.randint(0, 5, (4, 9), generator=gen)
    mask = (torch.rand(4, 9, generator=gen) > 0.3).float()
    stacked = {k: torch.stack([v.detach() + 0.1 * i for i in range(4)]).requires_grad_()
               for k, v in model.named_parameters()}

    def reference(p: dict, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None = None
                  ) -> torch.Tensor:  # loss_fn as it was, with torch's cross_entropy
        logits = torch.func.functional_call(model, p, (x,))
        ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        return ce.mean() if m is None else (ce * m).sum() / m.sum().clamp_min(1.0)

    for m in (None, mask):
        args = (stacked, xb, yb) if m is None else (stacked, xb, yb, m)
        ours = vmap(lambda *a: loss_fn(model, *a))(*args)
        ref = vmap(reference)(*args)
        assert torch.equal(ours, ref)
        g_ours = torch.autograd.grad(ours.sum(), list(stacked.values()))
        g_ref = torch.autograd.grad(ref.sum(), list(stacked.values()))
        assert all(torch.equal(a, b) for a, b in zip(g_ours, g_ref, strict=True))
    one = {k: v[1] for k, v in stacked.items()}
    assert torch.equal(loss_fn(model, one, xb[1], yb[1], mask[1]),
                       reference(one, xb[1], yb[1], mask[1]))
