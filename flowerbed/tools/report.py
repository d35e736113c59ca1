"""Reports: a Markdown table (mean +- std over seeds) and PNG plots per configuration.

Reads a sweep folder (``results.jsonl``, ``sweep.json`` and every run's ``metrics.jsonl``),
or any run folders (:func:`write_runs_report`: ad-hoc runs, grouped into configurations
that differ only by seed), and writes ``report.md``, ``<metric>_vs_round.png``,
``<metric>_vs_bytes.png``, ``final_<metric>.png`` (bars with ± std error bars),
``<metric>_vs_time.png`` for runs on the virtual clock (with the time-to-target table of
:mod:`flowerbed.tools.report_time` when ``[report]`` asks for it) and ``results.jsonl`` into
the report folder. The std is the sample std over seeds (ddof = 1; 0
with one seed). Reports group runs by configuration label (see :mod:`flowerbed.tools.sweep`),
in sweep order.

The metric is the sweep's ``[report] metric`` when it names one; otherwise each
configuration's own primary metric (what its strategy declares, in ``summary.json``), so a
routed Paris ensemble is judged by its ensemble accuracy and FedAvg by its test accuracy.
Plots follow :mod:`flowerbed.run.trackers.plot_rules` (<= 8 curves per panel, facets by
``[report] facet``, integer round ticks, bands clipped to the metric's range).
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

from flowerbed.run.trackers.plot_rules import (
    clip_band,
    facet,
    final_bars,
    integer_rounds,
    legend_below,
    panel_grid,
)
from flowerbed.run.trackers.primary import is_accuracy, metric_label, primary_from
from flowerbed.tools.report_time import time_plot, time_table, timelines

MIB = 2**20
PRIMARY = "primary"  # [report] metric = "primary": each configuration's own primary metric
# the ledger's links ([report] links = [...]): which bytes the table's MiB and the x axis of
# <metric>_vs_bytes.png count (default: all three)
LINKS = {"down": "cum_bytes_down", "up": "cum_bytes_up", "p2p": "cum_bytes_p2p"}
LINK_NAMES = {"down": "downlink", "up": "uplink", "p2p": "peer-to-peer"}


def link_keys(links: list[str] | None) -> tuple[str, ...]:
    """The ledger counters of ``links`` (None: every link); ValueError on an unknown one."""
    if links is None:
        return tuple(LINKS.values())
    unknown = sorted(set(links) - set(LINKS))
    if unknown or not links:
        raise ValueError(f"[report] links = {links}: each must be one of {sorted(LINKS)}")
    return tuple(LINKS[k] for k in links)


def links_text(links: list[str] | None) -> str:
    """How the report names the links its bytes count: "all links", "uplink + ..."."""
    return "all links" if links is None else " + ".join(LINK_NAMES[k] for k in links)


def run_bytes(totals: dict[str, Any], links: list[str] | None = None) -> float:
    """A run's bytes on ``links`` from its ledger totals."""
    if links is None and "bytes" in totals:
        return float(totals["bytes"])
    return float(sum(totals.get(k, 0) for k in link_keys(links)))


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


def table_rows(results: list[dict[str, Any]], metrics: list[str],
               links: list[str] | None = None) -> list[Row]:
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
        row.mib = mean_std([run_bytes(r["totals"], links) / MIB for r in runs])
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


def metric_of(r: dict[str, Any], metric: str | None) -> str:
    """The metric a results line is judged by: ``metric``, or (None / "primary") the run's
    own primary metric."""
    return metric if metric and metric != PRIMARY else primary_from(r).metric


def plot_stem(metrics: list[str]) -> str:
    """What the plots' file names say they plot: the metric, "accuracy" when every one is an
    accuracy, "primary_metric" when they are of different kinds."""
    unique = list(dict.fromkeys(metrics))
    if unique and all(is_accuracy(m) for m in unique):
        return "accuracy"
    return unique[0] if len(unique) == 1 else "primary_metric"


