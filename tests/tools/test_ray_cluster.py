"""Flower's simulation engine on a two-node Ray cluster (a head and a second node, both on
this machine, started with Ray's own ``ray.cluster_utils.Cluster``): the workers ran on both
nodes, and the run's metrics equal the in-process run's. Everything started is stopped.

How it reaches the cluster: Flower's Ray backend calls ``ray.init()`` without an address,
which joins the cluster named by ``RAY_ADDRESS`` in the SuperLink's environment (what
docs/deployment.md tells a user to do on a real cluster).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.tools.superlink import LocalSuperLink
from tests.conftest import ROOT
from tests.tools.test_cli import processes_mentioning

RUN: dict[str, Any] = {"num-clients": 8, "num-server-rounds": 2, "fraction-train": 1.0,
                       "local-epochs": 1, "wandb": False, "progress": False, "seed": 3}


@pytest.mark.slow
def test_a_two_node_ray_cluster_runs_the_workers_on_both_nodes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from ray._private import state
    from ray.cluster_utils import Cluster

    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # Ray's socket paths must be short
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        out = tmp_path / "out"
        with LocalSuperLink(tmp_path / "flwr-home", cwd=ROOT) as link:
            outcome = link.run_app(ROOT, {**RUN, "output-dir": str(out), "run-name": "rc",
                                          "tracking": True},
                                   ["num-supernodes=2 client-resources-num-cpus=1"],
                                   timeout=600)
        assert outcome.completed, outcome.output[-3000:]
        ray.init(address=cluster.address)
        try:
            nodes = {n["NodeID"] for n in ray.nodes()}
            used = {a["Address"]["NodeID"] for a in state.actors().values()
                    if a.get("ActorClassName") == "ClientAppActor"}
        finally:
            ray.shutdown()
        assert len(nodes) == 2 and used == nodes, (used, nodes)
        rows = [json.loads(ln) for ln in (out / "rc" / "metrics.jsonl").read_text()
                .splitlines()]
        local = run_experiment(parse_run_config({**RUN, "engine": "inprocess",
                                                 "tracking": False})).records
        for a, b in zip(rows, local, strict=True):
            assert a["test_loss"] == pytest.approx(b["test_loss"], abs=1e-5)
            assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-5)
        assert not processes_mentioning(str(tmp_path / "flwr-home"))
    finally:
        cluster.shutdown()
        assert not processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
