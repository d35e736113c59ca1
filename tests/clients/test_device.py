"""The device setting: syntax checked, CUDA refused clearly where none is visible, 'auto' and
'cpu' train exactly as before on a machine without a GPU, and a GPU run (when one is there)
equals the CPU run to float tolerance."""

from __future__ import annotations

import pytest
import torch

from flowerbed.clients.device import resolve
from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.tools.cli import default_federation
from tests.conftest import tiny

NO_GPU = not torch.cuda.is_available()


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CPU", ""])
def test_bad_device_names_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"device .* must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        parse_run_config(tiny(device=bad))


@pytest.mark.skipif(not NO_GPU, reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error_and_auto_is_the_cpu() -> None:
    with pytest.raises(ConfigError, match=r"no CUDA GPU is visible.*client-resources-num-gpus"):
        parse_run_config(tiny(device="cuda"))
    assert resolve("auto") == torch.device("cpu")


def test_auto_and_cpu_train_alike() -> None:
    """On this machine both are the CPU; with a GPU, 'auto' (the GPU) agrees to 1e-4."""
    runs = {d: run_experiment(parse_run_config(tiny(device=d, strategy="scaffold")))
            for d in ("cpu", "auto")}
    for a, b in zip(runs["cpu"].records, runs["auto"].records, strict=True):
        assert a["test_loss"] == pytest.approx(b["test_loss"], abs=1e-4)
        if NO_GPU:
            assert a["test_loss"] == b["test_loss"]  # the same device: identical


def test_gpu_resources_reach_the_federation() -> None:
    cfg = parse_run_config(tiny(**{"client-resources-num-gpus": 0.25}))
    assert "client-resources-num-gpus=0.25" in default_federation(cfg)[0]
    assert "num-gpus" not in default_federation(parse_run_config(tiny()))[0]