def curves(results: list[dict[str, Any]], metric: str | None, sweep_dir: Path,
           links: list[str] | None = None
           ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per label: rounds, mean and std of ``metric`` (None: the label's primary metric) over
    seeds, mean cumulative bytes (on ``links``; None: all).

    Only rounds every seed evaluated are kept, so each point averages all seeds.
    """
    out = {}
    for label, runs in by_label(results).items():
        key = metric_of(runs[0], metric)
        per_seed: list[dict[int, tuple[float, float]]] = []
        for r in runs:
            path = sweep_dir / r["run_dir"] / "metrics.jsonl"
            if not path.exists():
                continue
            pts = {}
            for line in path.read_text().splitlines():
                rec = json.loads(line) if line.strip() else {}
                v = rec.get(key)
                if isinstance(v, int | float) and math.isfinite(v):
                    b = sum(rec.get(k, 0) for k in link_keys(links))
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


def _metrics_by_label(results: list[dict[str, Any]], metric: str | None) -> dict[str, str]:
    return {label: metric_of(runs[0], metric) for label, runs in by_label(results).items()}


def _names_by_label(results: list[dict[str, Any]], metric: str | None) -> dict[str, str]:
    """What each configuration's plotted metric is called: its strategy's name for its
    primary metric, or the metric's."""
    return {label: (primary_from(runs[0]).label if metric in (None, PRIMARY)
                    else metric_label(metric)) for label, runs in by_label(results).items()}


def _axis_label(metrics: dict[str, str]) -> tuple[str, bool]:
    """The y label of plots of these labels' metrics, and whether it is one metric."""
    kinds = set(metrics.values())
    if len(kinds) == 1:
        return metric_label(kinds.pop()), True
    if all(is_accuracy(m) for m in kinds):
        return "accuracy (primary metric)", False
    return "primary metric", False


def plot(results: list[dict[str, Any]], metric: str | None, sweep_dir: Path, out_dir: Path,
         title: str, logy: bool = False, facet_by: str | None = None,
         links: list[str] | None = None, log_bytes: bool = False) -> list[Path]:
    """``<stem>_vs_round.png`` and ``<stem>_vs_bytes.png`` (bytes on ``links``, None: all;
    a log axis with ``log_bytes``): mean ± std over seeds per configuration, at most 8
    curves a panel, one panel group per value of the parameter ``facet_by``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(results, metric, sweep_dir, links)
    groups = by_label(results)
    metrics = _metrics_by_label(results, metric)
    names = _names_by_label(results, metric)
    ylabel, single = _axis_label({k: metrics[k] for k in data} or metrics)
    stem = plot_stem(list(metrics.values()))
    facet_of = ({label: f"{facet_by} = {groups[label][0]['params'].get(facet_by)}"
                 for label in data} if facet_by else None)
    panels = facet(list(data), facet_of)
    paths = []
    for xname, fname in (("round", f"{stem}_vs_round.png"), ("bytes", f"{stem}_vs_bytes.png")):
        fig, axes = panel_grid(len(panels), width=9.0 if len(panels) == 1 else 6.0)
        for ax, (ptitle, labels) in zip(axes, panels, strict=False):
            for label in labels:
                rounds, mean, std, nbytes = data[label]
                x = rounds if xname == "round" else nbytes / MIB
                if log_bytes and xname == "bytes":  # nothing sent yet: not on a log axis
                    x, mean, std = x[x > 0], mean[x > 0], std[x > 0]
                name = label if single else f"{label}: {names[label]}"
                line, = ax.plot(x, mean, label=name)
                lo, hi = clip_band(metrics[label], mean, std)
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
            ax.set(xlabel="round" if xname == "round" else
                   f"cumulative MiB sent ({links_text(links)})",
                   ylabel=ylabel, title=ptitle, yscale="log" if logy else "linear",
                   xscale="log" if log_bytes and xname == "bytes" else "linear")
            if xname == "round":
                integer_rounds(ax)
            ax.grid(alpha=0.3)
            if labels:
                legend_below(ax)
        fig.suptitle(f"{title}: {ylabel}, mean ± std over seeds")
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=100, bbox_inches="tight")  # the legends below the panels
        plt.close(fig)
        paths.append(path)
    return paths


def final_plot(results: list[dict[str, Any]], metric: str | None, out_dir: Path, title: str,
               log: bool = False) -> Path:
    """``final_<stem>.png``: the final metric per configuration, mean with ± std error bars
    over seeds (clipped to the metric's range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = _metrics_by_label(results, metric)
    named = _names_by_label(results, metric)
    xlabel, single = _axis_label(metrics)
    names, means, stds, kinds = [], [], [], []
    for label, runs in by_label(results).items():
        m = metrics[label]
        vals = [r["final"][m] for r in runs if r["final"].get(m) is not None]
        if not vals:
            continue
        mean, std = mean_std(vals)
        names.append(label if single else f"{label}: {named[label]}")
        means.append(mean)
        stds.append(std)
        kinds.append(m)
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.32 * len(names) + 1.4)))
    # one clipping range for all bars: that of the metrics' kind
    final_bars(ax, names, means, stds, kinds[0] if len(set(kinds)) == 1 or all(
        is_accuracy(k) for k in kinds) else "", f"final {xlabel} (mean ± std over seeds)", log)
    ax.set_title(f"{title}: final {xlabel}")
    fig.tight_layout()
    path = out_dir / f"final_{plot_stem(list(metrics.values()))}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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


