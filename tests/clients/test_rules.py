"""Client rules: hand-computed SCAFFOLD and SAM steps on the quadratic, and every rule gives
the same results batched (vmap) and in the sequential fallback."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from flowerbed.clients.batched import ClientJob, train_batched
from flowerbed.clients.quadratic import Quadratic
from flowerbed.clients.rules import BUILT_IN, rule_class, rule_for
from flowerbed.clients.rules.sam import SAMClient
from flowerbed.clients.rules.scaffold import C_I, ScaffoldClient
from flowerbed.clients.training import TrainParams, client_rng
from flowerbed.core.arrays import module_state
from flowerbed.core.errors import ConfigError
from flowerbed.core.wire import CLIENT_STATE_KEY, INPUTS_KEY, OUTPUTS_KEY


def one_point(a: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """One client holding the single point ``a``: every step's gradient is x - a."""
    return torch.from_numpy(a[None].astype(np.float32)), torch.zeros(1, dtype=torch.int64), \
        np.array([0])


def test_scaffold_steps_and_option_ii_control_variate_by_hand() -> None:
    """y <- y - lr (y - a - c_i + c) for K steps from x has the closed form
    y_K = a + c_i - c + (1 - lr)^K (x - a - c_i + c); then c_i+ = c_i - c + (x - y_K)/(K lr)
    and Delta c_i = c_i+ - c_i."""
    a, x0 = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -0.4])
    c, c_i = np.array([0.2, 0.0, -0.1]), np.array([-0.3, 0.4, 0.05])
    lr, k = 0.1, 7
    xt, yt, rows = one_point(a)
    p = TrainParams(lr=lr, local_steps=k, batch_size=1)
    job = ClientJob({"x": x0.astype(np.float32)}, rows, p, client_rng(0, 1, 0),
                    ScaffoldClient({}), {"x": c.astype(np.float32)},
                    {C_I + "x": c_i.astype(np.float32)})
    got = train_batched(Quadratic(3), [job], xt, yt)[0]
    y_k = a + c_i - c + (1 - lr) ** k * (x0 - a - c_i + c)
    c_plus = c_i - c + (x0 - y_k) / (k * lr)
    np.testing.assert_allclose(got.state["x"], y_k, atol=1e-5)
    np.testing.assert_allclose(got.client_state[C_I + "x"], c_plus, atol=1e-5)
    np.testing.assert_allclose(got.outputs["x"], c_plus - c_i, atol=1e-5)
    assert got.metrics["num-steps"] == k


def test_scaffold_first_round_starts_from_zero_control_variates() -> None:
    a, x0 = np.array([2.0, 0.0]), np.zeros(2)
    xt, yt, rows = one_point(a)
    p = TrainParams(lr=0.5, local_steps=1, batch_size=1)
    job = ClientJob({"x": x0.astype(np.float32)}, rows, p, client_rng(0, 1, 0),
                    ScaffoldClient({}), {"x": np.zeros(2, np.float32)}, None)
    got = train_batched(Quadratic(2), [job], xt, yt)[0]
    np.testing.assert_allclose(got.state["x"], [1.0, 0.0], atol=1e-6)  # plain SGD step
    np.testing.assert_allclose(got.client_state[C_I + "x"], [-2.0, 0.0], atol=1e-6)  # grad


def test_sam_step_by_hand() -> None:
    """g = y - a; the ascent point y + rho g/||g|| has gradient g + rho g/||g||."""
    a, y0, rho, lr = np.array([3.0, 4.0]), np.zeros(2), 0.5, 0.1
    xt, yt, rows = one_point(a)
    job = ClientJob({"x": y0.astype(np.float32)}, rows, TrainParams(lr=lr, local_steps=1,
                    batch_size=1), client_rng(0, 1, 0), SAMClient({"sam-rho": rho}))
    got = train_batched(Quadratic(2), [job], xt, yt)[0]
    g = y0 - a
    np.testing.assert_allclose(got.state["x"], y0 - lr * (g + rho * g / np.linalg.norm(g)),
                               atol=1e-6)


