"""Sweeps: a grid of run configs x seeds from one TOML file, resumable, one W&B group.

A sweep file::

    name = "lr-vs-alpha"              # default: the file's stem
    output = "outputs/sweeps/lr-vs-alpha"  # sweep folder (relative to the file's folder)
    wandb-group = "lr-vs-alpha"       # default: name
    seeds = [0, 1, 2]
    engine = "inprocess"              # or "flower" (flwr run on a private SuperLink)
    threads = 1                       # torch threads for in-process runs

    [base]                            # run-config keys shared by every run
    num-server-rounds = 20

    [grid]                            # every combination of these lists
    lr = [0.05, 0.1]

    [[configs]]                       # optional variants; list values expand too
    label = "FedAvg"                  # the name reports use (default: the parameters)
    strategy = "fedavg"

Runs = sum over variants of (product of the variant's lists) x (product of the grid's lists)
x seeds. Each run gets a deterministic name from its varying parameters, so a rerun of the
same file skips every run whose ``summary.json`` says ``completed`` and redoes the others
from scratch. ``results.jsonl`` (one line per finished run) is rebuilt after every run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from flowerbed.core.errors import ConfigError
from flowerbed.run.config import RunConfig, parse_run_config
from flowerbed.run.lock import FolderLock
from flowerbed.run.runner import FINISHED

log = logging.getLogger(__name__)

SWEEP_KEYS = ("name", "output", "wandb-group", "seeds", "engine", "threads", "base", "grid",
              "configs", "report", "report-dir", "runner", "description")
RESULTS = "results.jsonl"
SPEC = "sweep.json"


class SweepError(ValueError):
    """A sweep file that cannot work; the message names the file and the problem."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its name, the configuration it belongs to, its seed."""

    name: str
    label: str  # the configuration (without the seed): what reports group by
    params: dict[str, Any]  # the varying parameters (variant + grid), not the base
    seed: int
    overrides: dict[str, Any]  # the full run-config overrides of this run
    config: str = ""  # the variant's own label (without its varying parameters)


@dataclass
class Sweep:
    """A parsed sweep file."""

    name: str
    folder: Path
    group: str
    seeds: list[int]
    engine: str = "inprocess"
    threads: int = 1
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    configs: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    report: dict[str, Any] = field(default_factory=dict)
    report_dir: Path | None = None
    description: str = ""

    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"

    def runs(self) -> list[RunSpec]:
        return list(expand(self))

    def spec(self) -> dict[str, Any]:
        """JSON-able description stored in the sweep folder (reports read it)."""
        return {"name": self.name, "group": self.group, "seeds": self.seeds,
                "engine": self.engine, "base": self.base, "grid": self.grid,
                "configs": self.configs, "report": self.report,
                "report_dir": str(self.report_dir) if self.report_dir else None,
                "description": self.description}


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list) else [v]


