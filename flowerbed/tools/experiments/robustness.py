"""The robustness experiment: attacks x defences x malicious fraction x seeds, in one command.

``experiments/robustness.toml`` (``runner = "robustness"``) lists the attacks, the malicious
fractions and the defences (each with its family, federated or decentralized, and its own
keys). Every (defence, attack, fraction) cell becomes a variant of one sweep (fraction 0 is
one clean cell per defence, attack "none"), so it runs, resumes and logs like any sweep
(:mod:`flowerbed.tools.sweep`). A defence that is told how many attackers to expect (Krum's
``num-malicious-nodes``, MoNNA's ``nna-f``) names that key in ``f-key``: it is set per cell
to the number of malicious clients (``f-of = "count"``) or to ceil(fraction x (degree + 1))
for a neighbourhood (``f-of = "degree"``). Cells run fraction 0.2 first (the headline), so a
partial run still has them. ``per-neighbour-attacks`` adds, for the decentralized defences
only, cells where those attacks craft a different model per neighbour
(``attack-per-neighbour``); they appear as "<attack> per-nbr" columns.

Adding cells without rerunning the rest (``flowerbed experiment robustness --missing``):
only the cells the committed ``results.jsonl`` lacks run (a new defence, a new attack), plus
the headline cells, whose run folders the curves are drawn from; the report then merges the
committed rows of every other cell with the new ones (a re-run headline cell replaces its
committed rows, and the log says how far they moved).

The report (``experiments/results/robustness/``): ``report.md`` with the final honest
accuracy (mean ± std over seeds) of every cell, one heatmap per fraction (defence x attack)
and accuracy-vs-round curves of the headline cells (one panel per family, at most 8
curves).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from flowerbed.tools.report import curves, load_results, mean_std

METRIC = "honest_accuracy"
HEADLINE = 0.2
FAMILIES = ("federated", "decentralized")
PER_NBR = " per-nbr"  # the column suffix of an attack crafted per neighbour
log = logging.getLogger(__name__)

Cell = tuple[str, str, float]  # (defence label, attack column, malicious fraction)


def _f_value(defence: dict[str, Any], fraction: float, num_clients: int) -> int:
    if defence.get("f-of", "count") == "degree":
        return math.ceil(fraction * (int(defence.get("degree", 4)) + 1))
    return round(fraction * num_clients)


def attack_columns(raw: dict[str, Any]) -> list[str]:
    """The report's attack columns: the attacks, then those crafted per neighbour."""
    return [*raw["attacks"], *(a + PER_NBR for a in raw.get("per-neighbour-attacks", []))]


def cell_of(label: str, params: dict[str, Any]) -> Cell:
    attack = str(params.get("attack", "none"))
    if params.get("attack-per-neighbour"):
        attack += PER_NBR
    return label, attack, float(params.get("byzantine-fraction", 0))


