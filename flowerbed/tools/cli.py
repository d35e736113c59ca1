"""``flowerbed``: the command line around ``flwr run``.

``flowerbed run`` validates the run config before any run starts (exit 2 with the key,
value and what is allowed) while its own local SuperLink, with runtime dependency
installation off, starts beside it; then it streams ``flwr run . --stream``, checks the
run's final status (``flwr run`` itself exits 0 even when the ServerApp fails) and stops the
SuperLink it started.
The console shows flowerbed's own lines only (``-v``: everything, ``-q``: errors and the
final line); every run folder keeps the full log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowerbed.core.errors import ConfigError
from flowerbed.run.logging_setup import NORMAL, QUIET, VERBOSE, set_verbosity, verbosity

if TYPE_CHECKING:  # flowerbed.run.config imports torch: only where a command needs it
    from flowerbed.clients.data import FederatedData
    from flowerbed.run.config import RunConfig
    from flowerbed.tools.superlink import LocalSuperLink


def app_config(app_dir: Path) -> dict[str, Any]:
    """``[tool.flwr.app.config]`` of the app's pyproject.toml."""
    data = tomllib.loads((app_dir / "pyproject.toml").read_text())
    return dict(data.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {}))


def overrides(run_config: list[str] | None) -> dict[str, Any]:
    """The ``-c`` arguments, in order (later wins): run-config files (``*.toml``) and
    ``'key=value ...'`` pairs with TOML values, as for ``flwr run --run-config``."""
    from flwr.common.config import parse_config_args

    out: dict[str, Any] = {}
    for arg in run_config or []:
        if arg.endswith(".toml"):
            try:
                out.update(tomllib.loads(Path(arg).expanduser().read_text()))
            except (OSError, tomllib.TOMLDecodeError) as err:
                raise ConfigError("--run-config", arg, f"cannot read this run-config file "
                                  f"({err})") from None
            continue
        try:
            out.update(parse_config_args([arg]))
        except Exception as err:  # flwr raises ValueError/ClickException on bad syntax
            raise ConfigError("--run-config", arg,
                              f"must be 'key=value' pairs with TOML values ({err})") from None
    return out


def resolve_config(app_dir: Path, run_config: list[str] | None) -> RunConfig:
    from flowerbed.run.config import check_paths, parse_run_config

    raw = app_config(app_dir)
    raw.update(overrides(run_config))
    cfg = parse_run_config(raw)
    check_paths(cfg, app_dir)  # what the run folder needs, relative to the app as in cmd_run
    return cfg


def preflight(cfg: RunConfig) -> FederatedData:
    """Build the data and the model once here, so that mistakes only visible then (a CNN
    on tabular data, clients left without examples) fail before Flower starts."""
    import numpy as np
    import torch

    from flowerbed.clients.data import load_federation
    from flowerbed.clients.models import build_model

    data = load_federation(cfg)
    model = build_model(cfg, data.input_shape, data.num_classes)
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(np.asarray(data.test_x[:2], np.float32)))
    except RuntimeError as err:
        raise ConfigError("model", cfg.model, f"does not fit the data of shape "
                          f"{data.input_shape}: {err}") from None
    if tuple(out.shape) != (min(2, len(data.test_y)), data.num_classes):
        raise ConfigError("model", cfg.model, f"outputs {tuple(out.shape[1:])} per example, "
                          f"the data has {data.num_classes} classes")
    return data


def _fail(err: Exception, code: int = 2) -> int:
    print(f"flowerbed: error: {err}", file=sys.stderr)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = resolve_config(Path(args.app).resolve(), args.run_config)
        data = preflight(cfg)
    except ConfigError as err:
        return _fail(err)
    print(f"run config OK: strategy={cfg.strategy} dataset={cfg.dataset} "
          f"clients={cfg.num_clients} rounds={cfg.num_server_rounds} engine={cfg.engine}")
    if verbosity() > QUIET:
        print(f"data: {data.describe()}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from flowerbed.run.config import describe, pyproject_section, strategy_keys

    if args.pyproject:
        print(pyproject_section(), end="")
        return 0
    if args.strategy:
        try:
            keys = strategy_keys(args.strategy)
        except ConfigError as err:
            return _fail(err)
        print(f"parameters of strategy {args.strategy} (set them like any key; through "
              "plain flwr run, a plug-in's own ones go into strategy-params):\n")
        print(describe(keys))
        return 0
    print(describe())
    return 0


@contextlib.contextmanager
def shared_data_cache(flwr_home: Path) -> Iterator[None]:
    """The data this process builds, stored for the ServerApp and the workers to load
    (the variable reaches them through the SuperLink's environment); deleted after."""
    from flowerbed.clients.data_cache import ENV

    folder = flwr_home / "data-cache" / uuid.uuid4().hex
    previous = os.environ.get(ENV)
    os.environ[ENV] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)


