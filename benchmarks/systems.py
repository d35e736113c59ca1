"""One (system, workload) measurement, run in its own process by :mod:`benchmarks.run`.

Systems (the letters of the performance issue):
  a  vanilla Flower: ``flwr run benchmarks/vanilla``, one SuperNode per client
  b  flowerbed through ``flwr run`` (virtual clients packed onto 2 SuperNodes)
  c  flowerbed's in-process engine (``engine = 'inprocess'``)
  d  a tight sequential PyTorch loop doing the same arithmetic (same batches, same init)
  e  pfl-research (``pfl``) in-process simulation
  f  a pure ``torch.func.vmap`` loop over all clients (the hardware reference)
With ``fraction-train`` < 1 (W4) the references d and f draw their own seeded sample of
the same number of clients each round, and pfl-research its own cohort of that size.
  g  the ``flowerbed run .`` command on the default config (start-up and wall time)
Every system prints one JSON object: per-round wall times (training rounds only), the
time from process start to the end of round 1, and the final test accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.workloads import config

T0 = float(os.environ.get("BENCH_T0", time.time()))
# where (c) trains and (f) computes: "cpu" unless benchmarks/gpu.py asks for "cuda"
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
REPO = Path(__file__).resolve().parents[1]


def _result(round_ends: list[float], accuracy: float | None, t_start: float = T0
            ) -> dict[str, Any]:
    """round_ends: wall clock at the start of round 1, then at the end of every round."""
    times = list(np.diff(round_ends))
    return {"round_times": times, "round1_end_s": round_ends[1] - t_start if times else None,
            "final_accuracy": accuracy}


def _data_and_model(cfg_dict: dict[str, Any]) -> tuple[Any, Any, Any]:
    from flowerbed.clients.data import load_federation
    from flowerbed.clients.models import build_model
    from flowerbed.run.config import parse_run_config

    cfg = parse_run_config(cfg_dict)
    data = load_federation(cfg)
    return cfg, data, build_model(cfg, data.input_shape, data.num_classes)


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 1024
              ) -> float:
    correct = 0
    for s in range(0, len(y), batch):  # batches: a CNN's activations on all of x are GiBs
        logits = model(torch.from_numpy(np.asarray(x[s:s + batch], np.float32)))
        correct += int((logits.argmax(1) == torch.from_numpy(y[s:s + batch])).sum())
    return correct / max(len(y), 1)


def _per_round(cfg: Any) -> int:
    """Clients a round trains: as flowerbed's strategies sample (``fraction-train``)."""
    return min(cfg.num_clients, max(cfg.min_train_nodes,
                                    round(cfg.fraction_train * cfg.num_clients)))


def _sampled(cfg: Any, rnd: int) -> np.ndarray:
    """The clients round ``rnd`` trains in the references (d, f): all of them, or a
    seeded uniform sample of ``_per_round`` (their own draw, not flowerbed's)."""
    k = _per_round(cfg)
    if k == cfg.num_clients:
        return np.arange(k)
    return np.sort(np.random.default_rng([cfg.seed, 77, rnd]).choice(
        cfg.num_clients, size=k, replace=False))


# --- (c) flowerbed in-process ------------------------------------------------------------

def run_inprocess(workload: str, rounds: int | None) -> dict[str, Any]:
    from flowerbed.run.config import parse_run_config
    from flowerbed.run.runner import run_experiment

    changes = {"num-server-rounds": rounds} if rounds else {}
    cfg = parse_run_config({**config(workload, **changes), "engine": "inprocess",
                            "device": DEVICE})
    records = run_experiment(cfg).records
    return _result([r["wall_time"] for r in records], records[-1].get("test_accuracy"))


# --- (b) flowerbed via flwr run, (a) vanilla Flower ---------------------------------------

def _flwr(app: Path, run_config: dict[str, Any], federation: str) -> None:
    from flowerbed.tools.superlink import LocalSuperLink

    with tempfile.TemporaryDirectory() as home, LocalSuperLink(home, cwd=app) as link:
        outcome = link.run_app(app, run_config, [federation])
        if not outcome.completed:
            raise RuntimeError(f"{outcome.status} {outcome.details} {outcome.output[-3000:]}")


