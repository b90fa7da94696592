"""The equal-compute study's runner (benchmarks/study.py) and report, end to end on the embedded digits."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import study  # noqa: E402
import study_report  # noqa: E402

TINY_STUDY = """
[study]
dataset = "digits"
data_root = ""
protocol = "smoke"
seeds = [0, 1]
snapshots = [0.5]
checkpoint_every = 2
cross_architectures = ["mlp"]

[budget]
1 = "1.5s"

[[cell]]
name = "random-1"
ipc = 1
args = "--recipe random"

[[cell]]
name = "dm-1"
ipc = 1
args = "--recipe dm --objective-set real_per_class=16"
sweep = { flag = "--lr", values = ["1", "10"] }
cross_architecture = true

[[claim]]
paper = "all"
claim = "DM beats random"
better = "dm-1"
worse = "random-1"
"""


def test_the_plan_orders_sweeps_before_the_seeds_that_use_their_choice():
    jobs = study.plan(study.tomllib.loads(TINY_STUDY))
    keys = [job.key for job in jobs]
    assert keys == ["runs/random-1/seed0", "runs/random-1/seed1", "sweep/dm-1/1", "sweep/dm-1/10", "runs/dm-1/seed0",
                    "runs/dm-1/seed1", "cross/dm-1/seed0", "cross/dm-1/seed1"]
    by_key = {job.key: job for job in jobs}
    assert by_key["runs/dm-1/seed0"].kind == "select"
    assert by_key["runs/dm-1/seed0"].needs == ["sweep/dm-1/1", "sweep/dm-1/10"]
    assert by_key["runs/dm-1/seed1"].needs == ["runs/dm-1/seed0"]


def test_a_tiny_study_runs_to_the_end_resumes_as_done_and_its_report_is_reproducible(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text(TINY_STUDY)
    runs, results, docs = tmp_path / "runs", tmp_path / "results", tmp_path / "docs"
    docs.mkdir()
    args = ["run", "--study", str(path), "--runs", str(runs), "--results", str(results)]
    assert study.main(args) == 0
    summaries = sorted(str(p.relative_to(results)) for p in results.rglob("*.json"))
    assert summaries == ["cross/dm-1/seed0.json", "cross/dm-1/seed1.json", "runs/dm-1/seed0.json",
                         "runs/dm-1/seed1.json", "runs/random-1/seed0.json", "runs/random-1/seed1.json",
                         "sweep/dm-1/1.json", "sweep/dm-1/10.json"]
    sweeps = {v: json.loads((results / "sweep" / "dm-1" / f"{v}.json").read_text()) for v in ("1", "10")}
    for sweep in sweeps.values():
        assert sweep["split"] == "validation" and sweep["stopped_by_cpu_limit"]
        assert [p["fraction"] for p in sweep["points"]] == [0.5, 1.0]
        # the budget is CPU seconds of condensation: the run stops at the first iteration past it
        assert 1.5 <= sweep["points"][-1]["cpu_seconds"] < 3.0
        assert sweep["points"][0]["iterations"] < sweep["points"][-1]["iterations"]
    seed0 = json.loads((results / "runs" / "dm-1" / "seed0.json").read_text())
    winner = max(("1", "10"), key=lambda v: sweeps[v]["final"]["mean"])
    assert seed0["chosen_value"] == winner and seed0["split"] == "test" and seed0["run"] == f"sweep/dm-1/{winner}"
    seed1 = json.loads((results / "runs" / "dm-1" / "seed1.json").read_text())
    assert seed1["chosen_value"] == winner
    log = (runs / "logs" / "runs" / "dm-1" / "seed1.log").read_text()
    assert f"--lr {winner}" in log and "--seed 1" in log and "--cpu-limit 1.5s" in log
    # finished jobs are skipped: a second invocation starts nothing
    capsys.readouterr()
    assert study.main(args) == 0
    printed = capsys.readouterr().out
    assert "8 of 8 jobs done" in printed and "starting" not in printed
    # a new machine has the summaries but not the run directories: seed 0 of a swept cell is condensed again
    # with the chosen value (the cross-architecture job of seed 0 follows it)
    import shutil

    shutil.rmtree(runs / "sweep")
    for stale in ("runs/dm-1/seed0.json", "cross/dm-1/seed0.json"):
        (results / stale).unlink()
    assert study.main(args) == 0
    again = json.loads((results / "runs" / "dm-1" / "seed0.json").read_text())
    assert again["run"] == "runs/dm-1/seed0" and again["chosen_value"] == winner and again["split"] == "test"
    assert (results / "cross" / "dm-1" / "seed0.json").exists()
    study_report.write_report(study.load_study(path), results, docs)
    first = (docs / "study.md").read_bytes(), (docs / "study-ipc1.png").read_bytes()
    study_report.write_report(study.load_study(path), results, docs)
    assert ((docs / "study.md").read_bytes(), (docs / "study-ipc1.png").read_bytes()) == first
    page = first[0].decode()
    assert "| dm-1 | `--lr` | " in page and "DM beats random" in page and "| dm-1 | 2 |" in page


def test_statistics_are_students_t_over_seeds():
    mean, low, high = study_report.paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 * 1.0 / 3 ** 0.5, rel=1e-6)
    # 11 seeds: 10 degrees of freedom need 2.228, not the normal 1.96
    values = [float(v) for v in range(11)]
    _, low, high = study_report.paired_interval(values)
    assert (high - low) / 2 == pytest.approx(2.228139 * study_report.statistics.stdev(values) / 11 ** 0.5, rel=1e-6)
    assert study_report.verdict((1.0, 0.5, 1.5), 3, 3) == "holds"
    assert study_report.verdict((-1.0, -1.5, -0.5), 3, 3) == "does not hold"
    assert study_report.verdict((0.2, -0.5, 0.9), 2, 3).startswith("undecided at this budget (so far: 2 of 3")
    assert study_report.verdict(None, 1, 3).startswith("not yet run")
    assert study_report.mean_std([70.0]) == "70.00 (n=1)"
    assert study_report.mean_std([1.0, 3.0]) == "2.00 ± 1.41 (n=2)"