def cmd_run(args: argparse.Namespace) -> int:
    app_dir = Path(args.app).resolve()
    with shared_data_cache(flwr_home_of(app_dir)):
        return _run_on_flower(args, app_dir)


def _run_on_flower(args: argparse.Namespace, app_dir: Path) -> int:
    from flowerbed.tools.early_start import start_in_background
    from flowerbed.tools.superlink import LocalSuperLink

    # the SuperLink (seconds to start) starts first, in a process of its own, while this one
    # imports the config's modules (torch: seconds too) and builds the data and the model
    # once (preflight); if the config does not fit, it is stopped before the error shows
    link = LocalSuperLink(flwr_home_of(app_dir), cwd=app_dir)
    starting = start_in_background(link.start)
    try:
        cfg = resolve_config(app_dir, args.run_config)
        preflight(cfg)
    except BaseException as err:
        code = _fail(err) if isinstance(err, ConfigError) else None  # shown first
        link.cancel_start()
        starting.wait(raise_error=False)
        link.stop()
        if code is None:
            raise
        return code
    out_dir = Path(cfg.output_dir).expanduser()
    if not out_dir.is_absolute():
        out_dir = app_dir / out_dir
    values = {**cfg.for_flower(), "output-dir": str(out_dir)}
    try:
        starting.wait()
    except BaseException:
        link.stop()
        raise
    return flwr_run(app_dir, values, args.federation_config or default_federation(cfg),
                    out_dir, link=link)


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a run from its folder's last checkpoint, with the config it was started with."""
    from flowerbed.run import checkpoint
    from flowerbed.run.config import parse_run_config
    from flowerbed.run.lock import check_free

    run_dir = Path(args.run_dir).resolve()
    try:
        raw = dict(checkpoint.load(run_dir)["config"])
        raw["resume-from"] = str(run_dir)
        if args.num_server_rounds:
            raw["num-server-rounds"] = args.num_server_rounds
        cfg = parse_run_config(raw)
        check_free(run_dir, "resume-from")  # another run or resume still writes there?
        checkpoint.open_resume(run_dir, cfg.as_dict())  # before anything starts
    except ConfigError as err:
        return _fail(err)
    if args.in_process:
        from flowerbed.run.logging_setup import setup_logging
        from flowerbed.run.runner import run_experiment

        setup_logging()
        try:
            result = run_experiment(cfg)
        except ConfigError as err:  # e.g. a writer that started since the check
            return _fail(err)
        print(f"flowerbed: resumed run completed; outputs in {result.run_dir}")
        return 0
    return flwr_run(Path(args.app).resolve(), cfg.for_flower(), args.federation_config,
                    run_dir)


def flwr_home_of(app_dir: Path) -> Path:
    return Path(os.environ.get("FLWR_HOME") or app_dir / ".flwr")


SMALL_RUN_CLIENTS = 100


def default_federation(cfg: RunConfig) -> list[str]:
    """One SuperNode per core; a small run (at most ``SMALL_RUN_CLIENTS`` virtual clients)
    gets one Ray worker process for them all: every worker costs seconds at start-up
    (Python, torch, Flower, the first batched step) on the cores the ServerApp needs then
    too, more than a second worker saves over a small run (the default run: round 1 took
    16 s with one worker, 23 s with two, later rounds 0.28 vs 0.25 s, 2 cores under load).
    ``--federation-config`` overrides it."""
    cores = os.cpu_count() or 2
    per_worker = cores if cfg.num_clients <= SMALL_RUN_CLIENTS else 1
    gpus = cfg["client-resources-num-gpus"]
    return [f"num-supernodes={cores} client-resources-num-cpus={per_worker}"
            + (f" client-resources-num-gpus={gpus}" if gpus else "")]


