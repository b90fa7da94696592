"""The equal-compute study: a resumable queue of condensation runs under one CPU budget, and its report.

    python benchmarks/study.py run [--jobs 2] [--only CELL,...] [--runs runs/study] [--results DIR]
    python benchmarks/study.py plan                 # every job, its state, and what it waits for
    python benchmarks/study.py contention           # one run alone vs the same run beside another
    python benchmarks/study.py --report             # docs/study.md and its plots, from the summaries alone

The study file (benchmarks/study.toml) lists cells (a method's flags at one IPC), seeds, the CPU budget per IPC
and the claims to judge. ``run`` works through the jobs in the file's order, ``--jobs`` at a time, each a
single-threaded process (OMP_NUM_THREADS=1): the expert buffer where a cell needs one; each swept cell's
seed-0 runs (one per value, accuracy on the validation split); the test evaluation of the chosen one by fresh
networks; the other seeds with the chosen value; cross-architecture evaluations. A finished job leaves a small
JSON summary in benchmarks/results/study/ (kept in the repository) and is skipped from then on; a killed run
resumes from its checkpoint. The report reads only those summaries, so it regenerates byte for byte.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
STUDY_FILE = ROOT / "benchmarks" / "study.toml"
RESULTS = ROOT / "benchmarks" / "results" / "study"


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class Job:
    key: str  # also the summary's file name (results/<key>.json)
    kind: str  # "experts", "sweep", "select", "seed", "cross"
    cell: dict
    seed: int = 0
    value: str | None = None  # the swept flag's value
    needs: list[str] = field(default_factory=list)  # keys of jobs that must have finished first


def load_study(path: Path = STUDY_FILE) -> dict:
    study = tomllib.loads(path.read_text())
    names = [cell["name"] for cell in study["cell"]]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: cell names must be unique")
    for cell in study["cell"]:
        if str(cell["ipc"]) not in study["budget"]:
            raise SystemExit(f"{path}: cell {cell['name']} has IPC {cell['ipc']} but [budget] has no entry for it")
        if cell.get("use_sweep_of") and cell["use_sweep_of"] not in names:
            raise SystemExit(f"{path}: cell {cell['name']} uses the sweep of unknown cell {cell['use_sweep_of']}")
    for claim in study.get("claim", []):
        for side in ("better", "worse"):
            if claim[side] not in names:
                raise SystemExit(f"{path}: claim '{claim['claim']}' names unknown cell {claim[side]}")
    return study


def condenses(cell: dict) -> bool:
    return not any(f"--recipe {name}" in cell["args"] for name in ("random", "herding"))


def needs_experts(cell: dict) -> bool:
    return "{experts}" in cell["args"]


def plan(study: dict) -> list[Job]:
    """Every job of the study, in the order they are started (dependencies permitting)."""
    jobs: list[Job] = []
    if any(needs_experts(cell) for cell in study["cell"]):
        jobs.append(Job("experts", "experts", {"name": "experts"}))
    cells = {cell["name"]: cell for cell in study["cell"]}
    for cell in study["cell"]:
        name, seeds = cell["name"], study["study"]["seeds"]
        base = ["experts"] if needs_experts(cell) else []
        seed_needs = list(base)
        if "sweep" in cell:
            sweep_keys = []
            for value in cell["sweep"]["values"]:
                key = f"sweep/{name}/{value}"
                jobs.append(Job(key, "sweep", cell, seeds[0], value, list(base)))
                sweep_keys.append(key)
            jobs.append(Job(f"runs/{name}/seed{seeds[0]}", "select", cell, seeds[0], None, sweep_keys))
            seed_needs = [f"runs/{name}/seed{seeds[0]}"]
            later = seeds[1:]
        else:
            later = seeds
            if cell.get("use_sweep_of"):
                seed_needs = base + [f"runs/{cell['use_sweep_of']}/seed{seeds[0]}"]
        for seed in later:
            jobs.append(Job(f"runs/{name}/seed{seed}", "seed", cell, seed, None, list(seed_needs)))
        if cell.get("cross_architecture"):
            for seed in seeds:
                jobs.append(Job(f"cross/{name}/seed{seed}", "cross", cell, seed, None, [f"runs/{name}/seed{seed}"]))
    del cells
    return jobs


def summary_path(results: Path, key: str) -> Path:
    return results / f"{key}.json"


def chosen_value(results: Path, cell_name: str) -> str | None:
    """The swept value a cell's seed-0 summary records as chosen (None when the cell has no sweep)."""
    path = results / "runs" / cell_name
    for file in sorted(path.glob("seed*.json")) if path.exists() else ():
        value = json.loads(file.read_text()).get("chosen_value")
        if value is not None:
            return value
    return None