def load_sweep(path: Path | str, output: Path | str | None = None) -> Sweep:
    """Parse a sweep TOML file; ``output`` overrides its ``output`` folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SweepError(f"{path}: {err}") from err
    return sweep_from_dict(raw, path.stem, path.parent, output)


def sweep_from_dict(raw: dict[str, Any], default_name: str, base_dir: Path,
                    output: Path | str | None = None) -> Sweep:
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(f"unknown sweep keys {unknown}; allowed: {', '.join(SWEEP_KEYS)}")
    name = str(raw.get("name", default_name))
    folder = Path(output) if output is not None else base_dir / raw.get(
        "output", f"outputs/sweeps/{name}")
    seeds = [int(s) for s in _as_list(raw.get("seeds", [0]))]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SweepError(f"sweep {name}: seeds must be distinct and non-empty, got {seeds}")
    engine = str(raw.get("engine", "inprocess"))
    if engine not in ("inprocess", "flower"):
        raise SweepError(f"sweep {name}: engine = {engine!r}; must be 'inprocess' or 'flower'")
    base = dict(raw.get("base", {}))
    grid = {k: _as_list(v) for k, v in raw.get("grid", {}).items()}
    configs = [dict(c) for c in raw.get("configs", [{}])] or [{}]
    for table, keys in [("base", base), ("grid", grid), *(("configs", c) for c in configs)]:
        for k in set(keys) & {"seed", "run-name", "output-dir"}:
            raise SweepError(f"sweep {name}: [{table}] may not set {k!r}; the sweep sets it")
    for k, v in base.items():
        if isinstance(v, list):
            raise SweepError(f"sweep {name}: [base] {k} is a list; put it in [grid]")
    report_dir = raw.get("report-dir")
    return Sweep(name=name, folder=folder.resolve(), group=str(raw.get("wandb-group", name)),
                 seeds=seeds, engine=engine, threads=int(raw.get("threads", 1)), base=base,
                 grid=grid, configs=configs, report=dict(raw.get("report", {})),
                 report_dir=(base_dir / report_dir).resolve() if report_dir else None,
                 description=str(raw.get("description", "")))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def run_name(params: dict[str, Any], seed: int) -> str:
    """Deterministic, filesystem-safe name from the varying parameters and the seed."""
    parts = [f"{k}={_fmt(v)}" for k, v in params.items()] + [f"seed={seed}"]
    name = re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", ",".join(parts))
    if len(name) > 120:  # keep paths short; the hash keeps names distinct
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[:100]}~{digest}"
    return name


def expand(sweep: Sweep) -> Iterator[RunSpec]:
    """Every run: variants x grid x seeds, in that (deterministic) order."""
    grid_keys = list(sweep.grid)
    for variant in sweep.configs:
        label_given = variant.get("label")
        fields = {k: _as_list(v) for k, v in variant.items() if k != "label"}
        vkeys = list(fields)
        for vvals in itertools.product(*(fields[k] for k in vkeys)):
            for gvals in itertools.product(*(sweep.grid[k] for k in grid_keys)):
                params = dict(zip(vkeys, vvals, strict=True))
                params.update(zip(grid_keys, gvals, strict=True))
                label = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or sweep.name
                if label_given:
                    varying = {k: v for k, v in params.items()
                               if len(fields.get(k, sweep.grid.get(k, [0]))) > 1}
                    label = str(label_given) + (
                        " (" + ", ".join(f"{k}={_fmt(v)}" for k, v in varying.items()) + ")"
                        if varying else "")
                for seed in sweep.seeds:
                    name = run_name(params, seed)
                    overrides = {"engine": sweep.engine, "progress": False, **sweep.base,
                                 **params, "seed": seed, "run-name": name,
                                 "output-dir": str(sweep.runs_dir),
                                 "wandb-group": sweep.group}
                    yield RunSpec(name, label, params, seed, overrides,
                                  str(label_given) if label_given else label)


def validate(sweep: Sweep) -> list[RunConfig]:
    """Parse every run's config (fails on the first bad one, naming the run)."""
    cfgs = []
    for spec in sweep.runs():
        try:
            cfgs.append(parse_run_config(spec.overrides))
        except ConfigError as err:
            raise SweepError(f"sweep {sweep.name}, run {spec.name}: {err}") from err
    names = [s.name for s in sweep.runs()]
    if len(set(names)) != len(names):
        raise SweepError(f"sweep {sweep.name}: two runs share a name (duplicate grid values?)")
    return cfgs


# --- state of a sweep folder ------------------------------------------------------------------


# choices a strategy logs (teleportation-tuned's k): kept in results.jsonl like metrics
LOGGED_CHOICES = ("chosen_k",)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(run_dir: Path) -> bool:
    s = read_summary(run_dir)
    return s is not None and s.get("status") in FINISHED


def result_line(spec: RunSpec, summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """One results.jsonl line: parameters, seed, final/best metrics, totals."""
    totals = dict(summary.get("totals", {}))
    totals["bytes"] = sum(int(totals.get(k, 0)) for k in
                          ("cum_bytes_down", "cum_bytes_up", "cum_bytes_p2p"))
    final, best = dict(summary.get("final", {})), dict(summary.get("best", {}))
    # every accuracy (best = max) and loss (best = min) per round, e.g. per-node accuracy
    extra: dict[str, list[float]] = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            rec = json.loads(line) if line.strip() else {}
            for k, v in rec.items():
                if ("accuracy" in k or "loss" in k or k.endswith("_acc")
                        or k in LOGGED_CHOICES) and isinstance(
                        v, int | float) and not k.endswith("_std"):
                    extra.setdefault(k, []).append(float(v))
    for k, vals in extra.items():
        final.setdefault(k, vals[-1])
        best.setdefault(k, min(vals) if "loss" in k else max(vals))
    return {"run": spec.name, "label": spec.label, "config": spec.config,
            "params": spec.params, "seed": spec.seed,
            "status": summary.get("status"), "wall_time_s": summary.get("wall_time_s"),
            "rounds": summary.get("rounds_completed"), "final": final, "best": best,
            "totals": totals, "primary": summary.get("primary"),
            "run_dir": f"runs/{spec.name}"}  # relative to the sweep folder


def write_results(sweep: Sweep) -> Path:
    """Rebuild results.jsonl from the finished runs, in sweep order (idempotent)."""
    lines = []
    for spec in sweep.runs():
        run_dir = sweep.runs_dir / spec.name
        s = read_summary(run_dir)
        if s is not None and s.get("status") in FINISHED:
            lines.append(json.dumps(result_line(spec, s, run_dir), default=float))
    path = sweep.folder / RESULTS
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(x + "\n" for x in lines))
    tmp.replace(path)
    return path


