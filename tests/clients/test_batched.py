"""Batched (vmap) local training equals the sequential loop client by client."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flowerbed.clients import batched
from flowerbed.clients.batched import (
    ClientJob,
    clients_per_call,
    train_batched,
    vmap_supported,
)
from flowerbed.clients.training import TrainParams, client_rng, local_train
from flowerbed.core.arrays import module_state


def _clients(sizes: list[int], dim: int = 6, classes: int = 3, seed: int = 0
             ) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    rows = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(sizes))]
    return torch.from_numpy(x), torch.from_numpy(y), rows


def _mlp(dim: int = 6, classes: int = 3) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, 5), nn.ReLU(), nn.Linear(5, classes))


def _check(model: nn.Module, sizes: list[int], params: list[TrainParams],
           shared_state: bool = True) -> None:
    x, y, rows = _clients(sizes)
    base = module_state(model)
    states = [base if shared_state else
              {k: v + 0.1 * i for k, v in base.items()} for i in range(len(sizes))]
    jobs = [ClientJob(states[i], rows[i], params[i], client_rng(7, 3, i))
            for i in range(len(sizes))]
    got = train_batched(model, jobs, x, y)
    assert len(got) == len(sizes)
    for i, result in enumerate(got):
        state, metrics = result.state, result.metrics
        want_state, want_metrics = local_train(model, states[i], x[rows[i]].numpy(),
                                               y[rows[i]].numpy(), params[i],
                                               client_rng(7, 3, i))
        assert state.keys() == want_state.keys()
        for k in want_state:
            np.testing.assert_allclose(state[k], want_state[k], atol=1e-5, rtol=1e-5)
        assert metrics["num-steps"] == want_metrics["num-steps"]
        assert metrics["num-examples"] == want_metrics["num-examples"]
        assert metrics["train_loss"] == pytest.approx(want_metrics["train_loss"], abs=1e-5)
    # the clients really trained: states moved away from the start
    assert not np.allclose(got[0].state["1.weight"], states[0]["1.weight"])


def test_equal_sizes_fixed_steps() -> None:
    p = TrainParams(lr=0.1, local_steps=5, batch_size=4)
    _check(_mlp(), [8] * 6, [p] * 6)


def test_unequal_sizes_epochs_pad_and_mask() -> None:
    # 2 epochs, batch 4: step counts 2..10, last batches of 1-3 examples, a client < batch
    p = TrainParams(lr=0.05, local_epochs=2, batch_size=4)
    _check(_mlp(), [3, 4, 9, 17, 6, 13], [p] * 6)


def test_momentum_weight_decay_proximal_and_own_states() -> None:
    p = TrainParams(lr=0.05, momentum=0.9, weight_decay=0.01, proximal_mu=0.5,
                    local_epochs=1, batch_size=3)
    _check(_mlp(), [5, 11, 7, 2], [p] * 4, shared_state=False)


def test_per_client_learning_rates_are_grouped() -> None:
    ps = [TrainParams(lr=lr, local_steps=3, batch_size=4) for lr in (0.1, 0.01, 0.1, 0.3)]
    _check(_mlp(), [8, 8, 5, 9], ps)


def test_fallback_models_are_named() -> None:
    assert vmap_supported(_mlp())
    assert not vmap_supported(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    assert not vmap_supported(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)))


def test_conv_model_matches_sequential() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Unflatten(1, (1, 2, 3)), nn.Conv2d(1, 2, 2, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 1 * 2, 3))
    p = TrainParams(lr=0.1, momentum=0.9, local_epochs=1, batch_size=4)
    _check(model, [5, 9, 4], [p] * 3)


def test_chunks_of_clients_train_as_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """max_clients = 3 of 7 unequal clients (momentum): three calls of <= 3 clients, the
    largest clients together, and the same models and metrics as one call for all."""
    x, y, rows = _clients([5, 17, 9, 30, 2, 12, 21])
    model, p = _mlp(), TrainParams(lr=0.1, local_epochs=1, batch_size=4, momentum=0.5)

    def jobs() -> list[ClientJob]:
        base = module_state(model)
        return [ClientJob({k: v + 0.01 * i for k, v in base.items()}, r, p,
                          client_rng(7, 3, i)) for i, r in enumerate(rows)]

    calls: list[list[int]] = []
    real = batched._train_group

    def spy(model: nn.Module, group: list[ClientJob], *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(sorted(len(j.rows) for j in group))
        return real(model, group, *args, **kwargs)

    whole = train_batched(model, jobs(), x, y)
    monkeypatch.setattr(batched, "_train_group", spy)
    chunked = train_batched(model, jobs(), x, y, max_clients=3)
    assert calls == [[17, 21, 30], [5, 9, 12], [2]]
    for a, b in zip(whole, chunked, strict=True):
        assert a.metrics == pytest.approx(b.metrics, abs=1e-6)
        for k in a.state:
            np.testing.assert_allclose(a.state[k], b.state[k], atol=1e-6)


def test_clients_per_call_fits_the_budget() -> None:
    model = _mlp()  # 6*5 + 5 + 5*3 + 3 = 53 parameters: 5 copies of 212 bytes a client
    assert clients_per_call(model, 0) == 0
    assert clients_per_call(model, 1) == 2**20 // (5 * 4 * 53)
    assert clients_per_call(nn.Linear(2**20, 1), 1) == 1  # a client over budget still trains


def test_batching_pays_for_small_models_or_accelerators_only() -> None:
    model = _mlp()  # 53 parameters
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert batched.batching_pays(model, cpu, 53)
    assert not batched.batching_pays(model, cpu, 52)
    assert batched.batching_pays(model, cpu, 0)  # 0: no limit
    assert batched.batching_pays(model, gpu, 52)  # never touches CUDA: a device name only


def test_a_model_over_vmap_max_params_trains_one_client_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same run with the digits MLP batched and (vmap-max-params below its size) one
    client at a time: no vmapped call in the second, the same metrics in both."""
    from flowerbed.run.config import parse_run_config
    from flowerbed.run.runner import run_experiment
    from tests.conftest import tiny

    calls: list[int] = []
    real = batched._train_group

    def spy(model: nn.Module, group: list[ClientJob], *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(group))
        return real(model, group, *args, **kwargs)

    monkeypatch.setattr(batched, "_train_group", spy)
    rows = {}
    for limit in (0, 10):
        calls.clear()
        res = run_experiment(parse_run_config(tiny(vmap_max_params=limit, momentum=0.5)))
        rows[limit] = res.records
        assert (max(calls) if calls else 0) == (10 if limit == 0 else 0)
    for a, b in zip(rows[0], rows[10], strict=True):
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-5)
        assert a["test_loss"] == pytest.approx(b["test_loss"], abs=1e-5)
