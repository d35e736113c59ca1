"""The GPU benchmark: flowerbed's in-process engine (c) and the pure-vmap reference (f) on
``cuda``, for W0, W1 and W4, one harness run; results in ``results/gpu.json`` and
``results/gpu.md`` in the format of ``results/latest.md`` (same table, same targets).

    python -m benchmarks.gpu                  # needs a CUDA GPU; refuses to run without one
    python -m benchmarks.gpu --also-cpu       # the same rows on the CPU too
    python -m benchmarks.gpu --device cpu --quick   # the script's own check, without a GPU

Every measurement runs in a fresh process with ``BENCH_DEVICE`` set (``device = "cuda"``
for flowerbed; the vmap loop's tensors on the GPU, synchronised at each round's end).
W4's data (100,000 generated FEMNIST-schema images) are written once, before the first
measurement, to ``benchmarks/.work/``. On an H200 the whole run is expected to take a few
minutes, most of it process start-up and W4's data loading (not measured yet: no GPU
was available where this was written). ``--quick`` runs W0 only, 3 rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import torch

from benchmarks.workloads import WORKLOADS
from flowerbed.clients.data_cache import ENV as DATA_CACHE_ENV

WORKLOADS_ON_GPU = ("W0", "W1", "W4")
SYSTEMS_ON_GPU = "fc"  # the pure-vmap reference first, then flowerbed in-process


def plan(devices: tuple[str, ...], quick: bool) -> list[tuple[str, str, str, int]]:
    """(device, system, workload, rounds override) in the order they run."""
    workloads = ("W0",) if quick else tuple(w for w in WORKLOADS_ON_GPU if w in WORKLOADS)
    rounds = 3 if quick else 0
    return [(d, s, w, rounds) for d in devices for w in workloads for s in SYSTEMS_ON_GPU]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="where (c) and (f) compute (cpu: to check the script without a GPU)")
    p.add_argument("--also-cpu", action="store_true", help="also run the rows on the CPU")
    p.add_argument("--quick", action="store_true", help="W0 only, 3 rounds")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    p.add_argument("--out-name", default=None,
                   help="results file name (default: gpu, or gpu-check with --device cpu)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA GPU is visible (torch.cuda.is_available() is False; "
              f"torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on a "
              "machine with a GPU and a CUDA build of torch, or check the script with "
              "--device cpu --quick.", file=sys.stderr)
        return 2
    from benchmarks import run as harness  # needs psutil (see benchmarks/README.md)

    devices = (args.device, "cpu") if args.also_cpu and args.device != "cpu" else (args.device,)
    info: dict[str, Any] = {**harness.machine(), "devices": list(devices),
                            "gpu": torch.cuda.get_device_name(0) if "cuda" in devices
                            else None}
    results = []
    t0 = time.time()
    # the federation is built once per workload and loaded by the later processes (W4's
    # 100,000 images take tens of seconds to decode): the one run's cache of `flowerbed run`
    with tempfile.TemporaryDirectory() as cache:
        os.environ.setdefault(DATA_CACHE_ENV, cache)
        try:
            for device, system, workload, rounds in plan(devices, args.quick):
                os.environ["BENCH_DEVICE"] = device
                print(f"[bench] ({system}) {workload} on {device} ...", flush=True)
                r = harness.measure(system, workload, rounds, args.timeout)
                r["note"] = f"device {device}" + ("; --quick: 3 rounds" if rounds else "")
                results.append(r)
                rate = harness.rate_text(r.get("client_rounds_per_s"))
                print(f"[bench]   {rate} client-rounds/s, {r['total_wall_s']:.1f} s"
                      + (" FAILED" if "error" in r else ""), flush=True)
        finally:
            os.environ.pop("BENCH_DEVICE", None)
            if os.environ.get(DATA_CACHE_ENV) == cache:
                del os.environ[DATA_CACHE_ENV]
    info["load_average_at_end"] = os.getloadavg()
    info["wall_s"] = time.time() - t0
    # the targets read the first row of each (system, workload): the first device's
    name = args.out_name or ("gpu" if args.device == "cuda" else "gpu-check")
    harness.write(harness.RESULTS, results, info, name)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
