"""The GPU benchmark: flowerbed's in-process engine (c) and the pure-vmap reference (f) on
``cuda``, for W0, W1 (and W4 when it is defined), one harness run; results in
``results/gpu.json`` and ``results/gpu.md`` in the format of ``results/latest.md``.

    python -m benchmarks.gpu                # needs a CUDA GPU; refuses to run without one
    python -m benchmarks.gpu --also-cpu     # the same rows on the CPU too, for the ratios

Every measurement runs in a fresh process with ``BENCH_DEVICE=cuda`` (``device = "cuda"``
for flowerbed; the vmap loop's tensors on the GPU, synchronised at each round's end).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from benchmarks.workloads import WORKLOADS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--also-cpu", action="store_true", help="also run the rows on the CPU")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks.gpu: no CUDA GPU is visible (torch.cuda.is_available() is False)")
    from benchmarks import run as harness  # needs psutil (see benchmarks/README.md)

    workloads = [w for w in ("W0", "W1", "W4") if w in WORKLOADS]
    results = []
    for device in ("cuda", "cpu") if args.also_cpu else ("cuda",):
        os.environ["BENCH_DEVICE"] = device
        for w in workloads:
            for system in "fc":
                print(f"[bench] ({system}) {w} on {device} ...", flush=True)
                r = harness.measure(system, w, 0, args.timeout)
                r["note"] = f"device {device}"  # the targets read the first (cuda) rows
                results.append(r)
    info = {**harness.machine(), "gpu": torch.cuda.get_device_name(0)}
    harness.write(harness.RESULTS, results, info, "gpu")


if __name__ == "__main__":
    main()
