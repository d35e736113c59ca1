import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment


@pytest.fixture
def run():
    """Run a config in-process, quietly, without outputs."""

    def _run(**over):
        raw = {"engine": "inprocess", "tracking": False, "progress": False, "wandb": False}
        raw.update({k.replace("_", "-"): v for k, v in over.items()})
        return run_experiment(parse_run_config(raw))

    return _run
