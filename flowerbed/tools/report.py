"""Sweep reports: a Markdown table (mean +- std over seeds) and PNG plots per configuration.

Reads a sweep folder (``results.jsonl``, ``sweep.json`` and every run's ``metrics.jsonl``)
and writes ``report.md``, ``accuracy_vs_round.png``, ``accuracy_vs_bytes.png`` and a copy
of ``results.jsonl`` into the report folder. The std is the sample std over seeds
(ddof = 1; 0 with one seed). Reports group runs by configuration label (see
:mod:`flowerbed.tools.sweep`), in sweep order.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIB = 2**20


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof = 1; 0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


@dataclass
class Row:
    """One configuration of the table."""

    label: str
    seeds: list[int] = field(default_factory=list)
    final: dict[str, tuple[float, float]] = field(default_factory=dict)
    best: dict[str, tuple[float, float]] = field(default_factory=dict)
    mib: tuple[float, float] = (0.0, 0.0)
    messages: tuple[float, float] = (0.0, 0.0)


def load_results(sweep_dir: Path) -> list[dict[str, Any]]:
    path = sweep_dir / "results.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the sweep first")
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def load_spec(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / "sweep.json"
    return json.loads(path.read_text()) if path.exists() else {"name": sweep_dir.name}


def by_label(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["label"], []).append(r)
    return groups


def table_rows(results: list[dict[str, Any]], metrics: list[str]) -> list[Row]:
    rows = []
    for label, runs in by_label(results).items():
        row = Row(label, [int(r["seed"]) for r in runs])
        for m in metrics:
            fin = [r["final"][m] for r in runs if r["final"].get(m) is not None]
            best = [r["best"][m] for r in runs if r["best"].get(m) is not None]
            if fin:
                row.final[m] = mean_std(fin)
            if best:
                row.best[m] = mean_std(best)
        row.mib = mean_std([r["totals"].get("bytes", 0) / MIB for r in runs])
        row.messages = mean_std([float(r["totals"].get("cum_messages", 0)) for r in runs])
        rows.append(row)
    return rows


def _pm(ms: tuple[float, float] | None, digits: int = 4) -> str:
    if ms is None:
        return "n/a"
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def markdown_table(rows: list[Row], metrics: list[str]) -> str:
    head = ["configuration", "seeds"]
    for m in metrics:
        head += [f"final {m}", f"best {m}"]
    head += ["MiB sent", "messages"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, str(len(r.seeds))]
        for m in metrics:
            cells += [_pm(r.final.get(m)), _pm(r.best.get(m))]
        cells += [_pm(r.mib, 2), f"{r.messages[0]:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _value(r: dict[str, Any], key: str) -> Any:
    """A run's parameter ``key``; ``config`` is the variant's label (sweep files' [[configs]])."""
    if key == "config":
        return r.get("config") or r["label"]
    return r["params"].get(key)


def _group(r: dict[str, Any], per: str | list[str]) -> Any:
    if isinstance(per, str):
        return _value(r, per)
    return tuple(_value(r, k) for k in per)


def choose(results: list[dict[str, Any]], among: str, per: str | list[str], metric: str,
           maximize: bool) -> list[tuple[Any, Any, float, dict[Any, float]]]:
    """A tuning schedule's choice: for each value of ``per`` (a parameter, or a list of them:
    a tuple per group), the value of ``among`` whose final ``metric`` (mean over seeds) is
    best. Returns (per, chosen, its mean, all means)."""
    means: dict[Any, dict[Any, list[float]]] = {}
    keys = [per] if isinstance(per, str) else per
    for r in results:
        p = r["params"]
        if (among in p and all(_value(r, k) is not None for k in keys)
                and r["final"].get(metric) is not None):
            means.setdefault(_group(r, per), {}).setdefault(p[among], []).append(
                r["final"][metric])
    out = []
    for key, cands in means.items():
        avg = {c: float(np.mean(v)) for c, v in cands.items()}
        best = (max if maximize else min)(avg, key=lambda c: avg[c])
        out.append((key, best, avg[best], avg))
    return out


def chosen_runs(results: list[dict[str, Any]], among: str, per: str | list[str], key: Any,
                chosen: Any) -> list[dict[str, Any]]:
    """The runs (all seeds) of group ``key`` at the chosen value of ``among``."""
    return [r for r in results if among in r["params"] and r["params"][among] == chosen
            and _group(r, per) == key]


def choice_table(rows: list[tuple[Any, Any, float, dict[Any, float]]], among: str,
                 per: str | list[str], metric: str,
                 shown: list[dict[str, tuple[float, float] | None]] | None = None) -> str:
    """One line per group; ``shown`` adds mean ± std over seeds of more metrics of the
    chosen runs (one dict per row)."""
    names = [per] if isinstance(per, str) else per
    extra = list(shown[0]) if shown else []
    head = [*names, f"chosen {among}", f"final {metric}",
            *[m if m.startswith("expected") else f"final {m}" for m in extra],
            "all candidates"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, (key, best, value, avg) in enumerate(rows):
        cands = ", ".join(f"{c}: {v:.4f}" for c, v in avg.items())
        keys = [key] if isinstance(per, str) else list(key)
        cells = [*map(str, keys), str(best), f"{value:.4f}",
                 *[_pm(shown[i][m]) if shown else "" for m in extra], cands]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling_plot(results: list[dict[str, Any]], choice: dict[str, Any], x: str, metric: str,
                 maximize: bool, out_dir: Path, title: str,
                 theory: Callable[[dict[str, Any]], float | None] | None = None) -> Path:
    """Final ``metric`` (mean ± std over seeds, at the tuned value) against parameter ``x``,
    one line per sweep configuration; the choice must be per ("config", x). ``theory``
    (a run's predicted final metric, or None) adds a dashed line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = choose(results, choice["among"], ["config", x], metric, maximize)
    series: dict[str, list[tuple[float, float, float]]] = {}
    predicted: dict[str, list[tuple[float, float]]] = {}
    for key, best, _, _ in rows:
        runs = chosen_runs(results, choice["among"], ["config", x], key, best)
        m, s = mean_std([r["final"][metric] for r in runs])
        series.setdefault(str(key[0]), []).append((float(key[1]), m, s))
        preds = [p for r in runs if (p := theory(r)) is not None] if theory else []
        if preds:
            predicted.setdefault(str(key[0]), []).append((float(key[1]), float(np.mean(preds))))
    fig, ax = plt.subplots(figsize=(11 if predicted else 7, 5))
    for name, pts in series.items():
        pts.sort()
        xs, ms, ss = (np.array(v) for v in zip(*pts, strict=True))
        bar = ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=name)
        if name in predicted:
            px, pm = zip(*sorted(predicted[name]), strict=True)
            ax.plot(px, pm, linestyle="--", marker="x", color=bar.lines[0].get_color(),
                    alpha=0.7, label=f"{name}: expected (theory)")
    ax.set(xscale="log", yscale="log", xlabel=x,
           ylabel=f"final {metric} (tuned {choice['among']})",
           title=f"{title}: final {metric} vs {x}")
    ax.grid(alpha=0.3, which="both")
    if predicted:  # many lines: keep the legend off the data
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "scaling.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves(results: list[dict[str, Any]], metric: str, sweep_dir: Path
           ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per label: rounds, mean and std of ``metric`` over seeds, mean cumulative bytes.

    Only rounds every seed evaluated are kept, so each point averages all seeds.
    """
    out = {}
    for label, runs in by_label(results).items():
        per_seed: list[dict[int, tuple[float, float]]] = []
        for r in runs:
            path = sweep_dir / r["run_dir"] / "metrics.jsonl"
            if not path.exists():
                continue
            pts = {}
            for line in path.read_text().splitlines():
                rec = json.loads(line) if line.strip() else {}
                v = rec.get(metric)
                if isinstance(v, int | float) and math.isfinite(v):
                    b = sum(rec.get(k, 0) for k in ("cum_bytes_down", "cum_bytes_up",
                                                    "cum_bytes_p2p"))
                    pts[int(rec["round"])] = (float(v), float(b))
            per_seed.append(pts)
        if not per_seed:
            continue
        rounds = sorted(set.intersection(*(set(p) for p in per_seed)))
        vals = np.array([[p[t][0] for t in rounds] for p in per_seed])
        nbytes = np.array([[p[t][1] for t in rounds] for p in per_seed])
        std = vals.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(len(rounds))
        out[label] = (np.array(rounds), vals.mean(axis=0), std, nbytes.mean(axis=0))
    return out


def plot(results: list[dict[str, Any]], metric: str, sweep_dir: Path, out_dir: Path,
         title: str, logy: bool = False) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(results, metric, sweep_dir)
    paths = []
    for xname, fname in (("round", "accuracy_vs_round.png"),
                         ("bytes", "accuracy_vs_bytes.png")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for label, (rounds, mean, std, nbytes) in data.items():
            x = rounds if xname == "round" else nbytes / MIB
            line, = ax.plot(x, mean, label=label)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set(xlabel="round" if xname == "round" else "cumulative MiB sent (all links)",
               ylabel=metric, title=f"{title}: {metric} (mean ± std over seeds)",
               yscale="log" if logy else "linear")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _theory(spec: dict[str, Any], path: str | None
            ) -> Callable[[dict[str, Any]], float | None] | None:
    """``[report] theory = "pkg.mod:fn"``: fn(run config, final metrics) -> the run's
    predicted final metric (or None), called with each run's parsed config."""
    if not path:
        return None
    from flowerbed.core.imports import load_object
    from flowerbed.run.config import parse_run_config

    fn = load_object(path, "report.theory")
    cache: dict[str, float | None] = {}

    def predict(r: dict[str, Any]) -> float | None:
        if r["run"] not in cache:
            cfg = parse_run_config({"engine": spec.get("engine", "inprocess"),
                                    **spec.get("base", {}), **r["params"], "seed": r["seed"]})
            value = fn(cfg, r["final"])
            cache[r["run"]] = None if value is None else float(value)
        return cache[r["run"]]

    return predict


def write_report(sweep_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write the report of a sweep folder; returns the path of ``report.md``."""
    sweep_dir = Path(sweep_dir)
    spec = load_spec(sweep_dir)
    results = load_results(sweep_dir)
    if out_dir is None:
        out_dir = spec.get("report_dir") or sweep_dir / "report"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = spec.get("report", {})
    metric = rep.get("metric", "test_accuracy")
    metrics = [metric, *[m for m in rep.get("extra-metrics", []) if m != metric]]
    name = spec.get("name", sweep_dir.name)
    rows = table_rows(results, metrics)
    choices = rep.get("choose") or []
    choices = [choices] if isinstance(choices, dict) else list(choices)
    plotted = results
    if rep.get("plot") == "chosen" and choices:  # curves of the tuned runs only
        ch = choices[0]
        picked = choose(results, ch["among"], ch["per"], ch["metric"],
                        bool(ch.get("maximize", True)))
        plotted = [r for key, best, _, _ in picked
                   for r in chosen_runs(results, ch["among"], ch["per"], key, best)]
    plots = plot(plotted, metric, sweep_dir, out_dir, name, bool(rep.get("log-y", False)))
    shutil.copyfile(sweep_dir / "results.jsonl", out_dir / "results.jsonl")
    parts = [f"# {name}", ""]
    if spec.get("description"):
        parts += [spec["description"].strip(), ""]
    parts += [f"{len(results)} runs, W&B group `{spec.get('group', name)}`; mean ± std over "
              "seeds (sample std). `final` = last round, `best` = best round; MiB and "
              "messages from the communication ledger (all links, whole run).", "",
              markdown_table(rows, metrics), ""]
    theory = _theory(spec, rep.get("theory"))
    for ch in choices:
        maximize = bool(ch.get("maximize", True))
        per = ch["per"]
        per_text = per if isinstance(per, str) else " and ".join(per)
        rows_ch = choose(results, ch["among"], per, ch["metric"], maximize)
        chosen = [chosen_runs(results, ch["among"], per, key, best)
                  for key, best, _, _ in rows_ch]
        shown = [{m: (mean_std(v) if (v := [r["final"][m] for r in runs
                                             if r["final"].get(m) is not None]) else None)
                  for m in ch.get("show", [])} for runs in chosen]
        if theory:
            for row, runs in zip(shown, chosen, strict=True):
                preds = [p for r in runs if (p := theory(r)) is not None]
                row[f"expected {ch['metric']} (theory)"] = mean_std(preds) if preds else None
        parts += [f"## Tuned {ch['among']} per {per_text}", "",
                  f"The value of {ch['among']} with the {'highest' if maximize else 'lowest'} "
                  f"final {ch['metric']} (mean over seeds), for each {per_text}.", "",
                  choice_table(rows_ch, ch["among"], per, ch["metric"],
                               shown if ch.get("show") or theory else None), ""]
    sc = rep.get("scaling")
    if sc and choices:
        ch = choices[0]
        plots.append(scaling_plot(results, ch, sc["x"], ch["metric"],
                                  bool(ch.get("maximize", True)), out_dir, name, theory))
    parts += [f"![{p.stem}]({p.name})" for p in plots]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path


__all__ = ["Row", "choice_table", "choose", "chosen_runs", "curves", "markdown_table",
           "mean_std", "scaling_plot", "table_rows", "write_report"]