def flwr_run(app_dir: Path, values: dict[str, Any], federation_config: list[str] | None,
             out_dir: Path, link: LocalSuperLink | None = None) -> int:
    """``flwr run --stream`` on a private local SuperLink (``link`` if already started);
    non-zero unless it completed. The console shows the stream filtered; the whole of it
    is kept as ``flwr-run.log`` in the run folder. SIGINT/SIGTERM stop the run and the
    SuperLink, with one line saying so."""
    from flowerbed.tools.console_filter import FilteredEcho
    from flowerbed.tools.interrupt import StopRequested, stop_signals
    from flowerbed.tools.run_folder import keep_stream_log
    from flowerbed.tools.superlink import LocalSuperLink

    fed = federation_config or [
        f"num-supernodes={os.cpu_count() or 2} client-resources-num-cpus=1"]
    started = time.time()
    with stop_signals():
        try:
            if link is None:
                link = LocalSuperLink(flwr_home_of(app_dir), cwd=app_dir).start()
            stream_log = link.flwr_home / "run-logs" / f"{uuid.uuid4().hex}.log"
            try:
                outcome = link.run_app(app_dir, values, fed,
                                       echo=FilteredEcho(sys.stdout, verbosity()),
                                       log_path=stream_log)
            except StopRequested:
                link.stop_run()  # then the SuperLink goes, below
                raise
            finally:
                link.stop()
        except StopRequested as stop:
            what = (f"run {link.run_id}" if link is not None and link.run_id is not None
                    else "the run")
            print(f"flowerbed: {what} stopped ({signal.Signals(stop.signum).name}); its "
                  f"folder: {stopped_run_folder(out_dir, started)}", flush=True)
            return stop.exit_code
    run_dir = keep_stream_log(stream_log, outcome.output, out_dir)
    full_log = run_dir / "flwr-run.log" if run_dir else stream_log
    if outcome.run_id is None:
        return _fail(RuntimeError(f"flwr run did not start the run (output in {full_log})"), 1)
    if not outcome.completed:
        return _fail(RuntimeError(f"run {outcome.run_id} ended with status {outcome.status} "
                                  f"{outcome.details} (full log in {full_log})"), 1)
    print(f"flowerbed: run {outcome.run_id} completed; outputs in {run_dir or out_dir}",
          flush=True)
    return 0


def stopped_run_folder(out_dir: Path, since: float) -> Path:
    """The folder a stopped run wrote: ``out_dir`` itself (a resume), else its newest
    subfolder changed since the run started, else ``out_dir``."""
    if (out_dir / "metrics.jsonl").exists() or not out_dir.is_dir():
        return out_dir
    fresh = [d for d in out_dir.iterdir() if d.is_dir() and d.stat().st_mtime >= since - 1]
    return max(fresh, key=lambda d: d.stat().st_mtime, default=out_dir)


def cmd_sweep(args: argparse.Namespace) -> int:
    from flowerbed.tools.sweep import FlowerRunner, SweepError, load_sweep, run_sweep

    sweep = None
    try:
        sweep = load_sweep(args.file, args.output)
        if args.engine:
            sweep.engine = args.engine
        if sweep.engine == "flower":
            app = Path(args.app).resolve()
            with FlowerRunner(app, flwr_home_of(app)) as fr:
                results = run_sweep(sweep, fr, stream=progress_stream())
        else:
            results = run_sweep(sweep, stream=progress_stream())
    except (SweepError, ConfigError) as err:
        return _fail(err)
    except KeyboardInterrupt:
        if sweep is None:
            raise
        return sweep_interrupted(args, sweep)
    print(f"flowerbed: sweep {sweep.name}: results in {results}")
    finished = len(results.read_text().splitlines())
    if finished < len(sweep.runs()):
        return _fail(RuntimeError(f"{len(sweep.runs()) - finished} of {len(sweep.runs())} runs "
                                  "did not complete (see the log); rerun to retry them"), 1)
    if args.report:
        from flowerbed.tools.report import write_report

        print(f"flowerbed: report {write_report(sweep.folder)}")
    return 0


def progress_stream() -> Any:
    """Where a sweep's progress lines go: stderr, or nowhere with -q."""
    return open(os.devnull, "w") if verbosity() <= QUIET else None


def sweep_interrupted(args: argparse.Namespace, sweep: Any) -> int:
    """Ctrl-C of a sweep: one line with how far it got and how to go on (a rerun skips the
    finished runs and redoes the interrupted one); exit code 130, as a shell would."""
    import shlex

    from flowerbed.tools.sweep import finished_runs

    again = ["flowerbed", "sweep", args.file]
    for flag, value in (("--output", args.output), ("--engine", args.engine),
                        ("--app", args.app if args.app != "." else None)):
        if value:
            again += [flag, value]
    print(f"flowerbed: sweep {sweep.name} interrupted: {finished_runs(sweep)} of "
          f"{len(sweep.runs())} runs finished; rerun `{shlex.join(again)}` to continue",
          file=sys.stderr)
    return 130