def primary_table(results: list[dict[str, Any]], extra: list[str],
                  links: list[str] | None = None) -> str:
    """One line per configuration: its own primary metric (final and best, mean ± std over
    seeds), the metrics shown next to it (its companions, then ``extra``), MiB, messages."""
    groups = by_label(results)
    prim = {label: primary_from(runs[0]) for label, runs in groups.items()}
    shown = list(dict.fromkeys([c for p in prim.values() for c in p.companions] + extra))
    head = ["configuration", "seeds", "primary metric", "final", "best",
            *[f"final {m}" for m in shown], "MiB sent", "messages"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table_rows(results, list(dict.fromkeys(
            [p.metric for p in prim.values()] + shown)), links):
        p = prim[row.label]
        cells = [row.label, str(len(row.seeds)), f"{p.label} (`{p.metric}`)",
                 _pm(row.final.get(p.metric)), _pm(row.best.get(p.metric)),
                 *[_pm(row.final.get(m)) for m in shown], _pm(row.mib, 2),
                 f"{row.messages[0]:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(results: list[dict[str, Any]], base_dir: Path, out_dir: Path, spec: dict[str, Any],
           intro: str) -> Path:
    """report.md and the plots of ``results`` (run folders relative to ``base_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = spec.get("report", {})
    metric = rep.get("metric") if rep.get("metric") != PRIMARY else None
    name = spec.get("name", base_dir.name)
    choices = rep.get("choose") or []
    choices = [choices] if isinstance(choices, dict) else list(choices)
    plotted = results
    if rep.get("plot") == "chosen" and choices:  # curves of the tuned runs only
        ch = choices[0]
        picked = choose(results, ch["among"], ch["per"], ch["metric"],
                        bool(ch.get("maximize", True)))
        plotted = [r for key, best, _, _ in picked
                   for r in chosen_runs(results, ch["among"], ch["per"], key, best)]
    logy = bool(rep.get("log-y", False))
    links = rep.get("links")
    links = None if links is None else [links] if isinstance(links, str) else list(links)
    link_keys(links)  # an unknown link fails here, before anything is written
    plots = plot(plotted, metric, base_dir, out_dir, name, logy, rep.get("facet"), links,
                 bool(rep.get("log-bytes", False)))
    plots.append(final_plot(plotted, metric, out_dir, name, logy))
    timed = timelines(plotted, lambda r: metric_of(r, metric), base_dir)
    if timed:  # runs on the virtual clock: the metric vs simulated time too
        plots.append(time_plot(timed, metric_of(plotted[0], metric), out_dir, name,
                               plot_stem(list(_metrics_by_label(plotted, metric).values())),
                               rep.get("time-horizon-s")))
    parts = [f"# {name}", ""]
    if spec.get("description"):
        parts += [spec["description"].strip(), ""]
    parts += [intro + " Mean ± std over seeds (sample std). `final` = last round, `best` = "
              f"best round; MiB and messages from the communication ledger ({links_text(links)} "
              "for MiB, all links for messages; whole run).", ""]
    extra = list(rep.get("extra-metrics", []))
    prims = list(dict.fromkeys(primary_from(runs[0]) for runs in by_label(results).values()))
    if metric is None and len(prims) > 1:
        parts += ["Each configuration is judged by its strategy's primary metric (column "
                  "`primary metric`), the one its runs' console, summary.json and curves "
                  "show.", "", primary_table(results, extra, links), ""]
    else:
        if metric is None:  # one primary metric for all: a column per metric
            metric = prims[0].metric if prims else "test_accuracy"
            extra = [*prims[0].companions, *extra] if prims else extra
            if prims:
                parts += [f"Judged by {prims[0].label} (`{metric}`).", ""]
        metrics = list(dict.fromkeys([metric, *extra]))
        parts += [markdown_table(table_rows(results, metrics, links), metrics), ""]
    theory = _theory(spec, rep.get("theory"))
    for ch in choices:
        maximize_ = bool(ch.get("maximize", True))
        per = ch["per"]
        per_text = per if isinstance(per, str) else " and ".join(per)
        rows_ch = choose(results, ch["among"], per, ch["metric"], maximize_)
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
                  f"The value of {ch['among']} with the {'highest' if maximize_ else 'lowest'} "
                  f"final {ch['metric']} (mean over seeds), for each {per_text}.", "",
                  choice_table(rows_ch, ch["among"], per, ch["metric"],
                               shown if ch.get("show") or theory else None), ""]
    if timed and ("time-target" in rep or "time-horizon-s" in rep):
        parts += ["## On simulated time", "",
                  "Each seed's metric at simulated time t is its last evaluation at or before "
                  "t. Time to target: the first evaluation that reaches it (mean ± std over "
                  "the seeds that did). Jitter: the mean absolute change of the metric "
                  "between consecutive points of a grid over the second half of the horizon "
                  "(lower = more stable).", "",
                  time_table(timed, metric_of(plotted[0], metric), rep), ""]
    sc = rep.get("scaling")
    if sc and choices:
        ch = choices[0]
        plots.append(scaling_plot(results, ch, sc["x"], ch["metric"],
                                  bool(ch.get("maximize", True)), out_dir, name, theory))
    parts += [f"![{p.stem}]({p.name})" for p in plots]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def write_report(sweep_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Write the report of a sweep folder; returns the path of ``report.md``."""
    sweep_dir = Path(sweep_dir)
    spec = load_spec(sweep_dir)
    results = load_results(sweep_dir)
    if out_dir is None:
        out_dir = spec.get("report_dir") or sweep_dir / "report"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sweep_dir / "results.jsonl", out_dir / "results.jsonl")
    name = spec.get("name", sweep_dir.name)
    return render(results, sweep_dir, out_dir, {"name": name, **spec},
                  f"{len(results)} runs, W&B group `{spec.get('group', name)}`.")


