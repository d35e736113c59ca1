"""Same seed, same config: every execution path gives the same metrics (1e-5).

Paths: the in-process engine (``run_experiment`` without Flower), the packed Ray path
(``flwr run``, 2 SuperNodes hosting all virtual clients) and the unpacked path (``flwr
run`` with one SuperNode per client). The in-process vmap == sequential test is
parametrized over the strategy registry, so a strategy added there is covered without
touching this file; the ``flwr run`` paths run for one strategy of each code path. All
``flwr run`` calls of this module share one local SuperLink.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.registry import STRATEGIES
from flowerbed.tools.superlink import LocalSuperLink

REPO = Path(__file__).resolve().parents[2]
NUM_CLIENTS = 6

# Tiny, but every code path of interest: client sampling, unequal partition sizes (so
# unequal step counts and a short last batch), momentum; small enough values for the
# keys of decentralized and expert strategies.
TINY: dict[str, Any] = {
    "num-clients": NUM_CLIENTS, "num-server-rounds": 2, "dataset": "digits",
    "partitioner": "dirichlet", "partitioner-alpha": 1.0, "hidden-sizes": "8",
    "local-epochs": 1, "batch-size": 16, "lr": 0.05, "momentum": 0.5,
    "fraction-train": 0.5, "k-active": 2, "eval-nodes": 3, "trainers": 3, "aggregators": 2,
    "experts": 2, "router-epochs": 2, "degree": 2, "progress": False, "wandb": False,
}
# what a strategy refuses in TINY (scaffold, zo-sgd, dzo-sgd: local momentum)
REFUSED: dict[str, dict[str, Any]] = {"scaffold": {"momentum": 0.0}, "zo-sgd": {"momentum": 0.0},
                                      "dzo-sgd": {"momentum": 0.0}}
COMPARED = ("test_accuracy", "test_loss", "train_loss")
# One SuperNode per client costs ~30-40 s of Flower/Ray start-up per run on 2 cores; to
# stay in the CI budget it runs for one strategy of each kind (shared global model,
# per-node models, k slots). The shared-model one is scaffold, a client rule with kept
# per-client state (c_i), every client training in both rounds so that round 2 uses the
# c_i each client's own SuperNode kept from round 1: FedAvg's path is a subset of it.
UNPACKED = ("scaffold", "dsgd", "teleportation")
UNPACKED_EXTRA: dict[str, dict[str, Any]] = {"scaffold": {"fraction-train": 1.0}}
# A packed `flwr run` costs ~20 s a strategy; it runs for one strategy of each code path
# through the Flower transport (in-process, every registered strategy runs above): shared
# global model (fedavg), per-round bookkeeping (fedau), experts (paris), per-node models
# (dsgd), sampled trainers (modest), k slots (teleportation), a client rule with kept state
# (scaffold), clients that send no model (zo-sgd), the asynchronous event grid (fedbuff)
# and compressed gossip (choco). The other strategies differ from one of these only in
# arithmetic that is the same code on both engines (fedavg-known, gossip, monna, ...).
PACKED = ("fedavg", "fedau", "paris", "dsgd", "modest", "teleportation", "scaffold",
          "zo-sgd", "fedbuff", "choco")
# Codecs ride along on three of the packed runs (no extra `flwr run`): scaffold compresses
# its replies with top-k and error feedback (the worker encodes its batch at once, the grid
# decodes them at once, the residual sits beside c_i in the client store, carried through
# the Flower transport); fedau with random-k and error feedback (encoded client by client,
# each client's draws from its own (seed, round, client) stream, whichever worker hosts
# it); choco gossips QSGD-compressed differences (the strategy's own codec)
PACKED_EXTRA: dict[str, dict[str, Any]] = {
    "scaffold": {"codec": "topk", "codec-ratio": 0.25, "error-feedback": True},
    "fedau": {"codec": "randk", "codec-ratio": 0.25, "error-feedback": True},
    "choco": {"codec": "qsgd", "qsgd-levels": 4}}
# asynchronous strategies run on the virtual clock
TIMED: dict[str, Any] = {"step-seconds": 1.0, "speed-spread": 0.5, "concurrency": 3,
                         "buffer-size": 2, "fix-interval-s": 20.0}
ASYNC = ("fedasync", "fedbuff", "fedfix")


def _extra(name: str) -> dict[str, Any]:
    return {**(TIMED if name in ASYNC else {}), **REFUSED.get(name, {})}


def _in_process(name: str, tmp: Path, **extra: Any) -> list[dict[str, Any]]:
    cfg = parse_run_config({**TINY, **_extra(name), "strategy": name, "engine": "inprocess",
                            "tracking": False, "output-dir": str(tmp), **extra})
    return run_experiment(cfg).records


def _flwr_run(link: LocalSuperLink, name: str, out: Path, supernodes: int,
              workers: int, **extra: Any) -> list[dict[str, Any]]:
    overrides = {**TINY, **_extra(name), "strategy": name, "tracking": True,
                 "output-dir": str(out), "workers": workers, "run-name": "run", **extra}
    outcome = link.run_app(REPO, overrides, [f"num-supernodes={supernodes}"], timeout=600)
    assert outcome.completed, f"{outcome.status} {outcome.details}\n{outcome.output[-3000:]}"
    lines = (out / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(ln) for ln in lines if ln.strip()]


def _assert_same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [r["round"] for r in a] == [r["round"] for r in b]
    assert len(a) == TINY["num-server-rounds"] + 1
    for ra, rb in zip(a, b, strict=True):
        for key in COMPARED:
            va, vb = ra.get(key), rb.get(key)
            assert (va is None) == (vb is None), (key, ra["round"], va, vb)
            if va is not None:
                assert va == pytest.approx(vb, abs=1e-5), (key, ra["round"], va, vb)
        assert ra.get("participants") == rb.get("participants")
    # the run did real work: the model changed and was evaluated
    accs = [r["test_accuracy"] for r in a if r.get("test_accuracy") is not None]
    losses = [r["test_loss"] for r in a if r.get("test_loss") is not None]
    assert accs and len(set(np.round(losses, 8))) > 1


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSuperLink]:
    with LocalSuperLink(tmp_path_factory.mktemp("flwr_home"), cwd=REPO) as running:
        yield running


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_vmap_equals_sequential(name: str, tmp_path: Path) -> None:
    _assert_same(_in_process(name, tmp_path, vmap=True),
                 _in_process(name, tmp_path, vmap=False))


@pytest.mark.slow
@pytest.mark.parametrize("name", PACKED)
def test_packed_flwr_run_equals_in_process(name: str, link: LocalSuperLink,
                                           tmp_path: Path) -> None:
    extra = PACKED_EXTRA.get(name, {})
    packed = _flwr_run(link, name, tmp_path, supernodes=2, workers=2, **extra)
    local = _in_process(name, tmp_path, **extra)
    _assert_same(packed, local)
    if extra and name != "choco":  # encoded uplink (k values + k indices; Delta c as is)
        up, down = packed[-1]["cum_bytes_up"], packed[-1]["cum_bytes_down"]
        assert up == local[-1]["cum_bytes_up"] and 0 < up < 0.8 * down  # (plain: up = down)
    if name == "choco":  # each edge of the ring carried one encoded q per round
        assert packed[-1]["cum_bytes_p2p"] == local[-1]["cum_bytes_p2p"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(STRATEGIES) & set(UNPACKED)))
def test_unpacked_flwr_run_equals_in_process(name: str, link: LocalSuperLink,
                                             tmp_path: Path) -> None:
    extra = UNPACKED_EXTRA.get(name, {})
    unpacked = _flwr_run(link, name, tmp_path, supernodes=NUM_CLIENTS, workers=0, **extra)
    _assert_same(unpacked, _in_process(name, tmp_path, **extra))


# attacked runs through the Flower transport: a federated defence (Flower's Krum, adopted,
# saying whom it kept) against Sybils (label flipping on the workers, a directive through
# the packed messages, and crafted updates in the grid), and a decentralized one (Bristle,
# scoring models on the server's test data) against ALIE crafted per neighbour from
# top-k-compressed updates (the crafted model encoded like any other, error feedback kept)
ATTACKED: dict[str, dict[str, Any]] = {
    "flwr.serverapp.strategy:Krum": {"attack": "sybil", "byzantine-count": 2,
                                     "strategy-params": "num-malicious-nodes = 2",
                                     "fraction-train": 1.0},
    "bristle": {"attack": "alie", "byzantine-count": 2, "attack-per-neighbour": True,
                "codec": "topk", "codec-ratio": 0.25, "error-feedback": True},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ATTACKED))
def test_packed_flwr_run_equals_in_process_under_attack(name: str, link: LocalSuperLink,
                                                        tmp_path: Path) -> None:
    attack = ATTACKED[name]
    packed = _flwr_run(link, name, tmp_path, supernodes=2, workers=2, **attack)
    local = _in_process(name, tmp_path, **attack)
    _assert_same(packed, local)
    for key in ("malicious_updates", "malicious_accepted", "honest_accuracy"):
        got = [r.get(key) for r in packed]
        assert got == pytest.approx([r.get(key) for r in local], abs=1e-5), key
        assert all(v is not None for v in got[1:]), key
    assert [r["malicious_updates"] for r in packed] == [0, 2, 2]


def test_the_packed_set_names_registered_strategies() -> None:
    assert set(PACKED) <= set(STRATEGIES) and set(UNPACKED) <= set(PACKED)