def run_flowerbed_flwr(workload: str, rounds: int | None) -> dict[str, Any]:
    """As ``flowerbed run`` runs it: the data are built once, here, and the ServerApp and
    the workers load them (:mod:`flowerbed.clients.data_cache`, through the SuperLink's
    environment) instead of each decoding the dataset again."""
    from flowerbed.clients.data import load_federation
    from flowerbed.clients.data_cache import ENV
    from flowerbed.run.config import parse_run_config

    changes = {"num-server-rounds": rounds} if rounds else {}
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as cache:
        cfg = {**config(workload, **changes), "tracking": True, "wandb": False,
               "output-dir": out, "run-name": "bench", "workers": 2}
        os.environ[ENV] = cache
        load_federation(parse_run_config(cfg))
        _flwr(REPO, cfg, "num-supernodes=2 client-resources-num-cpus=1")
        lines = (Path(out) / "bench" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(ln) for ln in lines if ln.strip()]
    return _result([r["wall_time"] for r in records], records[-1].get("test_accuracy"))


def run_vanilla(workload: str, rounds: int | None) -> dict[str, Any]:
    cfg = config(workload, **({"num-server-rounds": rounds} if rounds else {}))
    with tempfile.TemporaryDirectory() as out:
        log_path = Path(out) / "rounds.jsonl"
        _flwr(REPO / "benchmarks" / "vanilla",
              {"workload": workload, "num-server-rounds": cfg["num-server-rounds"],
               "log-path": str(log_path)},
              f"num-supernodes={cfg['num-clients']}")
        records = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.strip()]
    return _result([r["wall_time"] for r in records], records[-1]["accuracy"])


# --- (g) the `flowerbed run .` command -----------------------------------------------------

def run_cli(workload: str, rounds: int | None) -> dict[str, Any]:
    """``flowerbed run .`` in a fresh process, as a user runs it: its start-up (command
    start to the end of round 1) and wall time, on its own FLWR_HOME and output folder."""
    import subprocess

    from flowerbed.clients.data_cache import KEEP_ENV

    changes = {"num-server-rounds": rounds} if rounds else {}
    cfg = config(workload, **changes)
    flowerbed = str(Path(sys.executable).parent / "flowerbed")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {k: cfg[k] for k in ("num-server-rounds", "eval-every")}
        overrides.update({"output-dir": f"{tmp}/out", "run-name": "bench"})
        args = " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
        # built-in data are kept between runs (flowerbed.clients.data_cache): a folder of
        # this pass, empty for a config's first run (-COLD), else filled by a check first
        env = {**os.environ, "FLWR_HOME": f"{tmp}/flwr-home", KEEP_ENV: f"{tmp}/kept"}
        if not workload.endswith("-COLD"):
            subprocess.run([flowerbed, "check", ".", "-c", args], cwd=REPO, env=env,
                           capture_output=True, check=True)
        t_start = time.time()
        out = subprocess.run([flowerbed, "run", ".", "-c", args], cwd=REPO, env=env,
                             text=True, capture_output=True, check=False)
        t_end = time.time()
        if out.returncode != 0:
            raise RuntimeError(out.stdout[-3000:] + out.stderr[-3000:])
        lines = (Path(tmp) / "out" / "bench" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(ln) for ln in lines if ln.strip()]
    result = _result([r["wall_time"] for r in records], records[-1].get("test_accuracy"),
                     t_start)
    result["command_wall_s"] = t_end - t_start
    result["console_lines"] = len((out.stdout + out.stderr).splitlines())
    return result


# --- (d) tight sequential loop ------------------------------------------------------------

def run_loop(workload: str, rounds: int | None) -> dict[str, Any]:
    """Plain autograd + in-place fused SGD (``p -= lr g`` in one pass, as
    ``torch.optim.SGD``), client after client; flowerbed's batch plans."""
    from flowerbed.clients.training import TrainParams, batch_plan, client_rng

    cfg, data, model = _data_and_model(config(workload))
    params = TrainParams.from_config(cfg)
    global_w = [p.detach().clone() for p in model.parameters()]
    xs = [torch.from_numpy(np.asarray(x, np.float32)) for x in data.x]
    ys = [torch.from_numpy(y) for y in data.y]
    ends = [time.time()]
    for rnd in range(1, (rounds or cfg.num_server_rounds) + 1):
        acc = [torch.zeros_like(w, dtype=torch.float64) for w in global_w]
        chosen = _sampled(cfg, rnd)
        total = float(data.sizes[chosen].sum())
        for c in chosen.tolist():
            with torch.no_grad():
                for p, w in zip(model.parameters(), global_w, strict=True):
                    p.copy_(w)
            for idx in batch_plan(len(ys[c]), params, client_rng(cfg.seed, rnd, c)):
                t = torch.from_numpy(idx)
                loss = torch.nn.functional.cross_entropy(model(xs[c][t]), ys[c][t])
                model.zero_grad(set_to_none=True)
                loss.backward()
                with torch.no_grad():  # in place, fused, as torch.optim.SGD
                    for p in model.parameters():
                        p.sub_(p.grad, alpha=params.lr)
            with torch.no_grad():
                for a, p in zip(acc, model.parameters(), strict=True):
                    a += (len(ys[c]) / total) * p.double()
        global_w = [a.float() for a in acc]
        ends.append(time.time())
    with torch.no_grad():
        for p, w in zip(model.parameters(), global_w, strict=True):
            p.copy_(w)
    return _result(ends, _accuracy(model, data.test_x, data.test_y))


