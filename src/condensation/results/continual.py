"""continual.json: what a continual run records (written by condensation.continual), read back, checked,
printed and plotted. Nothing here imports the training code, so reports and benchmark scripts stay light."""
from __future__ import annotations

import io
import json
from pathlib import Path

from ..errors import ArtifactError
from ..formatting import PALETTE, format_mean_std
from ..io import atomic_write_bytes
from ..schema import ACCURACY, BOOLEAN, COUNT, INTEGER, LIST, NUMBER, POSITIVE, STRING, MapOf, check_schema, read_json

RESULTS_FILE = "continual.json"
PLOT_FILE = "continual.png"


def format_accuracy(stats: dict) -> str:
    return format_mean_std(stats["mean"], stats["std"], stats["n"])


def first_architecture(accuracy: dict) -> dict:
    """The statistics of the protocol's first architecture in an ``accuracy`` entry (what tables and plots show)."""
    return next(iter(accuracy.values()))


# every key the table, the plot and the HTML report read (a run directory can be hostile)
RECORD_SCHEMA = {"kind": STRING, "label": STRING, "recipe": STRING, "ipc": POSITIVE, "seed": INTEGER,
                 "stream": {"name": STRING, "tasks": LIST}, "protocol": {"name": STRING}, "tasks": LIST,
                 "finished": BOOLEAN, "budget_floats_per_task": LIST}
TASK_SCHEMA = {"task": POSITIVE, "classes_seen": POSITIVE, "stored_floats": COUNT, "stored_floats_so_far": COUNT,
               "accuracy": ACCURACY}
SUMMARY_SCHEMA = {"final_accuracy": ACCURACY, "final_average_accuracy": MapOf(NUMBER),
                  "average_incremental_accuracy": MapOf(NUMBER), "total_stored_floats": COUNT,
                  "total_budget_floats": COUNT}


def is_continual_run(directory: str | Path) -> bool:
    return (Path(directory) / RESULTS_FILE).is_file()


def load_continual(directory: str | Path) -> dict:
    """A continual run's continual.json, checked for every key a table, plot or report reads."""
    path = Path(directory) / RESULTS_FILE
    if not path.exists():
        raise ArtifactError(f"'{directory}' holds no continual run (no {RESULTS_FILE})")
    record = read_json(path)
    check_schema(record, RECORD_SCHEMA, "", path)
    if record["kind"] != "continual":
        raise ArtifactError(f"{path}: kind must be \"continual\", got {json.dumps(record['kind'])[:40]}")
    for index, entry in enumerate(record["tasks"]):
        check_schema(entry, TASK_SCHEMA, f"tasks[{index}]", path)
    if record["finished"]:
        check_schema(record, SUMMARY_SCHEMA, "", path)
    return record


def format_continual_table(record: dict) -> str:
    """What ``condense continual`` prints: accuracy after each task, then the stream's summary."""
    architectures = list(record["tasks"][0]["accuracy"]) if record["tasks"] else []
    stream = record["stream"]
    order = f", class order seed {stream['order_seed']}" if stream.get("order_seed") is not None else ""
    lines = [f"continual: {stream['name']} ({len(stream['tasks'])} tasks{order}), {record['label']}, IPC "
             f"{record['ipc']}, seed {record['seed']}, protocol '{record['protocol']['name']}'"]
    header = f"{'task':>4} {'classes':<24} {'seen':>4} {'stored floats':>14} " + " ".join(
        f"{arch + ' accuracy % (seen classes)':>34}" for arch in architectures)
    lines += [header, "-" * len(header)]
    for entry, task in zip(record["tasks"], stream["tasks"]):
        classes = ",".join(map(str, task.get("classes", [])))
        lines.append(f"{entry['task']:>4} {task.get('dataset', '?') + ' ' + classes:<24} {entry['classes_seen']:>4} "
                     f"{entry['stored_floats_so_far']:>14,} " + " ".join(
                         f"{format_accuracy(entry['accuracy'][arch]):>34}" for arch in architectures))
    if record.get("finished"):
        for arch in architectures:
            lines.append(f"{arch}: final accuracy {format_accuracy(record['final_accuracy'][arch])} on all "
                         f"{record['tasks'][-1]['classes_seen']} classes; final average accuracy over the "
                         f"{len(record['tasks'])} tasks {record['final_average_accuracy'][arch]:.2f}; average "
                         f"incremental accuracy {record['average_incremental_accuracy'][arch]:.2f}")
        lines.append(f"stored: {record['total_stored_floats']:,} floats in all (budget "
                     f"{record['total_budget_floats']:,}: {record['ipc']} x C x H x W per class)")
    else:
        lines.append(f"unfinished: {len(record['tasks'])} of {len(stream['tasks'])} tasks evaluated")
    return "\n".join(lines)


