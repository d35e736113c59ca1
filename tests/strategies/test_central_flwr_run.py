"""FedAU and Paris end to end through ``flwr run`` on the Ray backend (tiny configs)."""

import json
import re
from pathlib import Path

import pytest

from flowerbed.tools.superlink import LocalSuperLink

ROOT = Path(__file__).resolve().parents[2]
TINY = ('num-clients=8 num-server-rounds=2 wandb=false progress=false model="logreg" '
        'local-steps=2 fraction-train=0.5')
RUNS = {
    "fedau": 'strategy="fedau" participation="data-bernoulli" participation-mean=0.6 '
             'participation-min=0.2 participation-alpha=1.0',
    "paris": 'strategy="paris" experts=2 sync-every=0 router-epochs=1',
}


@pytest.mark.slow
def test_fedau_and_paris_complete_through_flwr_run(tmp_path):
    out = tmp_path / "outputs"
    with LocalSuperLink(tmp_path / "flwr-home", cwd=ROOT) as link:
        for name, extra in RUNS.items():
            proc = link.flwr("run", ".", "--run-config",
                             f'{TINY} {extra} output-dir="{out}" run-name="{name}"',
                             "--federation-config",
                             "num-supernodes=2 client-resources-num-cpus=1",
                             capture=True, timeout=300)
            m = re.search(r"Successfully started run (\d+)", proc.stdout + proc.stderr)
            assert m, proc.stdout + proc.stderr
            status, details = link.wait_finished(int(m.group(1)), timeout=300)
            assert status == "finished:completed", details
            lines = (out / name / "metrics.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines]
            assert [r["round"] for r in records] == [0, 1, 2]
            if name == "paris":
                assert "ensemble_accuracy" in records[-1]
            summary = json.loads((out / name / "summary.json").read_text())
            assert summary["status"] == "completed"