# --- (f) pure vmap ---------------------------------------------------------------------------

def run_vmap(workload: str, rounds: int | None) -> dict[str, Any]:
    """All clients' parameters stacked, one vmapped gradient per step; torch RNG batches.

    A round's clients are trained in chunks of ``clients_per_call(model,
    vmap-memory-mb)`` (flowerbed's own chunk size: the same memory budget), largest
    first; all of them in one chunk when the budget is 0 or large enough.
    """
    from torch.func import grad, vmap

    from flowerbed.clients.batched import clients_per_call
    from flowerbed.clients.training import loss_fn

    cfg, data, model = _data_and_model(config(workload))
    sizes_all = torch.from_numpy(data.sizes.astype(np.int64))
    order = torch.argsort(sizes_all, descending=True)  # active clients = a prefix
    sizes_all = sizes_all[order]
    n_max, c_all = int(sizes_all.max()), cfg.num_clients
    x = torch.zeros(c_all, n_max, *data.input_shape)
    y = torch.zeros(c_all, n_max, dtype=torch.int64)
    for r, i in enumerate(order.tolist()):
        x[r, :len(data.y[i])] = torch.from_numpy(np.asarray(data.x[i], np.float32))
        y[r, :len(data.y[i])] = torch.from_numpy(data.y[i])
    position = torch.empty_like(order)
    position[order] = torch.arange(c_all)  # client id -> row of x
    b = cfg.batch_size
    names = [k for k, _ in model.named_parameters()]
    per_call = clients_per_call(model, cfg.vmap_memory_mb) or c_all

    def loss(w: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
             m: torch.Tensor) -> torch.Tensor:
        # flowerbed's masked cross-entropy (log-softmax + gather: under vmap, torch's
        # cross_entropy runs a slower decomposition), so that only the loops differ
        return loss_fn(model, w, xb, yb, m)

    vgrad = vmap(grad(loss))
    dev = torch.device(DEVICE)
    x, y, sizes_all = x.to(dev), y.to(dev), sizes_all.to(dev)
    global_w = {k: v.detach().clone().to(dev) for k, v in model.named_parameters()}
    torch.manual_seed(cfg.seed)

    def train_chunk(xc: torch.Tensor, yc: torch.Tensor, sizes: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
        c = len(sizes)
        if cfg.local_steps:
            steps = torch.full((c,), cfg.local_steps, device=dev)
        else:
            steps = cfg.local_epochs * torch.ceil(sizes / b).long()
        rows = torch.arange(c, device=dev)[:, None]
        w = {k: v.unsqueeze(0).repeat(c, *([1] * v.dim())) for k, v in global_w.items()}
        pad = (torch.arange(n_max, device=dev)[None, :] >= sizes[:, None]).float() * 2.0
        perm = torch.argsort(torch.rand(c, n_max, device=dev) + pad, dim=1)  # real first
        for s in range(int(steps.max())):
            a = int((steps > s).sum())
            if cfg.local_steps:  # fresh permutation per step (batch = local data here)
                perm = torch.argsort(torch.rand(c, n_max, device=dev) + pad, dim=1)
                start = 0
            else:
                start = (s % math.ceil(n_max / b)) * b
            idx = perm[:a, start:start + b]
            m = ((start + torch.arange(idx.shape[1], device=dev))[None, :]
                 < sizes[:a, None]).float()
            g = vgrad({k: v[:a] for k, v in w.items()}, xc[rows[:a], idx],
                      yc[rows[:a], idx], m)
            with torch.no_grad():
                for k in names:
                    w[k][:a] -= cfg.lr * g[k]
        return w

    ends = [time.time()]
    for rnd in range(1, (rounds or cfg.num_server_rounds) + 1):
        chosen = torch.sort(position[torch.from_numpy(_sampled(cfg, rnd))]).values.to(dev)
        total = sizes_all[chosen].sum()
        new_w = {k: torch.zeros_like(v) for k, v in global_w.items()}
        for start in range(0, len(chosen), per_call):
            rows_c = chosen[start:start + per_call]  # rows of x, largest clients first
            if len(rows_c) == c_all:  # every client: views, no copy
                xc, yc, sizes = x, y, sizes_all
            else:
                xc, yc, sizes = x[rows_c], y[rows_c], sizes_all[rows_c]
            w = train_chunk(xc, yc, sizes)
            weights = (sizes / total).float()
            for k, v in w.items():
                new_w[k] += (weights.view(-1, *([1] * (v.dim() - 1))) * v).sum(0)
        global_w = new_w
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ends.append(time.time())
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(global_w[k].cpu())
    return _result(ends, _accuracy(model, data.test_x, data.test_y))


# --- (e) pfl-research ----------------------------------------------------------------------

def run_pfl(workload: str, rounds: int | None) -> dict[str, Any]:
    """FedAvg in pfl-research's in-process simulation, same data, model and init."""
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Metrics, Weighted
    from pfl.model.pytorch import PyTorchModel

    cfg, data, base = _data_and_model(config(workload))

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = base

        def forward(self, xb: torch.Tensor) -> torch.Tensor:
            return self.net(xb)

        def loss(self, xb: torch.Tensor, yb: torch.Tensor, eval: bool = False
                 ) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(self(xb), yb.long())

        @torch.no_grad()
        def metrics(self, xb: torch.Tensor, yb: torch.Tensor, eval: bool = False
                    ) -> dict[str, Any]:
            logits = self(xb)
            n = len(yb)
            return {"loss": Weighted(float(torch.nn.functional.cross_entropy(
                logits, yb.long(), reduction="sum")), n),
                "accuracy": Weighted(float((logits.argmax(1) == yb).sum()), n)}

    net = Net()
    users = {str(i): [torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(y)]
             for i, (x, y) in enumerate(zip(data.x, data.y, strict=True))}
    sampler = get_user_sampler("minimize_reuse", list(users))
    fed = FederatedDataset(lambda uid: Dataset(users[uid], user_id=uid), sampler)
    val = FederatedDataset(lambda uid: Dataset(users[uid], user_id=uid),
                           get_user_sampler("minimize_reuse", list(users)))
    model = PyTorchModel(net, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0))
    n_rounds = rounds or cfg.num_server_rounds
    ends: list[float] = []

    class Timer(TrainingProcessCallback):
        def on_train_begin(self, *, model: Any) -> Any:
            ends.append(time.time())
            return Metrics()

        def after_central_iteration(self, aggregate_metrics: Any, model: Any, *,
                                    central_iteration: int) -> Any:
            ends.append(time.time())
            return False, Metrics()

    epochs = cfg.local_epochs
    if cfg.local_steps:  # pfl's local_num_steps only cuts the first epoch short: use epochs
        per_epoch = {math.ceil(len(y) / cfg.batch_size) for y in data.y}
        if len(per_epoch) != 1 or cfg.local_steps % min(per_epoch):
            raise ValueError("pfl: local-steps must be whole epochs of equal-size clients")
        epochs = cfg.local_steps // per_epoch.pop()
    train = NNTrainHyperParams(local_num_epochs=epochs, local_num_steps=None,
                               local_learning_rate=cfg.lr, local_batch_size=cfg.batch_size)
    algo = NNAlgorithmParams(central_num_iterations=n_rounds, evaluation_frequency=10**6,
                             train_cohort_size=_per_round(cfg), val_cohort_size=0)
    backend = SimulatedBackend(fed, val, postprocessors=[WeightByDatapoints()])  # as FedAvg
    FederatedAveraging().run(algorithm_params=algo, backend=backend,
                             model=model, model_train_params=train,
                             model_eval_params=NNEvalHyperParams(local_batch_size=1024),
                             callbacks=[Timer()], send_metrics_to_platform=False)
    return _result(ends, _accuracy(net, data.test_x, data.test_y))


SYSTEMS = {"a": run_vanilla, "b": run_flowerbed_flwr, "c": run_inprocess, "d": run_loop,
           "e": run_pfl, "f": run_vmap, "g": run_cli}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=sorted(SYSTEMS))
    p.add_argument("workload")
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = SYSTEMS[args.system](args.workload, args.rounds or None)
    sys.stdout.write("BENCH_RESULT " + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