# --- running ----------------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A plain-text progress bar over runs, one line per event (works in logs and CI)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24) -> None:
        self.total, self.width = total, width
        self.stream = stream or sys.stderr
        self.done = self.skipped = self.failed = 0
        self.t0 = time.monotonic()
        self.ran_time = 0.0

    def line(self, note: str) -> str:
        n = self.done + self.skipped + self.failed
        filled = round(self.width * n / max(self.total, 1))
        ran = self.done + self.failed
        left = self.total - n
        eta = self.ran_time / ran * left if ran else 0.0
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {n}/{self.total} runs"
                f" | done {self.done} skipped {self.skipped} failed {self.failed}"
                f" | elapsed {_fmt_time(time.monotonic() - self.t0)} eta {_fmt_time(eta)}"
                f" | {note}")

    def show(self, note: str) -> None:
        self.stream.write(self.line(note) + "\n")
        self.stream.flush()


RunFn = Callable[[RunConfig], None]


def run_inprocess(cfg: RunConfig) -> None:
    from flowerbed.run.runner import run_experiment

    run_experiment(cfg)


class FlowerRunner:
    """Runs each config with ``flwr run`` on one private SuperLink kept for the sweep."""

    def __init__(self, app_dir: Path, flwr_home: Path, supernodes: int = 2) -> None:
        self.app_dir, self.flwr_home, self.supernodes = app_dir, flwr_home, supernodes
        self.link: Any = None

    def __enter__(self) -> FlowerRunner:
        from flowerbed.tools.superlink import LocalSuperLink

        self.link = LocalSuperLink(self.flwr_home, cwd=self.app_dir).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.__exit__(*exc)

    def __call__(self, cfg: RunConfig) -> None:
        outcome = self.link.run_app(
            self.app_dir, cfg.for_flower(),
            [f"num-supernodes={self.supernodes} client-resources-num-cpus=1"])
        if outcome.run_id is None:
            raise RuntimeError(f"flwr run did not start: {outcome.output[-4000:]}")
        if not outcome.completed:
            raise RuntimeError(f"flwr run {outcome.run_id} ended with {outcome.status}: "
                               f"{outcome.details}")


def run_sweep(sweep: Sweep, run_fn: RunFn | None = None, stream: TextIO | None = None,
              only: Callable[[RunSpec], bool] | None = None) -> Path:
    """Run every unfinished run of ``sweep`` (or those ``only`` selects); returns results.jsonl.

    A run whose folder exists without a completed summary (interrupted, failed) is deleted
    and run again from scratch; a failed run is logged and the sweep goes on. The sweep holds
    its folder's lock throughout: a second sweep of the same folder is refused (FolderBusy).
    """
    cfgs = validate(sweep)
    with FolderLock(sweep.folder, "output"):
        return _run_sweep(sweep, cfgs, run_fn, stream, only)


def finished_runs(sweep: Sweep) -> int:
    """How many of the sweep's runs are finished (completed) in its folder."""
    return sum(is_finished(sweep.runs_dir / spec.name) for spec in sweep.runs())


def _run_sweep(sweep: Sweep, cfgs: list[RunConfig], run_fn: RunFn | None,
               stream: TextIO | None, only: Callable[[RunSpec], bool] | None) -> Path:
    import torch

    specs = sweep.runs()
    sweep.runs_dir.mkdir(parents=True, exist_ok=True)
    (sweep.folder / SPEC).write_text(json.dumps(sweep.spec(), indent=2, default=str))
    fn = run_fn or run_inprocess
    progress = Progress(len(specs), stream)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, sweep.threads))
    try:
        for spec, cfg in zip(specs, cfgs, strict=True):
            run_dir = sweep.runs_dir / spec.name
            if is_finished(run_dir) or (only is not None and not only(spec)):
                progress.skipped += 1
                progress.show(f"skip {spec.name}")
                continue
            if run_dir.exists():
                shutil.rmtree(run_dir)  # a partial run: start it again
            progress.show(f"run  {spec.name}")
            t0 = time.monotonic()
            try:
                fn(cfg)
            except Exception as err:
                progress.failed += 1
                log.error("sweep %s: run %s failed: %s", sweep.name, spec.name, err)
            else:
                progress.done += 1
            progress.ran_time += time.monotonic() - t0
            write_results(sweep)
        progress.show("finished")
    finally:
        torch.set_num_threads(threads)
    return write_results(sweep)


__all__ = ["RunSpec", "Sweep", "SweepError", "expand", "finished_runs", "load_sweep",
           "run_sweep", "validate", "write_results"]