def _jobs(rule_name: str, sizes: list[int], seed: int = 0) -> tuple[Any, ...]:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 5), torch.nn.ReLU(),
                                torch.nn.Linear(5, 3))
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    x = torch.from_numpy(rng.normal(size=(n, 6)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, n).astype(np.int64))
    off = np.concatenate([[0], np.cumsum(sizes)])
    base = module_state(model)
    inputs = {k: (0.01 * rng.normal(size=v.shape)).astype(np.float32) for k, v in base.items()}
    rule = rule_class(rule_name)({"sam-rho": 0.1, "zo-seed": 7, "zo-eps": 1e-2,
                                  "server-round": 2})
    like = {k: torch.from_numpy(v[None]) for k, v in base.items()}
    kept = {k: (0.01 * np.random.default_rng(3).normal(size=v.shape[1:])).astype(np.float32)
            for k, v in rule.initial_state(like).items()}  # whatever the rule keeps

    def make() -> list[ClientJob]:
        return [ClientJob(base, np.arange(off[i], off[i + 1]),
                          TrainParams(lr=0.2, local_epochs=2, batch_size=4, momentum=0.0
                                      if rule_name == "scaffold" else 0.9, weight_decay=1e-3),
                          client_rng(5, 2, i), rule, inputs,
                          kept if rule.stateful and i % 2 else None, vid=i)
                for i in range(len(sizes))]
    return model, x, y, make


@pytest.mark.parametrize("rule_name", sorted(BUILT_IN))
def test_every_rule_equals_batched_and_sequential(rule_name: str) -> None:
    """Unequal client sizes (different step counts, padded last batches), clients with and
    without kept state: vmap and the client-by-client fallback agree to 1e-5 (zeroth-order
    scalars (f(y + eps z) - f(y - eps z)) / (2 eps) to 1e-4: the float32 rounding of two
    losses is divided by 2 eps = 2e-2)."""
    tol = 1e-4 if rule_name == "zo-sgd" else 1e-5
    model, x, y, make = _jobs(rule_name, [9, 4, 13, 1, 7])
    fast = train_batched(model, make(), x, y, vectorised=True)
    slow = train_batched(model, make(), x, y, vectorised=False)
    for f, s in zip(fast, slow, strict=True):
        for k in f.state:
            np.testing.assert_allclose(f.state[k], s.state[k], atol=tol, rtol=tol)
        for part in ("outputs", "client_state"):
            a, b = getattr(f, part) or {}, getattr(s, part) or {}
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_allclose(a[k], b[k], atol=tol, rtol=tol)
        assert f.metrics == pytest.approx(s.metrics, abs=tol)
    if rule_class(rule_name).sends_model:  # the clients really trained
        assert not np.allclose(fast[0].state["1.weight"], make()[0].state["1.weight"])
    else:  # e.g. FedAMD's anchors: their outputs carry the work
        assert fast[0].outputs


def test_the_default_rule_is_the_fast_path_and_unknown_rules_are_clear() -> None:
    assert rule_for({}) is None and rule_for({"client-rule": "sgd"}) is None
    assert isinstance(rule_for({"client-rule": "scaffold"}), ScaffoldClient)
    with pytest.raises(ConfigError, match="unknown client rule: built-in rules are "
                                          + ", ".join(sorted(BUILT_IN))):
        rule_for({"client-rule": "adam"})
    with pytest.raises(ConfigError,
                       match=re.escape("must be a subclass of flowerbed.clients.rules")):
        rule_for({"client-rule": "flowerbed.clients.quadratic:Quadratic"})


def test_worker_replies_carry_outputs_and_kept_state(tiny_config) -> None:
    """The worker sends the model, the rule's outputs and (for the platform) the kept state;
    a client that raises still gets an error reply of its own."""
    from flowerbed.clients import worker
    from flowerbed.clients.data import load_federation
    from flowerbed.core.arrays import to_record
    from flowerbed.run.config import parse_run_config

    cfg = parse_run_config(tiny_config(num_clients=4))
    model = worker.skeleton(cfg, load_federation(cfg))
    state = module_state(model)
    config = ConfigRecord({"server-round": 1, "client-rule": "scaffold"})
    content = RecordDict({"arrays": to_record(state), "config": config,
                          INPUTS_KEY: to_record({k: np.zeros_like(v) for k, v in state.items()})})
    bad = RecordDict({"arrays": ArrayRecord(), "config": config})
    replies = dict(worker.handle("train", [(0, content), (1, content), (2, bad)], cfg))
    for vid in (0, 1):
        assert {"arrays", "metrics", OUTPUTS_KEY, CLIENT_STATE_KEY} <= set(replies[vid].keys())
    assert "flowerbed.error" in replies[2]
