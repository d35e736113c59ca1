"""The robustness experiment: its cells (f told to Krum/MoNNA, one clean cell per defence,
the headline fraction first), every run config of the real file valid, and one tiny
experiment through the CLI writing its table, heatmaps and curves."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from flowerbed.run.config import parse_run_config
from flowerbed.tools.cli import main
from flowerbed.tools.experiments.robustness import (
    cells,
    merged,
    missing,
    sweep_dict,
    table,
    variants,
)
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
    # (8 federated defences x 19 cells + 7 decentralized x 25 cells) x 3 seeds
    assert len({r.name for r in runs}) == len(runs) == (8 * 19 + 7 * 25) * 3
    for run in runs[::7]:
        parse_run_config(run.overrides)


def test_per_neighbour_cells_and_adding_only_the_missing_ones():
    raw = {**RAW, "per-neighbour-attacks": ["alie"], "headline-attacks": ["sign-flip"]}
    v = variants(raw)
    per_nbr = [c for c in v if c.get("attack-per-neighbour")]
    assert {(c["label"], c["attack"]) for c in per_nbr} == {("MoNNA", "alie")}  # decentr.
    assert len(per_nbr) == 2  # fractions 0.1 and 0.2

    def row(label: str, attack: str, fraction: float, acc: float, **p) -> dict:
        return {"config": label, "params": {"attack": attack, "byzantine-fraction": fraction,
                                            **p}, "final": {"honest_accuracy": acc}}

    # committed: every plain cell; missing: the per-neighbour ones and the headline cells
    done = [row(c["label"], c["attack"], c["byzantine-fraction"], 0.5) for c in v
            if not c.get("attack-per-neighbour")]
    todo = {(c["label"], c["attack"], c["byzantine-fraction"], bool(c.get(
        "attack-per-neighbour"))) for c in missing(raw, done)}
    assert todo == {("MoNNA", "alie", 0.1, True), ("MoNNA", "alie", 0.2, True),
                    ("FedAvg", "sign-flip", 0.2, False), ("Krum", "sign-flip", 0.2, False),
                    ("MoNNA", "sign-flip", 0.2, False)}
    # merging: a re-run cell replaces its committed rows, the others stay
    new = [row("FedAvg", "sign-flip", 0.2, 0.9),
           row("MoNNA", "alie", 0.2, 0.3, **{"attack-per-neighbour": True})]
    by = cells(merged(done, new))
    assert by[("FedAvg", "sign-flip", 0.2)] == [0.9]
    assert by[("MoNNA", "alie per-nbr", 0.2)] == [0.3]
    assert by[("MoNNA", "alie", 0.2)] == [0.5] and by[("Krum", "sign-flip", 0.2)] == [0.5]
    assert "alie per-nbr |" in table(raw, by)


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
    # a defence added later: --missing runs its 2 cells and the 2 headline cells again
    # (the curves need their run folders), the report keeps FedAvg's clean row
    toml = exp / "rob.toml"
    toml.write_text(toml.read_text() + '[[defences]]\nlabel = "CG"\nfamily = "decentralized"'
                    '\nstrategy = "clipped-gossip"\n')
    folder = tmp_path / "outputs" / "experiments" / "rob"
    folder.rename(tmp_path / "first-run")  # the first run's folders are gone
    assert main(["experiment", "rob", "--experiments", str(exp), "--missing"]) == 0
    report = (out / "report.md").read_text()
    assert "Runs finished: 6 of 6." in report and "| CG | decentralized |" in report
    assert "| FedAvg | federated |" in report
    assert len(list((folder / "runs").iterdir())) == 4