# ------------------------------------------------------------------------------------------------ commands
def run_dir(runs: Path, job: Job) -> Path:
    if job.kind == "sweep":
        return runs / "sweep" / job.cell["name"] / str(job.value)
    return runs / "runs" / job.cell["name"] / f"seed{job.seed}"


def distill_command(study: dict, job: Job, runs: Path, results: Path, value: str | None, split: str) -> list[str]:
    settings, cell = study["study"], job.cell
    args = shlex.split(cell["args"].replace("{experts}", str(runs / "experts")))
    flags = ["--dataset", settings["dataset"], "--data-root", str(settings["data_root"]), "--ipc", str(cell["ipc"]),
             "--seed", str(job.seed), "--protocol", settings["protocol"], "--out", str(run_dir(runs, job)),
             "--quiet", "--evaluation-split", split]
    if condenses(cell):
        flags += ["--iterations", "100000000", "--cpu-limit", str(study["budget"][str(cell["ipc"])]),
                  "--snapshots", ",".join(str(f) for f in settings["snapshots"]),
                  "--checkpoint-every", str(settings.get("checkpoint_every", 5))]
    sweep = cell.get("sweep") or (cell_by_name(study, cell["use_sweep_of"]).get("sweep") if cell.get("use_sweep_of")
                                  else None)
    if value is not None:
        flags += [sweep["flag"], value]
    directory = run_dir(runs, job)
    if any((directory / stage).exists() for stage in ("checkpoint.pt", "post_condense.json", "metadata.json")):
        flags.append("--resume")
    return [sys.executable, "-m", "condensation", "distill", *args, *flags]


def cell_by_name(study: dict, name: str) -> dict:
    return next(cell for cell in study["cell"] if cell["name"] == name)


def evaluate_commands(study: dict, directory: Path, seed: int, architectures: list[str] | None = None) -> list[list[str]]:
    """`condense evaluate` of a run's final artifact and of each snapshot (test split; networks seeded by seed)."""
    targets = [directory] + sorted(p for p in (directory / "snapshots").glob("*") if not p.name.endswith("-raw"))
    extra = ["--architectures", ",".join(architectures)] if architectures else []
    return [[sys.executable, "-m", "condensation", "evaluate", str(target), "--protocol", study["study"]["protocol"],
             "--seed", str(seed), "--data-root", str(study["study"]["data_root"]), *extra]
            for target in targets if (target / "metadata.json").exists()]


def job_commands(study: dict, job: Job, runs: Path, results: Path) -> list[list[str]]:
    if job.kind == "experts":
        settings = study["study"]
        return [[sys.executable, "-m", "condensation", "experts", "--dataset", settings["dataset"], "--data-root",
                 str(settings["data_root"]), "--out", str(runs / "experts"), "--quiet",
                 *shlex.split(study["experts"]["args"])]]
    if job.kind == "sweep":
        return [distill_command(study, job, runs, results, job.value, "validation")]
    if job.kind == "select":
        winner = select_winner(results, job)
        chosen = runs / "sweep" / job.cell["name"] / winner
        if (chosen / "results.json").exists():
            return evaluate_commands(study, chosen, job.seed)
        # the sweep's run directory is gone (another machine or session): condense seed 0 again with the chosen
        # value, evaluated on the test split, as the other seeds are
        return [distill_command(study, job, runs, results, winner, "test")]
    if job.kind == "seed":
        source = job.cell["name"] if "sweep" in job.cell else job.cell.get("use_sweep_of")
        value = chosen_value(results, source) if source else None
        return [distill_command(study, job, runs, results, value, "test")]
    if job.kind == "cross":
        return evaluate_commands(study, tested_dir(runs, results, job), job.seed,
                                 study["study"]["cross_architectures"])[:1]
    raise ValueError(job.kind)


