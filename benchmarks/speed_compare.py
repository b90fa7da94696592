"""Old commit against the working tree, interleaved in one invocation: seconds per condensation iteration of
every recipe at its Fashion-MNIST IPC 1 table settings, and seconds of evaluation under the `cpu` and `dsa`
protocols. Each measurement is a fresh process (benchmarks/speed_worker.py); old and new alternate, and
which goes first alternates too, so that drift on a shared machine hits both.

    python benchmarks/speed_compare.py                      # every recipe and both protocols
    python benchmarks/speed_compare.py --only dm,evaluate-cpu --new-env PRECISION=bf16

The old library is exported with `git archive OLD src` into runs/speed/OLD (never installed). Needs the
`cpu` expert buffers for mtt and haba: `condense experts --dataset fashion_mnist --out runs/table/experts-cpu
--set preset=cpu`. Refuses to start when the 1-minute load average is 1.5 or more (timings on 2 shared
cores are meaningless then) unless --force.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (name, worker arguments): iterations per recipe keep the old library's share to ~1 minute each
TASKS = [
    ("dm", ["iteration", "dm", "10"]),
    ("echo", ["iteration", "echo", "4"]),
    ("dc", ["iteration", "dc", "3"]),
    ("dsa", ["iteration", "dsa", "3"]),
    ("idc", ["iteration", "idc", "2"]),
    ("mtt", ["iteration", "mtt", "3"]),
    ("rtp", ["iteration", "rtp", "2"]),
    ("hmn", ["iteration", "hmn", "2"]),
    ("haba", ["iteration", "haba", "3"]),
    ("evaluate-cpu", ["evaluate", "cpu"]),
    ("evaluate-dsa", ["evaluate", "dsa"]),
]


def export_old(commit: str) -> Path:
    target = ROOT / "runs" / "speed" / commit
    if not (target / "src" / "condensation").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def run_worker(src: Path, arguments: list[str], extra_env: dict[str, str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), **extra_env}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed_worker.py"), *arguments], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default="25aee08", help="the commit to compare against")
    parser.add_argument("--only", help="comma-separated task names: " + ", ".join(name for name, _ in TASKS))
    parser.add_argument("--new-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the new library's workers, e.g. PRECISION=bf16")
    parser.add_argument("--out", default=str(ROOT / "runs" / "speed" / "compare.jsonl"))
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if load >= 1.5 and not args.force:
        sys.exit(f"load average {load:.2f} >= 1.5: wait for an idle machine (or --force)")
    chosen = set(args.only.split(",")) if args.only else None
    old_src, new_src = export_old(args.old), ROOT / "src"
    new_env = dict(pair.split("=", 1) for pair in args.new_env)
    print(f"load average at start {load:.2f}; old {args.old} ({old_src}), new {new_src} {new_env or ''}", flush=True)
    print("| task | old s | new s | new / old |\n|---|---|---|---|", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as log:
        for position, (name, arguments) in enumerate(TASKS):
            if chosen and name not in chosen:
                continue
            order = [("old", old_src, {}), ("new", new_src, new_env)]
            if position % 2:
                order.reverse()
            results = {}
            for label, src, env in order:
                results[label] = run_worker(src, arguments, env)
                log.write(json.dumps({"task": name, "library": label, "load": os.getloadavg()[0], **results[label]}) + "\n")
                log.flush()
            old, new = results["old"], results["new"]
            if "error" in old or "error" in new:
                print(f"| {name} | {old.get('seconds', old.get('error'))} | {new.get('seconds', new.get('error'))} | – |")
                continue
            print(f"| {name} | {old['seconds']:.3f} | {new['seconds']:.3f} | {new['seconds'] / old['seconds']:.2f} |", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}; raw rows appended to {args.out}")


if __name__ == "__main__":
    main()
