"""Seconds per condensation iteration: N gloo processes (torchrun) against one process, interleaved.

    python benchmarks/distributed_speed.py --ranks 2 --ipc 10 --iterations 20 --repeats 2

Each row runs ``condense distill --no-evaluate`` into a fresh directory and reads the condensation loop's
seconds from results.json (data loading and initialization excluded), alternating 1 and N processes so that
machine noise hits both alike. Cases: DM on pixels, and DM on HMN's container (shared dataset memory and decoder,
whose gradients are all-reduced). The recipe ``hmn`` itself (IDC's per-class steps) does not shard.
Run it on an otherwise idle machine (check ``uptime``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    "dm (pixels)": ["--recipe", "dm"],
    "dm on hmn container": ["--recipe", "dm", "--container", "hmn", "--optimizer", "adam", "--lr", "1e-3"],
}


def one_run(ranks: int, case: list[str], args, out: Path) -> float:
    command = ["distill", "--dataset", args.dataset, "--ipc", str(args.ipc), "--iterations", str(args.iterations),
               "--no-evaluate", "--quiet", "--data-root", args.data_root, "--out", str(out), *case]
    # the one process gets every core the N processes share between them (the fair comparison on one machine)
    threads = args.threads_per_rank * (args.ranks if ranks == 1 else 1)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if ranks == 1:
        full = [sys.executable, "-m", "condensation.cli", *command]
    else:
        full = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                "-m", "condensation.cli", *command]
    done = subprocess.run(full, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(full)}\n{done.stderr[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    return results["wall_clock_seconds"]["distill"] / results["iterations"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads-per-rank", type=int, default=1,
                        help="OMP threads of each of the N processes; the one-process run gets N times as many")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; {args.ranks} processes x "
          f"{args.threads_per_rank} thread(s) against 1 process x {args.ranks * args.threads_per_rank}", flush=True)
    timings = {name: {1: [], args.ranks: []} for name in CASES}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for name, case in CASES.items():
                for ranks in (1, args.ranks):
                    seconds = one_run(ranks, case, args, Path(scratch) / f"{name}-{ranks}-{repeat}".replace(" ", "_"))
                    timings[name][ranks].append(seconds)
                    print(f"  {name}, {ranks} process(es), repeat {repeat + 1}: {seconds:.3f} s/iteration", flush=True)
    print(f"\n{args.dataset} IPC {args.ipc}, {args.iterations} iterations per run, best of {args.repeats}")
    print(f"{'case':<22} {'1 process s/it':>15} {f'{args.ranks} processes s/it':>17} {'speed-up':>9}")
    for name, by_ranks in timings.items():
        single, several = min(by_ranks[1]), min(by_ranks[args.ranks])
        print(f"{name:<22} {single:>15.3f} {several:>17.3f} {single / several:>8.2f}x")


if __name__ == "__main__":
    main()