def tested_dir(runs: Path, results: Path, job: Job) -> Path:
    """The run directory behind a cell's test summary for job.seed (a sweep's chosen run for seed 0)."""
    summary = json.loads(summary_path(results, f"runs/{job.cell['name']}/seed{job.seed}").read_text())
    return runs / summary["run"]


def select_winner(results: Path, job: Job) -> str:
    """The swept value with the best final validation accuracy (the first listed wins a tie)."""
    scores = {}
    for value in job.cell["sweep"]["values"]:
        summary = json.loads(summary_path(results, f"sweep/{job.cell['name']}/{value}").read_text())
        scores[value] = summary["final"]["mean"]
    return max(job.cell["sweep"]["values"], key=lambda v: scores[v])


# ------------------------------------------------------------------------------------------------ summaries
def _accuracy(block: dict | None) -> dict | None:
    if not block:
        return None
    first = block.get("convnet") or next(iter(block.values()))
    return {"mean": round(first["mean"], 4), "std": round(first["std"], 4), "values": first.get("values", [])}


def _last_evaluation(directory: Path, architectures: list[str] | None = None) -> dict:
    lines = (directory / "evaluations.jsonl").read_text().splitlines()
    for line in reversed(lines):
        row = json.loads(line)
        if architectures is None or row["architectures"] == architectures:
            return row
    raise RuntimeError(f"no evaluation of {architectures} in {directory}/evaluations.jsonl")


def summarize_run(study: dict, job: Job, directory: Path, split: str, from_evaluations: bool = False) -> dict:
    """The study's record of one run: accuracy after 25%, 50%, 100% of the budget (mean ± std over networks)."""
    results = json.loads((directory / "results.json").read_text())
    key = "validation_accuracy" if split == "validation" else "accuracy"
    points = []
    for snapshot in results.get("snapshots", []):
        target = directory / "snapshots" / _percent(snapshot["fraction"])
        accuracy = (_accuracy(_last_evaluation(target)["accuracy"]) if from_evaluations else _accuracy(snapshot.get(key)))
        points.append({"fraction": snapshot["fraction"], "iterations": snapshot["iterations"],
                       "cpu_seconds": round(snapshot["condense_cpu_seconds"] or 0.0, 1), "accuracy": accuracy})
    final = (_accuracy(_last_evaluation(directory)["accuracy"]) if from_evaluations else _accuracy(results.get(key)))
    points.append({"fraction": 1.0, "iterations": results.get("iterations"),
                   "cpu_seconds": round(results.get("condense_cpu_seconds") or 0.0, 1), "accuracy": final})
    return {
        "cell": job.cell["name"], "ipc": job.cell["ipc"], "seed": job.seed, "split": split,
        "command": job.cell["args"], "cpu_budget": study["budget"][str(job.cell["ipc"])] if condenses(job.cell) else None,
        "stopped_by_cpu_limit": results.get("stopped_by_cpu_limit", False),
        "stored_floats": results["stored_floats"], "budget_ratio": round(results["budget_ratio"], 4),
        "protocol": results["protocol"]["name"], "final": final, "points": points,
    }


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}"


