"""The robustness experiment: its cells (f told to Krum/MoNNA, one clean cell per defence,
the headline fraction first), every run config of the real file valid, and one tiny
experiment through the CLI writing its table, heatmaps and curves."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from flowerbed.run.config import parse_run_config
from flowerbed.tools.cli import main
from flowerbed.tools.experiments.robustness import cells, sweep_dict, table, variants
from flowerbed.tools.sweep import sweep_from_dict
from tests.conftest import ROOT

RAW = {"attacks": ["sign-flip", "alie"], "fractions": [0.0, 0.1, 0.2],
       "base": {"num-clients": 20},
       "decentralized": {"topology": "random-regular", "degree": 4},
       "defences": [{"label": "FedAvg", "strategy": "fedavg"},
                    {"label": "Krum", "strategy": "flwr.serverapp.strategy:Krum",
                     "f-key": "num-malicious-nodes"},
                    {"label": "MoNNA", "family": "decentralized", "strategy": "monna",
                     "f-key": "nna-f", "f-of": "degree", "degree": 4}]}


def test_cells_tell_f_and_put_the_headline_first():
    v = variants(RAW)
    assert len(v) == 3 * (1 + 2 + 2)  # a clean cell and 2 attacks x 2 fractions, per defence
    assert {c["byzantine-fraction"] for c in v[:6]} == {0.2}
    krum = {(c["attack"], c["byzantine-fraction"]): c["num-malicious-nodes"] for c in v
            if c["label"] == "Krum"}
    assert krum == {("none", 0.0): 0, ("sign-flip", 0.1): 2, ("alie", 0.1): 2,
                    ("sign-flip", 0.2): 4, ("alie", 0.2): 4}
    monna = {c["byzantine-fraction"]: c["nna-f"] for c in v if c["label"] == "MoNNA"}
    assert monna == {0.0: 0, 0.1: 1, 0.2: 1}  # ceil(f x (degree + 1)): 0.5 -> 1, 1.0 -> 1
    assert all(c["topology"] == "random-regular" for c in v if c["label"] == "MoNNA")
    assert all("topology" not in c for c in v if c["label"] == "FedAvg")


def test_the_real_file_expands_into_valid_run_configs(tmp_path: Path):
    raw = tomllib.loads((ROOT / "experiments" / "robustness.toml").read_text())
    sweep = sweep_from_dict(sweep_dict(raw, "robustness"), "robustness", ROOT / "experiments",
                            tmp_path)
    runs = sweep.runs()
    assert len({r.name for r in runs}) == len(runs) == 798  # 14 defences x 19 cells x 3
    for run in runs[::7]:
        parse_run_config(run.overrides)


def test_table_of_cells():
    results = [{"config": "FedAvg", "params": {"attack": "none", "byzantine-fraction": 0.0},
                "final": {"honest_accuracy": 0.9}},
               {"config": "FedAvg", "params": {"attack": "alie", "byzantine-fraction": 0.1},
                "final": {"honest_accuracy": 0.5}},
               {"config": "FedAvg", "params": {"attack": "alie", "byzantine-fraction": 0.1},
                "final": {"honest_accuracy": 0.7}}]
    results.append({"config": "D-SGD", "params": {"attack": "none", "byzantine-fraction": 0.0},
                    "final": {"test_accuracy": 0.95, "node_accuracy_mean": 0.8}})
    by = cells(results)
    assert by[("FedAvg", "alie", 0.1)] == [0.5, 0.7]
    assert by[("D-SGD", "none", 0.0)] == [0.8]  # node models, like the attacked cells
    text = table(RAW, by)
    assert "| FedAvg | federated | 0.900 ± 0.000 | — | 0.600 ± 0.141 |" in text


def test_a_tiny_robustness_experiment_writes_its_report(tmp_path: Path):
    exp = tmp_path / "experiments"
    exp.mkdir()
    (exp / "rob.toml").write_text('''
name = "rob"
runner = "robustness"
seeds = [0]
attacks = ["sign-flip"]
headline-attacks = ["sign-flip"]
fractions = [0.0, 0.2]
[base]
num-clients = 5
num-server-rounds = 2
local-steps = 1
wandb = false
[federated]
fraction-train = 1.0
[decentralized]
topology = "ring"
final-merge = false
[[defences]]
label = "FedAvg"
strategy = "fedavg"
[[defences]]
label = "D-SGD"
family = "decentralized"
strategy = "dsgd"
''')
    assert main(["experiment", "rob", "--experiments", str(exp)]) == 0
    out = exp / "results" / "rob"
    report = (out / "report.md").read_text()
    assert "Runs finished: 4 of 4." in report and "| D-SGD | decentralized |" in report
    assert (out / "heatmap_20pct.png").exists() and (out / "curves_sign-flip_20pct.png").exists()
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    attacked = [r for r in lines if r["params"]["attack"] == "sign-flip"]
    assert len(attacked) == 2 and all("honest_accuracy" in r["final"] for r in attacked)