def variants(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One sweep variant per (defence, attack, fraction) cell, headline fraction first."""
    base = dict(raw.get("base", {}))
    fractions = sorted(float(f) for f in raw["fractions"])
    fractions.sort(key=lambda f: (f != HEADLINE, f))
    out = []
    for fraction in fractions:
        for defence in raw["defences"]:
            d = dict(defence)
            family = d.pop("family", "federated")
            f_key = d.pop("f-key", None)
            d.pop("f-of", None)
            common = {**dict(raw.get(family, {})), **d}
            num_clients = int(common.get("num-clients", base.get("num-clients", 100)))
            attacks: list[tuple[str, bool]] = [("none", False)] if fraction == 0 else [
                (a, False) for a in raw["attacks"]]
            if fraction > 0 and family == "decentralized":
                attacks += [(a, True) for a in raw.get("per-neighbour-attacks", [])]
            for attack, per_nbr in attacks:
                cell = {**common, "attack": attack, "byzantine-fraction": fraction}
                if per_nbr:
                    cell["attack-per-neighbour"] = True
                if f_key:
                    cell[f_key] = _f_value(defence, fraction, num_clients)
                out.append(cell)
    return out


def missing(raw: dict[str, Any], done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The variants whose cell no row of ``done`` has, and the headline cells (fraction
    0.2, the headline attacks: the curves read their run folders)."""
    have = {cell_of(r["config"], r["params"]) for r in done}
    heads = set(raw.get("headline-attacks", raw["attacks"][:2]))
    return [v for v in variants(raw)
            if cell_of(v["label"], v) not in have
            or (v["byzantine-fraction"] == HEADLINE and v["attack"] in heads
                and not v.get("attack-per-neighbour"))]


def sweep_dict(raw: dict[str, Any], name: str,
               configs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    keep = {k: v for k, v in raw.items() if k in ("name", "output", "wandb-group", "seeds",
                                                  "engine", "threads", "base", "description")}
    return {**keep, "name": name, "configs": variants(raw) if configs is None else configs}


# --- the report -------------------------------------------------------------------------------


def honest_final(final: dict[str, Any]) -> float | None:
    """The run's final honest accuracy. A clean run (no adversary) has no honest_accuracy:
    every client is honest, so it is the global model's test accuracy (federated) or the
    sampled node models' mean accuracy (decentralized: not x-bar's, which would flatter
    the clean cell against the attacked ones)."""
    for key in (METRIC, "node_accuracy_mean", "test_accuracy"):
        if final.get(key) is not None:
            return float(final[key])
    return None


def cells(results: list[dict[str, Any]]) -> dict[Cell, list[float]]:
    """(defence label, attack column, fraction) -> final honest accuracy of each seed."""
    out: dict[Cell, list[float]] = {}
    for r in results:
        v = honest_final(r["final"])
        if v is None:
            continue
        out.setdefault(cell_of(r["config"], r["params"]), []).append(float(v))
    return out


def table(raw: dict[str, Any], by_cell: dict[Cell, list[float]]) -> str:
    attacks = attack_columns(raw)
    lines = []
    for fraction in sorted(float(f) for f in raw["fractions"] if float(f) > 0):
        lines += [f"\n**{fraction:.0%} malicious** (final honest accuracy, mean ± std over "
                  "seeds; clean = 0% malicious)\n",
                  "| defence | family | clean | " + " | ".join(attacks) + " |",
                  "|---|---|---|" + "---|" * len(attacks)]
        for d in raw["defences"]:
            label = d["label"]
            row = [label, d.get("family", "federated"),
                   _pm(by_cell.get((label, "none", 0.0)))]
            row += [_pm(by_cell.get((label, a, fraction))) for a in attacks]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _pm(vals: list[float] | None) -> str:
    if not vals:
        return "—"
    m, s = mean_std(vals)
    return f"{m:.3f} ± {s:.3f}"


def heatmaps(raw: dict[str, Any], by_cell: dict[Cell, list[float]],
             out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = ["none", *attack_columns(raw)]
    labels = [d["label"] for d in raw["defences"]]
    paths = []
    for fraction in sorted(float(f) for f in raw["fractions"] if float(f) > 0):
        grid = np.full((len(labels), len(attacks)), np.nan)
        for i, label in enumerate(labels):
            for j, attack in enumerate(attacks):
                vals = by_cell.get((label, attack, 0.0 if attack == "none" else fraction))
                if vals:
                    grid[i, j] = float(np.mean(vals))
        fig, ax = plt.subplots(figsize=(1.4 * len(attacks) + 2.5, 0.45 * len(labels) + 1.5))
        im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(attacks)), ["clean (0%)", *attacks[1:]], rotation=30,
                      ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for i in range(len(labels)):
            for j in range(len(attacks)):
                if not math.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                            color="white" if grid[i, j] < 0.6 else "black", fontsize=8)
        ax.set_title(f"final honest accuracy, {fraction:.0%} malicious")
        fig.colorbar(im, ax=ax, fraction=0.03)
        fig.tight_layout()
        path = out_dir / f"heatmap_{round(fraction * 100)}pct.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def headline_curves(raw: dict[str, Any], results: list[dict[str, Any]], sweep_dir: Path,
                    out_dir: Path) -> list[Path]:
    """Honest accuracy vs round, per headline attack at 20%: one panel per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    family = {d["label"]: d.get("family", "federated") for d in raw["defences"]}
    paths = []
    for attack in raw.get("headline-attacks", raw["attacks"][:2]):
        sub = [r for r in results if r["params"].get("attack") == attack
               and float(r["params"].get("byzantine-fraction", 0)) == HEADLINE
               and not r["params"].get("attack-per-neighbour")]
        fig, axes = plt.subplots(1, len(FAMILIES), figsize=(11, 4), sharey=True)
        for ax, fam in zip(axes, FAMILIES, strict=True):
            mine = [r for r in sub if family.get(r["config"]) == fam]
            for label, (rounds, mean, std, _) in list(curves(mine, METRIC, sweep_dir).items()
                                                      )[:8]:
                ax.plot(rounds, mean, label=label)
                ax.fill_between(rounds, mean - std, mean + std, alpha=0.2)
            ax.set_title(f"{fam}: {attack}, {HEADLINE:.0%} malicious")
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0].set_ylabel("honest accuracy")
        fig.tight_layout()
        path = out_dir / f"curves_{attack}_{round(HEADLINE * 100)}pct.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def merged(committed: list[dict[str, Any]], new: list[dict[str, Any]]
           ) -> list[dict[str, Any]]:
    """``new`` and every committed row of a cell ``new`` has not run; logs how far each
    re-run cell's mean moved from its committed one."""
    fresh = {cell_of(r["config"], r["params"]) for r in new}
    old, now = cells(committed), cells(new)
    for key in sorted(fresh & set(old)):
        if key in now:
            log.info("re-run cell %s: %.4f (committed %.4f)", key, float(np.mean(now[key])),
                     float(np.mean(old[key])))
    return [*(r for r in committed if cell_of(r["config"], r["params"]) not in fresh), *new]


