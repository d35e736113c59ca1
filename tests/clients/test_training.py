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
