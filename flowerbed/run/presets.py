"""Presets: one name for a benchmark's dataset, partitioning, model and hyperparameters.

``preset = "femnist"`` fills in what a published setup fixes; every key the user sets
to something other than its default still wins (``dataset = "hf:<local folder>"`` points
a preset at an offline copy, ``num-server-rounds = 5`` shortens it). A key left at its
default takes the preset's value: plain ``flwr run`` passes every key of the pyproject,
at its default, so "set" cannot mean "present" there.

- ``femnist``: LEAF's FedAvg experiment (Caldas et al. 2018;
  ``paper_experiments/femnist.sh`` and ``models/utils/args.py`` of TalwalkarLab/leaf):
  one client per writer (natural-id on ``writer_id``), LEAF's CNN, lr 0.004, batch 10,
  1 local epoch, 3 clients a round, 2,000 rounds. LEAF subsamples 5% of the writers
  (``--sf 0.05``, about 180); ``num-clients = 180`` samples as many writers (seeded).
  flwrlabs/femnist has one split, so test-fraction of it is held out for the server.
- ``cifar10-dirichlet``: Flower's ``niid_bench`` FedAvg baseline (after Li et al. 2022,
  "Federated Learning on Non-IID Data Silos"; ``baselines/niid_bench/niid_bench/conf/
  fedavg_base.yaml``): 10 clients, Dirichlet(0.5) over labels, all clients every round,
  10 local epochs of batch 64, SGD lr 0.01 momentum 0.9 weight decay 1e-5, 50 rounds,
  the LeNet-5-style CNN; pixels standardised per channel with the training split's
  statistics (niid_bench normalises with fixed per-channel constants).
- ``shakespeare``: LEAF's Shakespeare experiment (``paper_experiments/shakespeare.sh``):
  one client per speaking role (natural-id on ``character_id``), the 2x256 char-LSTM,
  lr 0.8, batch 10, 1 local epoch, 10 clients a round, 80 rounds; LEAF's ``--sf 0.05``
  subsample of the 1,129 roles is about 56 clients (``num-clients = 56``).

Not reproduced: LEAF drops users with fewer than ``-k`` samples (100 for FEMNIST, 64 for
Shakespeare) before sampling, and splits train/test within each user; here the ids are
sampled from all users and the server's test set is a random share of all rows (or the
dataset's own test split). The writer and role counts above are from the LEAF paper and
the dataset cards, not re-counted offline: natural-id says the real count if
``num-clients`` is larger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowerbed.core.errors import ConfigError
from flowerbed.core.params import Key

PRESETS: dict[str, dict[str, Any]] = {
    "femnist": {
        "dataset": "hf:flwrlabs/femnist", "feature-column": "image",
        "label-column": "character", "partitioner": "natural-id", "partition-by": "writer_id",
        "num-clients": 180, "model": "femnist-cnn", "lr": 0.004, "batch-size": 10,
        "local-epochs": 1, "fraction-train": 3 / 180, "min-train-nodes": 3,
        "num-server-rounds": 2000, "eval-every": 20,
    },
    "cifar10-dirichlet": {
        "dataset": "hf:uoft-cs/cifar10", "feature-column": "img", "label-column": "label",
        "partitioner": "dirichlet", "partition-by": "label", "partitioner-alpha": 0.5,
        "num-clients": 10, "fraction-train": 1.0, "model": "lenet5", "lr": 0.01,
        "momentum": 0.9, "weight-decay": 1e-5, "batch-size": 64, "local-epochs": 10,
        "num-server-rounds": 50, "normalize": "standardize",
    },
    "shakespeare": {
        "dataset": "hf:flwrlabs/shakespeare", "feature-column": "x", "label-column": "y",
        "partitioner": "natural-id", "partition-by": "character_id", "num-clients": 56,
        "model": "char-lstm", "lr": 0.8, "batch-size": 10, "local-epochs": 1,
        "fraction-train": 10 / 56, "min-train-nodes": 10, "num-server-rounds": 80,
    },
}

KEYS: tuple[Key, ...] = (
    Key("preset", "", "a benchmark's dataset, partitioner, model and hyperparameters: "
        + ", ".join(PRESETS) + " ('' = none); keys set to non-defaults still win",
        lambda v: None if v == "" or v in PRESETS else "must be '' or one of "
        + ", ".join(repr(p) for p in PRESETS)),
)


def apply_preset(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with the preset's values for every key absent or at its default."""
    out = dict(raw)
    name = out.get("preset", "")
    if not name:
        return out
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError("preset", name, "must be '' or one of "
                          + ", ".join(repr(p) for p in PRESETS))
    for key, value in PRESETS[name].items():
        if key not in out or out[key] == defaults.get(key):
            out[key] = value
    return out


__all__ = ["KEYS", "PRESETS", "apply_preset"]
