"""Experiment runners: ``flowerbed experiment <name>`` runs ``experiments/<name>.toml``.

An experiment file is a sweep file (see :mod:`flowerbed.tools.sweep`) whose report goes
into ``experiments/results/<name>/``, or names a dedicated runner with ``runner = "..."``
(network-costs, robustness). Run folders go to ``outputs/experiments/<name>/`` (not committed).
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def experiment_file(name: str, experiments_dir: Path) -> Path:
    """``experiments/<name>.toml``; kebab-case and snake_case names both work."""
    for stem in (name, name.replace("-", "_"), name.replace("_", "-")):
        path = experiments_dir / f"{stem}.toml"
        if path.exists():
            return path
    known = sorted(p.stem for p in experiments_dir.glob("*.toml"))
    raise FileNotFoundError(f"no experiment {name!r} in {experiments_dir} (known: {known})")


def load_experiment(name: str, experiments_dir: Path) -> tuple[dict[str, Any], str]:
    path = experiment_file(name, experiments_dir)
    raw = tomllib.loads(path.read_text())
    return raw, str(raw.get("name", path.stem.replace("_", "-")))


def run_named_experiment(name: str, experiments_dir: Path = Path("experiments"),
                         only_missing: bool = False) -> Path:
    """Run one experiment and write its report; returns the report's path.

    ``only_missing`` (robustness only): run the cells its committed results lack (and the
    headline cells its curves need), keeping the committed rows of the others."""
    from flowerbed.tools.report import write_report
    from flowerbed.tools.sweep import SweepError, run_sweep, sweep_from_dict

    raw, exp_name = load_experiment(name, experiments_dir)
    results_dir = experiments_dir / "results" / exp_name
    runner = raw.get("runner", "sweep")
    if only_missing and runner != "robustness":
        raise SweepError(f"experiment {exp_name}: --missing works with runner = "
                         "'robustness' only")
    output = experiments_dir / raw.get("output", f"../outputs/experiments/{exp_name}")
    if runner == "network-costs":
        from flowerbed.tools.experiments.network_costs import run_network_costs

        return run_network_costs({**raw, "name": exp_name}, results_dir,
                                 (output / "runs").resolve())
    if runner == "robustness":
        from flowerbed.tools.experiments.robustness import run_robustness

        return run_robustness({**raw, "name": exp_name}, exp_name, experiments_dir, output,
                              results_dir, only_missing)

    if runner != "sweep":
        raise SweepError(f"experiment {exp_name}: runner = {runner!r}; must be 'sweep', "
                         "'network-costs' or 'robustness'")
    sweep = sweep_from_dict({**raw, "name": exp_name}, exp_name, experiments_dir, output)
    run_sweep(sweep)
    return write_report(sweep.folder, results_dir)


__all__ = ["experiment_file", "load_experiment", "run_named_experiment"]
