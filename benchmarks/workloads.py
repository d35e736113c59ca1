"""The workloads of the performance issue, as flowerbed run configs.

W0: FedAvg, MLP 64-32-10 on 64 features, 100 clients, 5 local SGD steps of batch 64 on
    each client's own 64 examples (synthetic, equal sizes). The issue's W0 has 3 rounds;
    here 10, so that the steady state is the median of 9 rounds instead of 2 (the
    machine is shared and single rounds are noisy).
W1: FedAvg on Synthetic(1, 1) (60 features, 10 classes), 1,000 clients with ~100
    examples each (LEAF's lognormal sizes, so unequal step counts), logistic regression,
    one local epoch of batch 10, 10 rounds.
W2: D-SGD on W1's data, 1,000 nodes on a ring, 10 rounds.
W3: Teleportation, k = 32 active slots, n = 1,000 and n = 10,000, 10 rounds, on W1's data
    but with equal client sizes (80 training examples, 8 steps): a round's compute is then
    the same at both n, and the ratio of round times measures what the target is about,
    the platform's cost per round as n grows. With LEAF's lognormal sizes the vmapped
    round lasts as long as the largest of the 32 drawn clients (the round time and the
    drawn maximum of local steps correlate at 1.0), and which clients are drawn differs
    between n = 1,000 and n = 10,000: 1.29x / 1.25x (flwr run / in-process) in a
    2026-12-01 run; over 20 rounds of the same draws the largest client took a median of
    51 local steps at n = 10,000 and 38 at n = 1,000.
W4: FedAvg with LEAF's FEMNIST CNN (6.6 M parameters) on FEMNIST-schema data generated
    offline by the test fixtures' writer (``tests/hub_fixtures.py``: 28x28 grey images, 62
    classes, ``writer_id`` as the natural partition), 500 writers of 200-245 rows (10% held
    out for the server: ~200 training examples a client), 1 local epoch of batch 10, lr
    0.004 (LEAF). A round trains 20 of the 500 clients (``fraction-train = 0.04``; the
    references draw their own 20): on 2 CPU cores a client takes 1-3 s, so all 500 a
    round would take 10-25 minutes a round per system. 3 rounds (the median of 2 steady
    rounds). ``vmap-memory-mb = 1024``: 8 clients a vmapped call (the pure-vmap reference
    uses the same chunks). The data are written once to ``benchmarks/.work/``.
C10-1k: the memory of a CIFAR-10-sized run: 50,000 + 10,000 RGB 32x32 images in
    ``uoft-cs/cifar10``'s schema (the fixtures' writer, to ``benchmarks/.work/``), kept as
    uint8, 1,000 iid clients of 50 images, LeNet-5, per-channel standardisation, FedAvg,
    every client every round, 1 local epoch of batch 10, lr 0.01, 3 rounds, in-process.
M10k: FedAvg with 10,000 virtual clients (W1's setup) in one ``flwr run``: peak memory.
START: the default run of pyproject.toml through the ``flowerbed run .`` command (system g),
    for its start-up: command start to the end of round 1, and the total wall time. The
    digits data as kept by an earlier run of the config (``flowerbed check``, untimed).
START-COLD: the same, the first run of the config: nothing kept (an empty cache folder).
Every client trains each round (fraction-train = 1; W4: 20 of 500); the global model is
evaluated on the held-out test set at the end only, on every system alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COMMON: dict[str, Any] = {"tracking": False, "progress": False, "wandb": False}

W0: dict[str, Any] = {
    **COMMON, "strategy": "fedavg", "num-clients": 100, "num-server-rounds": 10,
    "dataset": "synthetic", "synthetic-dim": 64, "synthetic-classes": 10,
    "synthetic-samples": 80, "synthetic-iid-size": True, "test-fraction": 0.2,
    "partitioner": "natural-id", "model": "mlp", "hidden-sizes": "32",
    "local-steps": 5, "batch-size": 64, "lr": 0.1, "fraction-train": 1.0,
}

W1: dict[str, Any] = {
    **COMMON, "strategy": "fedavg", "num-clients": 1000, "num-server-rounds": 10,
    "dataset": "synthetic", "synthetic-alpha": 1.0, "synthetic-beta": 1.0,
    "synthetic-dim": 60, "synthetic-classes": 10, "synthetic-samples": 100,
    "test-fraction": 0.2, "partitioner": "natural-id", "model": "logreg",
    "local-epochs": 1, "local-steps": 0, "batch-size": 10, "lr": 0.05,
    "fraction-train": 1.0,
}

W2: dict[str, Any] = {**W1, "strategy": "dsgd", "topology": "ring"}

# client-side algorithms and compression at W1's size (benchmarks/client_side.py)
W1_SCAFFOLD: dict[str, Any] = {**W1, "strategy": "scaffold"}
W1_TOPK: dict[str, Any] = {**W1, "codec": "topk", "codec-ratio": 0.1, "error-feedback": True}

W3_1K: dict[str, Any] = {**W1, "strategy": "teleportation", "k-active": 32,
                         "topology": "ring", "synthetic-iid-size": True}
W3_10K: dict[str, Any] = {**W3_1K, "num-clients": 10000}

M10K: dict[str, Any] = {**W1, "num-clients": 10000, "num-server-rounds": 3}

W4_DATA = Path(__file__).resolve().parent / ".work" / "femnist-w4"
W4_WRITERS, W4_SIZES, W4_SEED = 500, (200, 245), 4
W4: dict[str, Any] = {
    **COMMON, "strategy": "fedavg", "num-clients": W4_WRITERS, "num-server-rounds": 3,
    "dataset": f"hf:{W4_DATA}", "feature-column": "image", "label-column": "character",
    "partitioner": "natural-id", "partition-by": "writer_id", "test-fraction": 0.1,
    "model": "femnist-cnn", "lr": 0.004, "batch-size": 10, "local-epochs": 1,
    "local-steps": 0, "fraction-train": 0.04, "vmap-memory-mb": 1024,
}

C10_DATA = Path(__file__).resolve().parent / ".work" / "cifar10-sized"
C10_1K: dict[str, Any] = {
    **COMMON, "strategy": "fedavg", "num-clients": 1000, "num-server-rounds": 3,
    "dataset": f"hf:{C10_DATA}", "feature-column": "img", "label-column": "label",
    "partitioner": "iid", "model": "lenet5", "normalize": "standardize", "lr": 0.01,
    "batch-size": 10, "local-epochs": 1, "local-steps": 0, "fraction-train": 1.0,
}


def prepare(name: str) -> None:
    """Write the data a workload reads from disk (W4's FEMNIST-schema folder, C10-1k's
    CIFAR-10-sized one) once, with the test fixtures' writers."""
    folder = {"W4": W4_DATA, "C10-1k": C10_DATA}.get(name)
    if folder is None or (folder / "data").is_dir():
        return
    import sys

    import numpy as np

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.hub_fixtures import write_cifar10, write_femnist

    tmp = folder.with_name(folder.name + ".tmp")
    if name == "W4":
        sizes = np.random.default_rng(W4_SEED).integers(W4_SIZES[0], W4_SIZES[1] + 1,
                                                        W4_WRITERS)
        write_femnist(tmp, seed=W4_SEED, sizes=sizes.tolist())
    else:
        write_cifar10(tmp, train_rows=50_000, test_rows=10_000)
    tmp.rename(folder)

def _pyproject_defaults() -> dict[str, Any]:
    """The default run: ``[tool.flwr.app.config]`` of the repository's pyproject.toml."""
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    return dict(data["tool"]["flwr"]["app"]["config"])


# START: `flowerbed run .` as `make run` runs it (the default config, W&B offline, every
# round evaluated): its start-up, the time from the command's start to the end of round 1
START: dict[str, Any] = {**_pyproject_defaults(), "eval-every": 1}

WORKLOADS: dict[str, dict[str, Any]] = {
    "W0": W0, "W1": W1, "W1-scaffold": W1_SCAFFOLD, "W1-topk": W1_TOPK, "W2": W2,
    "W3-n1000": W3_1K, "W3-n10000": W3_10K, "W4": W4, "C10-1k": C10_1K, "M10k": M10K,
    "START": START, "START-COLD": START,
}


def config(name: str, **changes: Any) -> dict[str, Any]:
    """The run config of workload ``name``, evaluated at the end only."""
    cfg = {**WORKLOADS[name], **changes}
    cfg.setdefault("eval-every", cfg["num-server-rounds"])
    return cfg
