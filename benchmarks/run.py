"""Run the whole benchmark in one invocation: ``python -m benchmarks.run``.

Each (system, workload) runs in a fresh process (clean start-up and memory figures);
this process samples the resident memory of that process and all its descendants
(SuperLink, ServerApp, Ray and its workers) every 0.2 s. Results go to
``benchmarks/results/latest.json`` and ``latest.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.workloads import config, prepare

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SYSTEM_NAMES = {
    "a": "vanilla Flower `flwr run`, one SuperNode per client",
    "b": "flowerbed `flwr run` (packed, 2 SuperNodes)",
    "c": "flowerbed in-process engine",
    "d": "tight sequential PyTorch loop",
    "e": "pfl-research 0.6 (in-process)",
    "f": "pure `torch.func.vmap` loop",
    "g": "`flowerbed run .` command, default config",
}
VANILLA_W1_ROUNDS = 2  # 1,000 SuperNodes: about a minute a round plus start-up


def plan() -> list[tuple[str, str, int, str]]:
    """(system, workload, rounds override (0 = the workload's), note)."""
    from flowerbed.strategies.registry import STRATEGIES

    runs: list[tuple[str, str, int, str]] = []
    runs += [(s, "W0", 0, "") for s in "fcdeba"]
    runs += [(s, "W1", 0, "") for s in "fcdeb"]
    runs.append(("a", "W1", VANILLA_W1_ROUNDS,
                 f"{VANILLA_W1_ROUNDS} rounds only (vanilla Flower at 1,000 SuperNodes is slow)"))
    for workload, strategy in (("W2", "dsgd"), ("W3-n1000", "teleportation"),
                               ("W3-n10000", "teleportation")):
        note = "" if strategy in STRATEGIES else f"not run: no strategy {strategy!r} in registry"
        runs += [(s, workload, 0, note) for s in "cb"]
    runs += [(s, "W4", 0, "") for s in "fcdeb"]
    runs.append(("c", "C10-1k", 0, "CIFAR-10-sized, 1,000 clients, memory"))
    runs.append(("b", "M10k", 0, "10,000 virtual clients, memory target"))
    runs.append(("g", "START", 0, "start-up of the default run (make run), its data kept "
                 "by an earlier run"))
    runs.append(("g", "START-COLD", 0, "the same, the config's first run (nothing kept)"))
    return runs


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def measure(system: str, workload: str, rounds: int, timeout: float) -> dict[str, Any]:
    prepare(workload)  # data written to disk once (W4, C10-1k), outside the measurement
    env = os.environ.copy()
    env["BENCH_T0"] = repr(time.time())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "benchmarks.systems", system, workload]
    if rounds:
        cmd += ["--rounds", str(rounds)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(ps))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in ps.children(recursive=True):
            child.kill()
        proc.kill()
        out, _ = proc.communicate()
        out += f"\nTIMEOUT after {timeout} s"
    stop.set()
    sampler.join()
    wall = time.time() - t0
    result: dict[str, Any] = {"system": system, "workload": workload, "total_wall_s": wall,
                              "peak_rss_gib": peak[0] / 2**30}
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if line is None or proc.returncode != 0:
        result["error"] = out[-3000:]
        return result
    result.update(json.loads(line.removeprefix("BENCH_RESULT ")))
    result["rounds_override"] = rounds
    return derive(result)


def derive(result: dict[str, Any]) -> dict[str, Any]:
    """Steady-state figures from the per-round wall times.

    ``steady_round_s`` is the median round after the first; ``best_round_s`` the fastest
    one: on a shared machine other people's jobs only ever slow a round down, so the
    fastest round is the least disturbed estimate of what the system itself costs.
    """
    cfg = config(result["workload"], **({"num-server-rounds": result["rounds_override"]}
                                        if result.get("rounds_override") else {}))
    per_round = {"teleportation": cfg.get("k-active", 0)}.get(
        cfg["strategy"], round(cfg["num-clients"] * cfg.get("fraction-train", 1.0)))
    times = result["round_times"]
    result["rounds"] = len(times)
    result["clients_per_round"] = per_round
    if len(times) > 1:
        steady = statistics.median(times[1:])
        result["steady_round_s"] = steady
        result["client_rounds_per_s"] = per_round / steady
        result["best_round_s"] = min(times[1:])
        result["best_client_rounds_per_s"] = per_round / result["best_round_s"]
        result["startup_s"] = result["round1_end_s"] - steady
    return result


def machine() -> dict[str, Any]:
    import flwr
    import torch

    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in
                   Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": psutil.virtual_memory().total / 2**30,
            "os": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "flwr": flwr.__version__,
            "torch_threads_per_process": 1, "load_average_at_start": os.getloadavg(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


def _get(results: list[dict[str, Any]], system: str, workload: str) -> dict[str, Any]:
    return next((r for r in results if r["system"] == system and r["workload"] == workload
                 and "error" not in r and not r.get("skipped")), {})


def ratios(results: list[dict[str, Any]], best: bool = False) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for every target of the performance issue.

    ``best``: from the fastest steady round of each measurement instead of the median.
    """
    rows: list[tuple[str, str, str]] = []
    rate, rnd = (("best_client_rounds_per_s", "best_round_s") if best
                 else ("client_rounds_per_s", "steady_round_s"))

    def cr(s: str, w: str) -> float | None:
        return _get(results, s, w).get(rate)

    def ratio(name: str, num: tuple[str, str], den: tuple[str, str], want: float) -> None:
        a, b = cr(*num), cr(*den)
        if a is None or b is None:
            rows.append((name, "not measured", "n/a"))
            return
        rows.append((name, f"{a / b:.2f}x ({rate_text(a)} / {rate_text(b)} client-rounds/s)",
                     "met" if a / b >= want else f"missed ({a / b / want:.0%} of target)"))

    ratio("W0: in-process >= 2x pfl-research", ("c", "W0"), ("e", "W0"), 2.0)
    ratio("W0: in-process >= 0.8x pure vmap", ("c", "W0"), ("f", "W0"), 0.8)
    ratio("W4: in-process >= 0.8x pure vmap", ("c", "W4"), ("f", "W4"), 0.8)
    ratio("W4: in-process >= 2x sequential loop", ("c", "W4"), ("d", "W4"), 2.0)
    ratio("W4: in-process >= 2x pfl-research", ("c", "W4"), ("e", "W4"), 2.0)
    ratio("W4: flwr run >= 0.7x in-process", ("b", "W4"), ("c", "W4"), 0.7)
    ratio("W1: flwr run >= 50x vanilla flwr run", ("b", "W1"), ("a", "W1"), 50.0)
    ratio("W1: flwr run >= 0.5x in-process", ("b", "W1"), ("c", "W1"), 0.5)
    b0, c0 = _get(results, "b", "W0"), _get(results, "c", "W0")
    if b0.get(rnd) and c0.get(rnd):
        d = b0[rnd] - c0[rnd]
        rows.append(("W0: flwr run round within 0.1 s of in-process",
                     f"{d:+.3f} s ({b0[rnd]:.3f} vs {c0[rnd]:.3f} s)",
                     "met" if d <= 0.1 else f"missed by {d - 0.1:.3f} s"))
    for s in "bc":
        t1, t10 = _get(results, s, "W3-n1000"), _get(results, s, "W3-n10000")
        if t1.get(rnd) and t10.get(rnd):
            q = t10[rnd] / t1[rnd]
            rows.append((f"W3 ({s}): round at n=10,000 within 1.2x of n=1,000",
                         f"{q:.2f}x ({t10[rnd]:.3f} / {t1[rnd]:.3f} s)",
                         "met" if q <= 1.2 else f"missed by {q - 1.2:.2f}x"))
        else:
            rows.append((f"W3 ({s}): round at n=10,000 within 1.2x of n=1,000",
                         "not measured", "n/a"))
    c10 = _get(results, "c", "C10-1k")
    if c10:
        rows.append(("CIFAR-10-sized run, 1,000 clients, in-process: peak RSS",
                     f"{c10['peak_rss_gib']:.2f} GiB", "stated (no target)"))
    m = _get(results, "b", "M10k")
    rows.append(("10,000-client FedAvg via flwr run: peak RSS < 8 GiB",
                 f"{m['peak_rss_gib']:.2f} GiB" if m else "not measured",
                 ("met" if m["peak_rss_gib"] < 8 else "missed") if m else "n/a"))
    accs = {s: _get(results, s, "W1").get("final_accuracy") for s in "bcde"}
    if all(v is not None for v in accs.values()):
        spread = (max(accs.values()) - min(accs.values())) * 100  # type: ignore[type-var]
        rows.append(("W1: pfl, raw loop and flowerbed same accuracy (+-1 point)",
                     ", ".join(f"{s}: {v:.4f}" for s, v in accs.items()),
                     "met" if spread <= 1.0 else f"missed (spread {spread:.2f} points)"))
    return rows


def rate_text(v: Any) -> str:
    """Client-rounds/s for the tables: whole numbers from 100, else 2 decimals (W4's large
    model trains about one client-round a second on a CPU core)."""
    if not isinstance(v, int | float):
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.2f}"


def _end_and_passes(info: dict[str, Any]) -> str:
    out = ""
    if info.get("load_average_at_end"):
        out += f", at the end {', '.join(f'{v:.1f}' for v in info['load_average_at_end'])}"
    if info.get("passes", 1) > 1:
        out += (f"; {info['passes']} interleaved passes, each row the pass with the fastest "
                "median round (peak RSS: the largest of all passes)")
    return out


def markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = ["# flowerbed benchmark: latest run", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']:.0f} GiB RAM, "
             f"{info['os']}; Python {info['python']}, torch {info['torch']}, flwr "
             f"{info['flwr']}; {info['torch_threads_per_process']} torch thread per process; "
             f"load average at start {', '.join(f'{v:.1f}' for v in info['load_average_at_start'])}"
             f" (the machine is shared){_end_and_passes(info)}; {info['date_utc']} UTC.", "",
             "| workload | system | client-rounds/s (median round) | (fastest round) "
             "| round s (median) | start-up s | total wall s | peak RSS GiB | final acc "
             "| rounds | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, int | float) else "-"

    for r in results:
        note = r.get("note", "")
        if r.get("passes_client_rounds_per_s"):
            note = (note + "; " if note else "") + "passes: " + ", ".join(
                rate_text(v) for v in r["passes_client_rounds_per_s"]) + " client-rounds/s"
        if r.get("round1_end_s") is not None and r["system"] == "g":
            note = (note + "; " if note else "") + (
                f"round 1 ends {r['round1_end_s']:.1f} s after the command starts; "
                f"{r.get('console_lines', '-')} console lines")
        if "error" in r:
            last = r["error"].strip().splitlines()[-1][:120]
            note = (note + "; " if note else "") + "FAILED: " + last
        lines.append(
            f"| {r['workload']} | ({r['system']}) {SYSTEM_NAMES[r['system']]} | "
            f"{rate_text(r.get('client_rounds_per_s'))} | "
            f"{rate_text(r.get('best_client_rounds_per_s'))} | "
            f"{f(r.get('steady_round_s'), '.3f')} | "
            f"{f(r.get('startup_s'), '.1f')} | {f(r.get('total_wall_s'), '.1f')} | "
            f"{f(r.get('peak_rss_gib'), '.2f')} | {f(r.get('final_accuracy'), '.4f')} | "
            f"{r.get('rounds', '-')} | {note} |")
    for best, title in ((False, "median rounds"), (True, "fastest rounds")):
        lines += ["", f"## Targets ({title})", "", "| target | measured | verdict |",
                  "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in ratios(results, best)]
    lines += ["", "Steady state = median (or fastest) of the per-round wall times after the "
              "first round; start-up = time from process launch to the end of round 1 minus "
              "one median "
              "round; peak RSS = largest sum of resident memory over the process and all its "
              "descendants (shared pages counted once per process, so an upper bound)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="run only these 'system:workload' pairs, e.g. c:W0")
    p.add_argument("--skip", nargs="*", default=[],
                   help="'system:workload' pairs not to run (reported as skipped)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the whole plan this many times, interleaved (pass after pass), "
                   "and keep each measurement's fastest pass (median round); the machine is "
                   "shared and other jobs only ever slow a run down")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--out-name", default="latest",
                   help="results file names, <out>/<name>.json and .md (a subset run with "
                   "--only should not replace latest: e.g. --only g:START --out-name startup)")
    p.add_argument("--report", action="store_true",
                   help="rebuild latest.md from latest.json without running anything")
    args = p.parse_args()
    if args.report:
        stored = json.loads((args.out / f"{args.out_name}.json").read_text())
        results = [derive(r) if "round_times" in r else r for r in stored["results"]]
        write(args.out, results, stored["machine"], args.out_name)
        return
    info = machine()
    passes: list[list[dict[str, Any]]] = []
    for n in range(max(args.repeat, 1)):
        results: list[dict[str, Any]] = []
        for system, workload, rounds, note in plan():
            if args.only and f"{system}:{workload}" not in args.only:
                continue
            if f"{system}:{workload}" in args.skip:
                note = "not run in this invocation (--skip)"
            if note.startswith("not run"):
                results.append({"system": system, "workload": workload, "skipped": True,
                                "note": note})
                continue
            print(f"[bench] pass {n + 1}: ({system}) {workload} ...", flush=True)
            r = measure(system, workload, rounds, args.timeout)
            r["note"] = note
            r["load_average_after"] = os.getloadavg()  # 1, 5, 15 min, as it ended
            results.append(r)
            print(f"[bench]   {rate_text(r.get('client_rounds_per_s'))} client-rounds/s, "
                  f"{r['total_wall_s']:.1f} s, peak {r['peak_rss_gib']:.2f} GiB"
                  + (" FAILED" if "error" in r else ""), flush=True)
        passes.append(results)
    info["passes"] = len(passes)
    info["load_average_at_end"] = os.getloadavg()
    write(args.out, best_of(passes), info, args.out_name)


def best_of(passes: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per measurement, the pass with the fastest median round (a failed or skipped pass
    only when no pass succeeded); every pass's rate is kept in ``passes_client_rounds_per_s``
    and the largest peak RSS of all passes in ``peak_rss_gib``."""
    best: list[dict[str, Any]] = []
    for tries in zip(*passes, strict=True):
        ok = [r for r in tries if "error" not in r and not r.get("skipped")]
        pick = dict(max(ok, key=lambda r: r.get("client_rounds_per_s", 0.0)) if ok
                    else tries[0])
        if len(tries) > 1:
            pick["passes_client_rounds_per_s"] = [r.get("client_rounds_per_s") for r in tries]
            if ok:
                pick["peak_rss_gib"] = max(r["peak_rss_gib"] for r in ok)
        best.append(pick)
    return best


def write(out: Path, results: list[dict[str, Any]], info: dict[str, Any],
          name: str = "latest") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(
        {"machine": info, "results": results, "targets_median": ratios(results),
         "targets_fastest": ratios(results, best=True)}, indent=1))
    (out / f"{name}.md").write_text(markdown(results, info))
    print(markdown(results, info))


if __name__ == "__main__":
    main()