def write_robustness_report(raw: dict[str, Any], sweep_dir: Path, out_dir: Path,
                            keep_committed: bool = False) -> Path:
    """The report of the sweep in ``sweep_dir``; with ``keep_committed``, merged with the
    rows of ``out_dir/results.jsonl`` for the cells the sweep did not run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = load_results(sweep_dir)
    previous = out_dir / "results.jsonl"
    if keep_committed and previous.exists():
        results = merged([json.loads(x) for x in previous.read_text().splitlines()
                          if x.strip()], results)
    by_cell = cells(results)
    plots = heatmaps(raw, by_cell, out_dir) + headline_curves(raw, results, sweep_dir,
                                                               out_dir)
    (out_dir / "results.jsonl").write_text("".join(json.dumps(r, default=float) + "\n"
                                                   for r in results))
    expected = len(variants(raw)) * len(raw.get("seeds", [0]))
    body = [f"# {raw.get('name', 'robustness')}\n", str(raw.get("description", "")).strip(),
            f"\nRuns finished: {len(results)} of {expected}.",
            table(raw, by_cell), "\n## Plots\n",
            *(f"![{p.stem}]({p.name})" for p in plots)]
    path = out_dir / "report.md"
    path.write_text("\n".join(body) + "\n")
    return path


def run_robustness(raw: dict[str, Any], name: str, experiments_dir: Path,
                   output: Path, results_dir: Path, only_missing: bool = False) -> Path:
    """Run the experiment (every cell, or with ``only_missing`` the cells the committed
    results lack and the headline ones) and write its report."""
    from flowerbed.tools.sweep import run_sweep, sweep_from_dict

    configs = None
    previous = results_dir / "results.jsonl"
    if only_missing and previous.exists():
        done = [json.loads(x) for x in previous.read_text().splitlines() if x.strip()]
        configs = missing(raw, done)
        log.info("%s: %d of %d cells to run (missing, or headline)", name, len(configs),
                 len(variants(raw)))
    sweep = sweep_from_dict(sweep_dict(raw, name, configs), name, experiments_dir, output)
    run_sweep(sweep)
    return write_robustness_report(raw, sweep.folder, results_dir,
                                   keep_committed=configs is not None)


__all__ = ["attack_columns", "cell_of", "merged", "missing", "run_robustness", "sweep_dict",
           "variants", "write_robustness_report"]