def cmd_report(args: argparse.Namespace) -> int:
    """One sweep folder (it has results.jsonl): its report; otherwise run folders (or
    folders of them), grouped into configurations that differ only by seed."""
    from flowerbed.tools.report import write_report, write_runs_report

    paths = [Path(p) for p in args.paths]
    try:
        if len(paths) == 1 and (paths[0] / "results.jsonl").exists():
            path = write_report(paths[0], args.out)
        else:
            path = write_runs_report(paths, args.out or "report")
    except FileNotFoundError as err:
        return _fail(err)
    print(f"flowerbed: report {path}")
    print(f"flowerbed: table and plots in {path.parent}: "
          + ", ".join(sorted(p.name for p in path.parent.glob("*.png"))))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from flowerbed.tools.experiments import run_named_experiment
    from flowerbed.tools.sweep import SweepError

    try:
        path = run_named_experiment(args.name, Path(args.experiments), args.missing)
    except (SweepError, ConfigError, FileNotFoundError) as err:
        return _fail(err)
    print(f"flowerbed: report {path}")
    return 0


def add_verbosity_flags(p: argparse.ArgumentParser, top: bool = False) -> None:
    """-v / -q, before or after the command (``flowerbed -q run`` = ``flowerbed run -q``)."""
    g = p.add_mutually_exclusive_group()
    default = NORMAL if top else argparse.SUPPRESS
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE,
                   default=default, help="show everything, Flower's and Ray's output too")
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=QUIET,
                   default=default, help="show only errors and the final line")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowerbed", description=__doc__.split("\n\n")[0])
    add_verbosity_flags(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("app", nargs="?", default=".", help="the Flower app folder")
        sp.add_argument("-c", "--run-config", action="append",
                        help="a run-config file (*.toml) or 'key=value ...' overrides, as "
                        "for flwr run; repeat it to combine (later wins)")

    r = sub.add_parser("run", help="validate, then flwr run --stream on a private SuperLink")
    with_config(r)
    r.add_argument("--federation-config", action="append",
                   help="e.g. 'num-supernodes=4' (default: one per CPU core)")
    r.set_defaults(func=cmd_run)
    rs = sub.add_parser("resume", help="continue a run from its folder's last checkpoint")
    rs.add_argument("run_dir", help="the run folder (holds checkpoint.npz)")
    rs.add_argument("app", nargs="?", default=".", help="the Flower app folder")
    rs.add_argument("--num-server-rounds", type=int, default=0,
                    help="extend the run to this many rounds (default: as configured)")
    rs.add_argument("--in-process", action="store_true",
                    help="run the rest in this process, without Flower (engine inprocess)")
    rs.add_argument("--federation-config", action="append",
                    help="as for run (flwr path only)")
    rs.set_defaults(func=cmd_resume)
    c = sub.add_parser("check", help="validate the run config and exit")
    with_config(c)
    c.set_defaults(func=cmd_check)
    k = sub.add_parser("keys", help="print every run-config key with its default")
    k.add_argument("--strategy", help="only the parameters of this strategy (a registry "
                   "name or 'pkg.mod:Class'), plug-ins included")
    k.add_argument("--pyproject", action="store_true",
                   help="print the [tool.flwr.app.config] section pyproject.toml must hold")
    k.set_defaults(func=cmd_keys)
    sw = sub.add_parser("sweep", help="run a grid of configs x seeds from a TOML file "
                        "(resumes: finished runs are skipped)")
    sw.add_argument("file", help="the sweep TOML file")
    sw.add_argument("--output", help="sweep folder (default: the file's 'output')")
    sw.add_argument("--engine", choices=["inprocess", "flower"], help="override the engine")
    sw.add_argument("--app", default=".", help="the Flower app folder (engine 'flower')")
    sw.add_argument("--report", action="store_true", help="write the report afterwards")
    sw.set_defaults(func=cmd_sweep)
    rp = sub.add_parser("report", help="Markdown table and plots of a sweep folder or of any "
                        "run folders")
    rp.add_argument("paths", nargs="+", metavar="PATH",
                    help="a sweep folder, or run folders (or folders of run folders)")
    rp.add_argument("--out", help="report folder (default: the sweep's report-dir; for run "
                    "folders ./report)")
    rp.set_defaults(func=cmd_report)
    ex = sub.add_parser("experiment", help="run experiments/<name>.toml and write its report "
                        "into experiments/results/<name>/")
    ex.add_argument("name")
    ex.add_argument("--experiments", default="experiments", help="the experiments folder")
    ex.add_argument("--missing", action="store_true", help="robustness: run only the cells "
                    "its committed results lack (and the headline cells), keep the rest")
    ex.set_defaults(func=cmd_experiment)
    for sp in sub.choices.values():
        add_verbosity_flags(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_verbosity(args.verbosity)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