def markdown_table(records: list[dict]) -> str:
    """One row per continual run (for ``condense report``): the accuracy after each task and the summary."""
    longest = max((len(r["tasks"]) for r in records), default=0)
    lines = ["| method | stream | IPC | seed | " + " | ".join(f"after task {t}" for t in range(1, longest + 1)) +
             " | final average accuracy | stored floats | protocol |",
             "|---|---|---|---|" + "---|" * longest + "---|---|---|"]
    for r in records:
        after = [format_accuracy(first_architecture(entry["accuracy"])) for entry in r["tasks"]]
        after += ["–"] * (longest - len(r["tasks"]))
        average = (f"{first_architecture(r['final_average_accuracy']):.2f}" if r.get("finished") else "unfinished")
        stored = r["tasks"][-1]["stored_floats_so_far"] if r["tasks"] else 0
        lines.append(f"| {r['label']} | {r['stream']['name']} | {r['ipc']} | {r['seed']} | " + " | ".join(after) +
                     f" | {average} | {stored:,} | {r['protocol']['name']} |")
    return "\n".join(lines)


def plot_continual(
    directories: list[str | Path],
    out: str | Path | None = None,
    records: list[dict] | None = None,
    color_order: list[str] | None = None,
) -> bytes:
    """A PNG of accuracy on all seen classes (mean ± std over the evaluation networks, first architecture)
    against the number of tasks learned: one panel per (stream, IPC), one line per method, a method's colour
    the same in every panel. ``color_order`` (labels) gives the colours, so that several plots drawn apart
    agree; labels not in it follow. Returns the PNG's bytes and writes them to ``out`` when given."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    records = records if records is not None else [load_continual(directory) for directory in directories]
    records = [r for r in records if r["tasks"]]
    if not records:
        raise ArtifactError("no continual run with an evaluated task to plot")
    panels: dict[tuple[str, int], list[dict]] = {}  # (stream, IPC) -> records, in the order given
    for r in records:
        panels.setdefault((r["stream"]["name"], r["ipc"]), []).append(r)
    labels = dict.fromkeys([*(color_order or []), *(r["label"] for r in records)])
    colors = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    legend_rows = max(len(group) for group in panels.values())
    figure = Figure(figsize=(5.6 * len(panels), 4.0 + 0.2 * legend_rows), dpi=100, layout="constrained")
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, ((stream, ipc), group) in zip(axes_list, panels.items()):
        tasks = max(len(r["stream"]["tasks"]) for r in group)
        for r in group:
            stats = [(entry["task"], first_architecture(entry["accuracy"])) for entry in r["tasks"]]
            last = r["tasks"][-1]
            label = (f"{r['label']}: {stats[-1][1]['mean']:.2f}% after task {last['task']}, "
                     f"{last['stored_floats_so_far']:,} floats")
            spread = [s["std"] if s["n"] > 1 else 0.0 for _, s in stats]  # the spread over the evaluation networks
            axes.errorbar([t for t, _ in stats], [s["mean"] for _, s in stats], yerr=spread, color=colors[r["label"]],
                          linewidth=2.5, marker="o", markersize=6, capsize=3, label=label)
        protocols = ", ".join(sorted({r["protocol"]["name"] for r in group}))
        axes.set_title(f"{stream}, IPC {ipc} per class (protocol {protocols})", fontsize=10)
        axes.set_xlabel("tasks learned")
        axes.set_ylabel("accuracy % on all classes seen")
        axes.set_xticks(range(1, tasks + 1))
        axes.grid(color="#e4e4e4")
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    if out is not None:
        atomic_write_bytes(Path(out), buffer.getvalue())
    return buffer.getvalue()