# run-config keys that say where and how a run was recorded, not what was run
BOOKKEEPING = ("seed", "engine", "workers", "output-dir", "run-name", "tracking", "wandb",
               "wandb-project", "wandb-group", "checkpoint-every", "resume-from", "progress",
               "models-memory-gib", "vmap")


def run_folders(paths: list[Path]) -> list[Path]:
    """Each path is a run folder (it has summary.json) or a folder of run folders."""
    out: list[Path] = []
    for p in paths:
        if (p / "summary.json").exists():
            out.append(p)
        elif p.is_dir():
            out += sorted(q for q in p.iterdir() if (q / "summary.json").exists())
        else:
            raise FileNotFoundError(f"{p}: no such run folder")
    if not out:
        raise FileNotFoundError("no run folder (with summary.json) in "
                                + ", ".join(map(str, paths)))
    return list(dict.fromkeys(p.resolve() for p in out))


def runs_results(paths: list[Path]) -> tuple[list[dict[str, Any]], list[Path]]:
    """results.jsonl lines of the completed runs among ``paths`` (see :func:`run_folders`),
    and the run folders left out (not completed). Runs whose configurations differ only by
    seed (and bookkeeping) share a label: the run-config keys that differ between
    configurations, or the strategy when there is one configuration."""
    from flowerbed.run.runner import FINISHED
    from flowerbed.tools.sweep import RunSpec, read_summary, result_line

    done, left = [], []
    for d in run_folders(paths):
        s = read_summary(d)
        (done if s is not None and s.get("status") in FINISHED else left).append((d, s))
    idents = [{k: v for k, v in (s or {}).get("config", {}).items() if k not in BOOKKEEPING}
              for _, s in done]
    keys = list(dict.fromkeys(k for i in idents for k in i))
    varying = [k for k in keys if len({json.dumps(i.get(k), default=str) for i in idents}) > 1]
    lines = []
    for (d, s), ident in zip(done, idents, strict=True):
        assert s is not None
        label = (", ".join(f"{k}={ident.get(k)}" for k in varying)
                 or str(ident.get("strategy", d.name)))
        spec = RunSpec(name=d.name, label=label, params={k: ident.get(k) for k in varying},
                       seed=int(s["config"].get("seed", 0)), overrides=s["config"],
                       config=label)
        lines.append({**result_line(spec, s, d), "run_dir": str(d)})
    return lines, [d for d, _ in left]


def write_runs_report(paths: list[Path | str], out_dir: Path | str = "report") -> Path:
    """The report of any run folders (ad-hoc runs, not only a sweep's): the table of each
    configuration's final primary metric (mean ± std over seeds) and the plots, in
    ``out_dir``; returns the path of ``report.md``."""
    results, left = runs_results([Path(p) for p in paths])
    if not results:
        raise FileNotFoundError(f"no completed run among {', '.join(map(str, left))}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.jsonl").write_text(
        "".join(json.dumps(r, default=float) + "\n" for r in results))
    intro = f"{len(results)} runs in {len(by_label(results))} configurations."
    if left:
        intro += f" Not completed, left out: {', '.join(d.name for d in left)}."
    return render(results, Path("."), out_dir, {"name": "report"}, intro)


__all__ = ["Row", "choice_table", "choose", "chosen_runs", "curves", "final_plot",
           "markdown_table", "mean_std", "metric_of", "plot", "plot_stem", "primary_table",
           "runs_results", "scaling_plot", "table_rows", "write_report", "write_runs_report"]
