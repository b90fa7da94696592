"""Peak memory of one BPTT outer step: 'recompute' (one step's graph at a time) vs 'unrolled' (whole graph).

Each (T, memory) measurement runs in a fresh subprocess, because ru_maxrss is a high-water mark per
process. The worker builds a small problem (random 1x16x16 data, 10 classes, pixels IPC 2 -> 20 images per
inner step, ConvNet width 16 depth 2), takes one warm-up outer step with T = 1, reads ru_maxrss (the
baseline), takes one outer step with T inner steps and reads ru_maxrss again.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bptt_memory.py [--steps 10 50 150]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(steps: int, memory: str) -> dict:
    import torch

    from condensation.containers import create_container
    from condensation.data import DataSpec, Preprocessing, Split
    from condensation.engine.real import RealPool
    from condensation.objectives import create_objective

    torch.set_num_threads(1)
    spec = DataSpec(1, 16, 16, 10, flip_allowed=False)
    images = torch.rand(10 * 64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(10).repeat_interleave(64)
    preprocessing = Preprocessing("normalize").fit(images)
    real = RealPool(Split(images, labels), 10, preprocessing)
    container = create_container("pixels", spec, 2, preprocessing)
    container.initialize(real, torch.Generator().manual_seed(1))
    settings = {"network_settings": {"width": 16, "depth": 2}, "memory": memory}
    classes = list(range(10))

    def outer_step(inner_steps: int) -> float:
        objective = create_objective("bptt", spec, inner_steps=inner_steps, **settings)
        generator = torch.Generator().manual_seed(2)
        objective.begin_iteration(0, generator)
        container.zero_grad(set_to_none=True)
        return objective.backward(container, real, classes, generator)

    outer_step(1)  # warm-up: libraries, allocator pools
    baseline = rss_mib()
    started = time.perf_counter()
    outer_step(steps)
    seconds = time.perf_counter() - started
    peak = rss_mib()
    return {"steps": steps, "memory": memory, "baseline_mib": baseline, "peak_mib": peak,
            "extra_mib": peak - baseline, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 150])
    parser.add_argument("--modes", nargs="+", default=["recompute", "unrolled"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.steps[0], args.modes[0])))
        return
    rows = []
    for steps in args.steps:
        for memory in args.modes:
            output = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps), "--modes", memory],
                                    check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
    print(f"{'T':>5} {'memory':<10} {'baseline MiB':>13} {'peak MiB':>10} {'extra MiB':>10} {'seconds':>8}")
    for r in rows:
        print(f"{r['steps']:>5} {r['memory']:<10} {r['baseline_mib']:>13.1f} {r['peak_mib']:>10.1f} "
              f"{r['extra_mib']:>10.1f} {r['seconds']:>8.2f}")


if __name__ == "__main__":
    main()
