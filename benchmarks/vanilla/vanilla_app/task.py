"""Data, model and local training of the vanilla baseline.

The data and the model come from flowerbed's generators so that every system trains on
the same examples from the same initial weights; training is the usual PyTorch loop of
Flower's quickstart (optimizer, backward, step), over the same mini-batches.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from benchmarks.workloads import config
from flowerbed.clients.data import FederatedData, load_federation
from flowerbed.clients.models import build_model
from flowerbed.clients.training import TrainParams, batch_plan, client_rng
from flowerbed.run.config import RunConfig, parse_run_config


@functools.lru_cache(maxsize=2)
def load(workload: str) -> tuple[RunConfig, FederatedData]:
    cfg = parse_run_config(config(workload))
    return cfg, load_federation(cfg)


def model_for(workload: str) -> torch.nn.Module:
    cfg, data = load(workload)
    return build_model(cfg, data.input_shape, data.num_classes)


def train(model: torch.nn.Module, workload: str, partition: int, server_round: int
          ) -> dict[str, Any]:
    cfg, data = load(workload)
    x = torch.from_numpy(np.asarray(data.x[partition], np.float32))
    y = torch.from_numpy(data.y[partition])
    params = TrainParams.from_config(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=params.lr)
    losses = []
    for idx in batch_plan(len(y), params, client_rng(cfg.seed, server_round, partition)):
        t = torch.from_numpy(idx)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[t]), y[t])
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return {"train_loss": float(np.mean(losses)), "num-examples": len(y)}


@torch.no_grad()
def accuracy(model: torch.nn.Module, workload: str) -> float:
    _, data = load(workload)
    logits = model(torch.from_numpy(np.asarray(data.test_x, np.float32)))
    return float((logits.argmax(1) == torch.from_numpy(data.test_y)).float().mean())