def commit_of(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_summary(study: dict, job: Job, runs: Path, results: Path, job_cpu: float, wall: float, load: float) -> None:
    if job.kind == "experts":
        summary = {"key": job.key, "buffer": str(runs / "experts")}
    elif job.kind == "sweep":
        summary = summarize_run(study, job, run_dir(runs, job), "validation")
        summary["run"] = str(run_dir(runs, job).relative_to(runs))
        summary.update(swept_flag=job.cell["sweep"]["flag"], value=job.value)
    elif job.kind == "select":
        winner = select_winner(results, job)
        directory = runs / "sweep" / job.cell["name"] / winner
        if (directory / "results.json").exists():
            summary = summarize_run(study, job, directory, "test", from_evaluations=True)
        else:  # condensed again (see job_commands)
            directory = run_dir(runs, job)
            summary = summarize_run(study, job, directory, "test")
        summary.update(chosen_value=winner, swept_flag=job.cell["sweep"]["flag"], run=str(directory.relative_to(runs)),
                       chosen_from={v: json.loads(summary_path(results, f"sweep/{job.cell['name']}/{v}").read_text())
                                    ["final"]["mean"] for v in job.cell["sweep"]["values"]})
    elif job.kind == "seed":
        summary = summarize_run(study, job, run_dir(runs, job), "test")
        summary["run"] = str(run_dir(runs, job).relative_to(runs))
        source = job.cell["name"] if "sweep" in job.cell else job.cell.get("use_sweep_of")
        if source:
            summary["chosen_value"] = chosen_value(results, source)
    else:
        row = _last_evaluation(tested_dir(runs, results, job), study["study"]["cross_architectures"])
        summary = {"cell": job.cell["name"], "ipc": job.cell["ipc"], "seed": job.seed,
                   "accuracy": {arch: _accuracy({arch: value}) for arch, value in row["accuracy"].items()}}
    summary.update(job_cpu_seconds=round(job_cpu, 1), job_wall_seconds=round(wall, 1), load_average_at_start=load,
                   commit=commit_of(ROOT))
    path = summary_path(results, job.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------------ the queue
def locked_elsewhere(directory: Path) -> bool:
    """True while another process holds the run directory's lock (a run an earlier runner started and that is
    still going): this runner waits for it, then resumes it (a finished run only gets its summary)."""
    import fcntl

    lock = directory / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def single_threaded_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Running:
    """One job's commands, run one after the other in a child process chain; CPU seconds from wait4."""

    def __init__(self, job: Job, commands: list[list[str]], log: Path):
        if not commands:
            raise RuntimeError(f"job {job.key} has nothing to run (its run directory holds no artifact)")
        self.job, self.commands, self.log = job, list(commands), log
        self.cpu, self.started, self.load = 0.0, time.time(), os.getloadavg()[0]
        self.process = None
        self.failed = False
        log.parent.mkdir(parents=True, exist_ok=True)
        self._next()

    def _next(self) -> None:
        command = self.commands.pop(0)
        with open(self.log, "a") as out:
            out.write(f"$ {shlex.join(command)}\n")
        with open(self.log, "a") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=single_threaded_env(),
                                            cwd=ROOT)

    def poll(self) -> bool:
        """True when the job has finished (successfully or not)."""
        pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.cpu += usage.ru_utime + usage.ru_stime
        self.process.returncode = os.waitstatus_to_exitcode(status)
        if self.process.returncode != 0:
            self.failed = True
            return True
        if self.commands:
            self._next()
            return False
        return True


def run_queue(study: dict, runs: Path, results: Path, jobs_at_once: int, only: set[str] | None,
              start_until: float | None = None) -> int:
    """Run every job not yet summarized; none is started after ``start_until`` (a time.time() value), so that
    a session that must end soon does not begin work it would lose."""
    jobs = [job for job in plan(study) if only is None or job.cell["name"] in only or job.kind == "experts"]
    done = lambda key: summary_path(results, key).exists()  # noqa: E731
    running: list[Running] = []
    failed: set[str] = set()
    print(f"study: {sum(done(j.key) for j in jobs)} of {len(jobs)} jobs done; {jobs_at_once} at a time", flush=True)
    while True:
        for item in list(running):
            if item.poll():
                running.remove(item)
                wall = time.time() - item.started
                if item.failed:
                    failed.add(item.job.key)
                    print(f"study: FAILED {item.job.key} (exit {item.process.returncode}); see {item.log}", flush=True)
                else:
                    write_summary(study, item.job, runs, results, item.cpu, wall, round(item.load, 2))
                    print(f"study: finished {item.job.key} in {wall / 60:.1f} min ({item.cpu / 60:.1f} CPU-min)",
                          flush=True)
        busy = {item.job.key for item in running}
        ready = [job for job in jobs if not done(job.key) and job.key not in busy and job.key not in failed
                 and all(done(need) for need in job.needs)
                 and not (job.kind in ("sweep", "seed", "select") and locked_elsewhere(run_dir(runs, job)))]
        if start_until is not None and time.time() > start_until:
            ready = []
        while ready and len(running) < jobs_at_once:
            job = ready.pop(0)
            commands = job_commands(study, job, runs, results)
            print(f"study: starting {job.key}", flush=True)
            running.append(Running(job, commands, runs / "logs" / f"{job.key}.log"))
        elsewhere = [job for job in jobs if not done(job.key) and job.kind in ("sweep", "seed", "select")
                     and locked_elsewhere(run_dir(runs, job))]
        if not running and not elsewhere:
            left = [job.key for job in jobs if not done(job.key)]
            if start_until is not None and time.time() > start_until and left:
                print(f"study: past --start-until; {len(left)} job(s) left for the next invocation", flush=True)
                return 0
            print(f"study: nothing more can run; {len(left)} job(s) left"
                  + (f", failed: {', '.join(sorted(failed))}" if failed else ""), flush=True)
            return 1 if failed else 0
        time.sleep(5)


# ------------------------------------------------------------------------------------------------ contention
def contention(study: dict, runs: Path, results: Path, budget: str) -> None:
    """The same single-threaded run (dm-1, seed 0, lr 10) alone, then beside a second one: iterations done and
    accuracy at the same CPU budget. Nothing else may run while it does."""
    cell = dict(cell_by_name(study, "dm-1"))
    study = {**study, "budget": {**study["budget"], "1": budget}}
    rows = {}
    for label, seeds in (("alone", [0]), ("beside another", [0, 1])):
        processes = []
        for seed in seeds:
            job = Job(f"contention/{label}/{seed}", "seed", cell, seed)
            directory = runs / "contention" / label.replace(" ", "-") / f"seed{seed}"
            command = distill_command(study, job, runs, results, "10", "test")
            command[command.index("--out") + 1] = str(directory)
            if "--resume" in command:
                command.remove("--resume")
            processes.append((seed, directory, Running(job, [command], runs / "logs" / f"{job.key}.log")))
        waiting = [item for _, _, item in processes]
        while waiting:
            waiting = [item for item in waiting if not item.poll()]
            time.sleep(2)
        if any(item.failed for _, _, item in processes):
            raise SystemExit(f"contention: a run failed; see {runs / 'logs' / 'contention'}")
        for seed, directory, _ in processes:
            if seed == 0:
                summary = json.loads((directory / "results.json").read_text())
                rows[label] = {"iterations": summary["iterations"], "cpu_seconds": round(summary["condense_cpu_seconds"], 1),
                               "wall_seconds": summary["wall_clock_seconds"]["distill"],
                               "accuracy": _accuracy(summary["accuracy"])}
        print(label, rows[label], flush=True)
    out = results / "contention.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cell": "dm-1", "learning_rate": "10", "cpu_budget": budget, "rows": rows,
                               "commit": commit_of(ROOT)}, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["run", "plan", "contention"])
    parser.add_argument("--report", action="store_true", help="regenerate docs/study.md and its plots")
    parser.add_argument("--study", type=Path, default=STUDY_FILE)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "study", help="run directories (not kept)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="summaries (kept in the repository)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once (each single-threaded)")
    parser.add_argument("--only", help="comma-separated cell names")
    parser.add_argument("--budget", default="5m", help="contention: the CPU budget of the two runs")
    parser.add_argument("--start-until", help="start no job after this local time (HH:MM, today)")
    args = parser.parse_args(argv)
    study = load_study(args.study)
    runs, results = args.runs.resolve(), args.results.resolve()
    if args.report:
        from study_report import write_report

        kinds = [job.kind for job in plan(study)]
        planned = {"sweep": kinds.count("sweep"), "runs": kinds.count("seed") + kinds.count("select"),
                   "cross": kinds.count("cross")}
        write_report(study, results, ROOT / "docs", planned)
        return 0
    if args.command == "plan":
        for job in plan(study):
            state = "done" if summary_path(results, job.key).exists() else "waiting on " + ", ".join(
                need for need in job.needs if not summary_path(results, need).exists()) if any(
                not summary_path(results, need).exists() for need in job.needs) else "ready"
            print(f"{job.key:<40} {job.kind:<8} {state}")
        return 0
    if args.command == "contention":
        contention(study, runs, results, args.budget)
        return 0
    if args.command == "run":
        only = set(args.only.split(",")) if args.only else None
        start_until = None
        if args.start_until:
            hours, minutes = (int(part) for part in args.start_until.split(":"))
            now = time.localtime()
            start_until = time.mktime((now.tm_year, now.tm_mon, now.tm_mday, hours, minutes, 0, 0, 0, -1))
        return run_queue(study, runs, results, args.jobs, only, start_until)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
