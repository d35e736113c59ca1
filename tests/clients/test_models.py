"""Model registry: names, import paths, seeded init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowerbed.clients.models import MODELS, build_model
from flowerbed.core.arrays import module_state
from flowerbed.run.config import ConfigError, parse_run_config
from flowerbed.run.runner import run_experiment
from tests.conftest import tiny

# the input each registry model is built for when 8x8 grey images are not (default)
INPUTS = {"lenet5": (3, 32, 32), "char-lstm": (80,)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_models_map_inputs_to_logits(name: str) -> None:
    cfg = parse_run_config(tiny(model=name))
    shape = INPUTS.get(name, (1, 8, 8))
    model = build_model(cfg, shape, 10)
    assert model(torch.zeros(3, *shape)).shape == (3, 10)


def test_init_is_seeded() -> None:
    cfg = parse_run_config(tiny(model="mlp", hidden_sizes="16,8"))
    a = module_state(build_model(cfg, (64,), 10))
    b = module_state(build_model(cfg, (64,), 10))
    c = module_state(build_model(cfg, (64,), 10, seed=1))
    assert [v.shape for v in a.values()] == [(16, 64), (16,), (8, 16), (8,), (10, 8), (10,)]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_user_model_by_import_path_trains() -> None:
    cfg = parse_run_config(tiny(model="examples.my_model:quadratic_logreg",
                                num_server_rounds=3, lr=0.3))
    result = run_experiment(cfg)
    assert result.final_state is not None
    assert result.final_state["1.weight"].shape == (10, 128)
    assert result.records[-1]["test_accuracy"] > result.records[0]["test_accuracy"] + 0.3


def test_bad_model_path_names_the_path() -> None:
    with pytest.raises(ConfigError, match=r"examples\.my_model:nope"):
        parse_run_config(tiny(model="examples.my_model:nope"))
