"""The tables and plots of docs/continual.md, rebuilt from the continual.json summaries that
benchmarks/continual.sh keeps in benchmarks/results/continual/ROW/ (no run directory needed).

    python benchmarks/continual_summary.py table ROW ...   # one markdown table per (stream, IPC), as in the docs
    python benchmarks/continual_summary.py plot ROW ...    # docs/continual-<stream>.png, one panel per IPC
    python benchmarks/continual_summary.py seeds ROW ...   # rows saved for several condensation seeds (ROW-seedS)

RTP rows are labelled with the memories' start (the recipe's xavier, or pca), which the recipe label omits.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from condensation.results.continual import first_architecture, load_continual, plot_continual
from study_report import paired_interval

SUMMARIES = Path(__file__).resolve().parent / "results" / "continual"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def records(rows: list[str]) -> dict[str, dict]:
    """The saved summaries of ``rows`` by row, in order (rows not saved yet are left out), labelled for the docs."""
    found = {}
    for row in rows:
        if not (SUMMARIES / row / "continual.json").is_file():
            continue
        record = load_continual(SUMMARIES / row)
        if record["recipe"] == "rtp":  # the recipe's container start is xavier unless the row overrides it
            start = record["config"]["container_settings"].get("init", "xavier")
            record["label"] = f"{record['label']}, {start} start"
        found[row] = record
    return found


def docs_table(group: dict[str, dict]) -> str:
    """One row per run: the benchmark row, the accuracy after each task (mean ± std over the networks, or the
    one network's), the floats stored after the last task, and the minutes spent condensing and evaluating."""
    tasks = max(len(record["tasks"]) for record in group.values())
    lines = ["| row | method | " + " | ".join(f"after task {t}" for t in range(1, tasks + 1)) +
             " | networks | stored floats | minutes condensing / evaluating |",
             "|---|---|" + "---:|" * tasks + "---:|---:|---:|"]
    for row, record in group.items():
        stats = [first_architecture(entry["accuracy"]) for entry in record["tasks"]]
        shown = [f"{s['mean']:.2f}" + (f" ± {s['std']:.2f}" if s["n"] > 1 else "") for s in stats]
        seconds = [entry["seconds"] for entry in record["tasks"]]
        minutes = [sum(s.get(part, 0.0) for s in seconds) / 60 for part in ("distill", "evaluate")]
        lines.append(f"| `{row}` | {record['label']} | " + " | ".join(shown + ["–"] * (tasks - len(shown))) +
                     f" | {stats[-1]['n']} | {record['tasks'][-1]['stored_floats_so_far']:,} | "
                     f"{minutes[0]:.1f} / {minutes[1]:.1f} |")
    return "\n".join(lines)


def seed_rows(row: str) -> list[str]:
    """``row`` (seed 0) and its ``row-seedS`` runs, by seed."""
    others = sorted(SUMMARIES.glob(f"{row}-seed*/"), key=lambda path: int(path.name.rsplit("seed", 1)[1]))
    return [row, *(path.name for path in others)]


def seeds_table(rows: list[str]) -> str:
    """One line per row saved for two or more seeds: the accuracy after each task as the mean ± std over seeds of
    each seed's mean over its networks, each seed's final accuracy, and the final accuracy's difference from the
    first such row, paired by seed, as mean [95% t interval over the seeds both rows have]."""
    lines, reference = [], None
    for row in rows:
        group = list(records(seed_rows(row)).values())
        if len(group) < 2:
            continue
        tasks = min(len(record["tasks"]) for record in group)
        means = [[first_architecture(record["tasks"][t]["accuracy"])["mean"] for record in group] for t in range(tasks)]
        after = [f"{statistics.mean(m):.2f} ± {statistics.stdev(m):.2f}" for m in means]
        final = {record["seed"]: value for record, value in zip(group, means[-1])}
        shown = ", ".join(f"{seed}: {value:.2f}" for seed, value in final.items())
        if reference is None:
            reference = (row, final)
            lines = ["| row | method | seeds | " + " | ".join(f"after task {t}" for t in range(1, tasks + 1)) +
                     f" | final accuracy by seed | final − `{row}`'s, paired by seed |",
                     "|---|---|---:|" + "---:|" * tasks + "---|---|"]
        paired = [final[seed] - reference[1][seed] for seed in final if seed in reference[1]]
        difference = "–"
        if row != reference[0] and len(paired) >= 2:
            mean, low, high = paired_interval(paired)  # Student's t from scipy (any number of seeds)
            difference = f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] (n={len(paired)})"
        lines.append(f"| `{row}` | {group[0]['label']} | {len(group)} | " + " | ".join(after) +
                     f" | {shown} | {difference} |")
    return "\n".join(lines) if lines else "no row is saved for two or more seeds"


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("table", "plot", "seeds"):
        print(__doc__)
        return 2
    if argv[0] == "seeds":
        print(seeds_table(argv[1:]))
        return 0
    found = records(argv[1:])
    if argv[0] == "table":
        panels: dict[tuple, dict[str, dict]] = {}
        for row, record in found.items():
            panels.setdefault((record["stream"]["name"], record["ipc"]), {})[row] = record
        for (stream, ipc), group in panels.items():
            print(f"\n{stream}, IPC {ipc} per class, protocol {next(iter(group.values()))['protocol']['name']}\n")
            print(docs_table(group))
        return 0
    streams: dict[str, list[dict]] = {}
    for record in found.values():
        streams.setdefault(record["stream"]["name"], []).append(record)
    every_label = [record["label"] for record in found.values()]  # one colour per method across the plot files
    for stream, group in streams.items():
        out = DOCS / f"continual-{stream.removeprefix('split-')}.png"
        plot_continual([], out, records=group, color_order=every_label)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
