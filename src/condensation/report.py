"""One self-contained HTML page that compares condensation runs.

``write_html_report(runs, out)`` reads each run directory (results.json, and where present metadata.json,
metrics.jsonl and the artifact) and writes a single file: a leaderboard, then per run its loss curve, the
accuracies of its evaluation networks, where its stored floats go, and its generated images. Continual
runs (a directory with continual.json, ``condense continual``) get a section of their own: the accuracy
plot of every continual run given, then per run the accuracy after each task. Plots are inline
SVG and images base64 PNGs, so the page needs no network and no plotting library. Every string read from a
run (directory names, recipe names, class names...) is escaped: run directories can be hostile.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .artifacts import is_artifact, load_artifact, load_results
from .errors import ArtifactError
from .formatting import PALETTE, format_mean_std

IMAGES_PER_CLASS = 10  # columns of a run's image grid
MAX_CLASSES = 20  # rows of a run's image grid: 25 runs x 200 classes would make a page of tens of megabytes
CELL_PIXELS = 48  # an image is upscaled (nearest neighbour) to about this many screen pixels per side
MAX_CURVE_POINTS = 1000  # a 20,000-iteration run logs thousands of losses; a 400 px plot needs fewer



def e(value) -> str:
    """Escaped text for HTML (and inline SVG): everything from a run directory goes through this."""
    return html.escape(str(value), quote=True)


@dataclass
class Run:
    path: Path
    results: dict
    losses: list[tuple[float, float]] = field(default_factory=list)
    grid: list[tuple[str, str, int]] = field(default_factory=list)  # (class name, PNG data URI, images shown)
    grid_note: str = ""
    notes: list[str] = field(default_factory=list)  # what could not be read, shown in the run's section
    metadata: dict | None = None
    index: int = 0  # anchor of the run's section


# ------------------------------------------------------------------------------------------------ reading
def read_run(directory: Path) -> Run:
    """results.json must be valid (an ArtifactError otherwise: the run has nothing to compare); a missing or
    damaged metrics.jsonl or artifact only becomes a note in the run's section."""
    run = Run(directory, load_results(directory))
    run.losses = read_losses(directory / "metrics.jsonl", run.notes)
    if not is_artifact(directory):
        run.notes.append("no artifact (metadata.json) in this directory: no images to show")
        return run
    try:
        artifact = load_artifact(directory)
    except ArtifactError as error:
        run.notes.append(f"the artifact could not be loaded: {error}")
        return run
    run.metadata = artifact.metadata
    pixels = artifact.container.preprocessing.inverse(artifact.generated_images.float()).clamp(0, 1)
    run.grid, run.grid_note = image_grid(pixels.numpy(), artifact.generated_labels.long().numpy(),
                                         artifact.container.spec.class_names)
    return run


def read_losses(path: Path, notes: list[str]) -> list[tuple[float, float]]:
    """(iteration, loss) pairs of metrics.jsonl; lines that are not such an object are skipped and counted."""
    if not path.exists():
        return []
    points, skipped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            point = (float(record["iteration"]), float(record["loss"]))
        except (ValueError, TypeError, KeyError, RecursionError):
            skipped += bool(line.strip())
            continue
        if all(map(math.isfinite, point)):
            points.append(point)
        else:
            skipped += 1
    if skipped:
        notes.append(f"metrics.jsonl: {skipped} line(s) without a finite iteration and loss were skipped")
    return points


# ------------------------------------------------------------------------------------------- formatting
def number(value, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "–"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_std(stats: dict | None, n: int | None) -> str:
    """'mean ± std (n=k)'; with one value a std of 0.00 would claim a precision nobody measured."""
    if not stats:
        return "–"
    return format_mean_std(stats.get("mean"), stats.get("std"), n, number)


def seconds(value) -> str:
    if not _finite(value):
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def recorded_protocol(results: dict) -> dict:
    """The run's protocol settings; a setting a run's (older) library version did not record yet had the
    library's default then, so it is filled in rather than read as a difference."""
    from .evaluation.protocols import Protocol

    defaults = {f.name: f.default for f in dataclasses.fields(Protocol) if f.default is not dataclasses.MISSING}
    recorded = results["protocol"]
    return {**{k: v for k, v in defaults.items() if k not in recorded}, **recorded}


def protocol_key(results: dict) -> str:
    """Two runs share a protocol only if every setting matches (a name can hide overridden settings); the
    description is prose, not a setting."""
    protocol = {k: v for k, v in recorded_protocol(results).items() if k != "description"}
    return json.dumps(protocol, sort_keys=True, default=str)


def primary_accuracy(results: dict) -> float:
    """The accuracy a leaderboard sorts by: the first architecture's mean (the protocol's main network)."""
    for stats in results["accuracy"].values():
        return stats["mean"] if _finite(stats["mean"]) else -math.inf
    return -math.inf


# ------------------------------------------------------------------------------------------ leaderboard
def leaderboard(runs: list[Run]) -> str:
    architectures = list(dict.fromkeys(name for run in runs for name in run.results["accuracy"]))
    protocols = {protocol_key(run.results): recorded_protocol(run.results) for run in runs}  # distinct, in order
    labels = {key: f"P{i + 1}" for i, key in enumerate(protocols)}
    mixed = len(protocols) > 1
    head = ["run", "dataset", "IPC", "seed", "recipe", "container", "objective", "protocol", "iterations",
            "stored floats (× budget)", "images / class", *[f"{a} accuracy %" for a in architectures],
            "random real %", "wall clock (distill + evaluate)"]
    rows = []
    for run in runs:
        r = run.results
        protocol = r["protocol"]["name"] + (f" [{labels[protocol_key(r)]}]" if mixed else "")
        baseline = r.get("random_baseline")
        wall = r["wall_clock_seconds"]
        cells = [f'<a href="#run-{run.index}">{e(run.path.name)}</a>', e(r["dataset"]), e(r["ipc"]), e(r["seed"]),
                 e(r["recipe"]), e(r["container"]), e(r["objective"] or "–"),
                 f'<span class="{"mixed" if mixed else ""}">{e(protocol)}</span>', e(r.get("iterations", "–")),
                 f'{r["stored_floats"]:,} (× {number(r["budget_ratio"], 3)})'
                 + (f'<br><small>{e(r["budget_statement"])}</small>' if r.get("budget_statement") else ""),
                 e(r["generated_images_per_class"]),
                 *[e(mean_std(r["accuracy"].get(a), r["accuracy"].get(a, {}).get("n"))) + _paper_note(r, i)
                   for i, a in enumerate(architectures)],
                 e(mean_std(baseline, len(baseline["draws"]) if baseline else None)),
                 e(f'{seconds(wall["distill"])} + {seconds(wall.get("evaluate"))}')]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    warning = ""
    if mixed:
        # a name and description can be shared by protocols with overridden settings: show what differs
        differing = [k for k in dict.fromkeys(k for p in protocols.values() for k in p)
                     if k != "description" and len({json.dumps(p.get(k), default=str) for p in protocols.values()}) > 1]
        listed = "".join(f"<li>{labels[key]}: {e(p['name'])} — {e(p.get('description', ''))}<br>differs in: "
                         + e(", ".join(f"{k} = {json.dumps(p.get(k), default=str)}" for k in differing)) +
                         f"<details><summary>all settings</summary><pre>{e(json.dumps(p, indent=1, default=str))}"
                         f"</pre></details></li>" for key, p in protocols.items())
        warning = (f'<div class="warning"><strong>These runs were evaluated under {len(protocols)} different '
                   f'protocols: accuracies under different protocols are not comparable.</strong>'
                   f'<ul>{listed}</ul></div>')
    return (f"<h2>Leaderboard</h2>{warning}<p class='caption'>Sorted by dataset, IPC, then accuracy of the first "
            f"architecture (descending). Accuracy: mean ± std over evaluation networks, n networks.</p>"
            f"<div class='scroll'><table><thead><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


# ------------------------------------------------------------------------------------------------- plots
# matplotlib draws every plot as SVG, inlined so the page stays one self-contained file. Text stays text (the
# browser's sans-serif) and each plot gets ids of its own (the hash salt), so that several inline SVGs on one
# page never share a clip path id.


def _svg(figure, name: str, label: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    start = text.index("<svg")
    return text[start:].replace("<svg", f'<svg role="img" aria-label="{e(label)}"', 1)


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / 100, height / 100), dpi=100, layout="constrained")
    return figure, figure.subplots()


def loss_plot(points: list[tuple[float, float]], width: int = 400, height: int = 220, name: str = "loss") -> str:
    if not points:
        return "<p class='caption'>No losses logged (no metrics.jsonl, or a recipe without iterations).</p>"
    points = points[::max(1, len(points) // MAX_CURVE_POINTS)] + points[-1:]
    figure, axes = _figure(width, height)
    axes.plot([x for x, _ in points], [y for _, y in points], color=PALETTE[0], linewidth=1.5, gid="loss-curve")
    axes.set_xlabel("iteration", fontsize=9)
    axes.set_ylabel("loss", fontsize=9)
    axes.tick_params(labelsize=8)
    axes.grid(color="#e4e4e4")
    return _svg(figure, name, "loss against iteration")


def accuracy_strip(results: dict, width: int = 400, name: str = "accuracy") -> str:
    """One row of dots per architecture (a dot per network, a bar at the mean), plus the random-real draws."""
    rows = []  # (label, values, color)
    for i, (label, stats) in enumerate(results["accuracy"].items()):
        values = stats.get("values") if isinstance(stats.get("values"), list) else [stats["mean"]]
        rows.append((label, [v for v in values if _finite(v)], PALETTE[i % len(PALETTE)]))
    if results.get("random_baseline"):
        rows.append(("random real", [v for v in results["random_baseline"]["draws"] if _finite(v)], "#999999"))
    rows = [row for row in rows if row[1]]
    if not rows:
        return "<p class='caption'>No accuracies (the run was not evaluated).</p>"
    figure, axes = _figure(width, 24 * len(rows) + 50)
    for y, (_, values, color) in enumerate(rows):
        axes.scatter(values, [y] * len(values), s=30, color=color, alpha=0.6)
        axes.plot([sum(values) / len(values)] * 2, [y - 0.3, y + 0.3], color=color, linewidth=2)
    axes.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.set_xlabel("test accuracy %", fontsize=9)
    axes.tick_params(axis="x", labelsize=8)
    axes.grid(axis="x", color="#e4e4e4")
    return _svg(figure, name, "accuracy per network")


def _paper_note(results: dict, column: int) -> str:
    """Under the first accuracy: the paper's statistic where the run asked for it, labelled as test-selected."""
    paper = results.get("paper_report")
    if not paper or column:
        return ""
    return (f'<br><small>paper statistic: {number(paper["mean"], 2)} ({e(paper["statistic"])}; selected on the '
            f'test set)</small>')


def budget_bar(results: dict, width: int = 400, name: str = "budget") -> str:
    """Stored floats by part as one stacked bar, against a line at the budget B (a bar past it is over budget)."""
    stored, ratio = results["stored_floats"], results["budget_ratio"]
    budget = results.get("budget_floats")
    if not (_finite(budget) and budget > 0):  # budget_floats is optional in results.json; the ratio is not
        budget = stored / ratio if _finite(ratio) and ratio > 0 else max(stored, 1)
    by_part = results.get("stored_floats_by_part")
    parts = {label: v for label, v in (by_part if isinstance(by_part, dict) else {"stored": stored}).items()
             if _finite(v) and v > 0}
    figure, axes = _figure(width, 70)
    axes.barh([0], [budget], color="#eeeeee", height=0.6)
    left, legend = 0.0, []
    for i, (label, floats) in enumerate(parts.items()):
        color = PALETTE[i % len(PALETTE)]
        axes.barh([0], [floats], left=left, color=color, height=0.6)
        legend.append(f'<li><span class="swatch" style="background:{color}"></span>{e(label)}: {floats:,.0f} floats '
                      f'({floats / budget:.1%} of budget)</li>')
        left += floats
    axes.axvline(budget, color="#000000", linestyle="--", linewidth=1)
    axes.set_xlim(0, max(budget, left) * 1.02)
    axes.set_yticks([])
    axes.tick_params(axis="x", labelsize=8)
    axes.set_xlabel(f"floats (budget B = {budget:,.0f}, dashed)", fontsize=8)
    return f"{_svg(figure, name, 'stored floats against the budget')}<ul class='legend'>{''.join(legend)}</ul>"


# ------------------------------------------------------------------------------------------------ images
def png_uri(pixels: np.ndarray) -> str:
    """(H, W) or (H, W, 3) floats in [0, 1] -> a data: URI of a PNG."""
    image = Image.fromarray(np.round(np.nan_to_num(pixels) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_grid(pixels: np.ndarray, labels: np.ndarray, class_names) -> tuple[list[tuple[str, str, int]], str]:
    """One PNG strip per class (up to IMAGES_PER_CLASS images, nearest-neighbour upscaled); a strip per class
    keeps each class name an HTML label (escaped text) next to its row instead of text drawn into pixels."""
    channels, height, width = pixels.shape[1:]
    pixels = pixels.transpose(0, 2, 3, 1)
    pixels = pixels[..., :3] if channels >= 3 else pixels[..., 0]  # grey for 1 (or 2) channels
    scale = max(1, round(CELL_PIXELS / max(height, width)))
    gap = np.ones((height * scale, 2) + pixels.shape[3:])  # white between images
    counts = np.array([(labels == c).sum() for c in range(len(class_names))])  # labels from a file: any integers
    rows = []
    for c, name in enumerate(class_names[:MAX_CLASSES]):
        images = pixels[labels == c][:IMAGES_PER_CLASS]
        if not len(images):
            rows.append((name, "", 0))
            continue
        big = images.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest neighbour: 8x8 pixels stay crisp
        strip = np.concatenate([part for image in big for part in (image, gap)][:-1], axis=1)
        rows.append((name, png_uri(strip), len(images)))
    per_class = int(counts.max()) if len(counts) else 0
    note = ("" if counts.min() == per_class else "up to ") + f"{per_class} generated image(s) per class"
    if per_class > IMAGES_PER_CLASS:
        note += f"; showing the first {IMAGES_PER_CLASS}"
    if len(class_names) > MAX_CLASSES:
        note += f"; showing the first {MAX_CLASSES} of {len(class_names)} classes"
    return rows, note + f"; {height}×{width} pixels shown at {scale}×."


# ----------------------------------------------------------------------------------------------- continual
def continual_section(directories: list[Path]) -> str:
    """The plot of every continual run (one line per method, one panel per stream and IPC), then per run a
    table of what was stored and the accuracy after each task."""
    from .results.continual import load_continual, plot_continual

    records = [load_continual(directory) for directory in directories]
    evaluated = [r for r in records if r["tasks"]]
    plot = (f'<img src="data:image/png;base64,{base64.b64encode(plot_continual([], records=evaluated)).decode("ascii")}" '
            f'alt="accuracy on all classes seen against tasks learned">' if evaluated else
            "<p class='caption'>No continual run has an evaluated task yet.</p>")
    protocols = {json.dumps(r["protocol"], sort_keys=True, default=str) for r in records}
    warning = ("<div class='warning'><strong>These continual runs were evaluated under "
               f"{len(protocols)} different protocols: their accuracies are not comparable.</strong></div>"
               if len(protocols) > 1 else "")
    tables = "".join(_continual_run_html(directory, record) for directory, record in zip(directories, records))
    return (f"<section id='continual'><h2>Continual learning</h2>{warning}<p class='caption'>Class-incremental: "
            "after each task, fresh networks are trained from scratch on everything stored so far and tested on "
            "every class seen so far (mean ± std over the evaluation networks; the plot shows the first "
            f"architecture).</p>{plot}{tables}</section>")


def _continual_run_html(directory: Path, r: dict) -> str:
    architectures = list(dict.fromkeys(arch for entry in r["tasks"] for arch in entry["accuracy"]))
    stream_tasks = r["stream"]["tasks"]
    rows = []
    for entry in r["tasks"]:
        task = stream_tasks[entry["task"] - 1] if entry["task"] <= len(stream_tasks) else {}
        task = task if isinstance(task, dict) else {}
        names = next((v for v in (task.get("class_names"), task.get("classes")) if isinstance(v, list)), [])
        classes = f"{task.get('dataset', '?')}: {', '.join(map(str, names))}"
        cells = [entry["task"], classes, entry["classes_seen"], f"{entry['stored_floats']:,}",
                 f"{entry['stored_floats_so_far']:,}",
                 *[mean_std(entry["accuracy"].get(a), entry["accuracy"].get(a, {}).get("n")) for a in architectures]]
        rows.append("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in cells) + "</tr>")
    head = ["task", "classes", "classes seen", "stored floats (task)", "stored floats so far",
            *[f"{a} accuracy % (all seen classes)" for a in architectures]]
    if r.get("finished") and architectures:
        first = architectures[0]
        summary = (f"final accuracy {mean_std(r['final_accuracy'][first], r['final_accuracy'][first]['n'])}, "
                   f"final average accuracy {number(r['final_average_accuracy'][first])}, average incremental "
                   f"accuracy {number(r['average_incremental_accuracy'][first])} ({first}); "
                   f"{r['total_stored_floats']:,} floats stored of a budget of {r['total_budget_floats']:,}")
    else:
        summary = f"unfinished: {len(r['tasks'])} of {len(stream_tasks)} tasks evaluated"
    return (f"<h3>{e(directory.name)} <small>{e(r['label'])} · {e(r['stream']['name'])} · IPC {e(r['ipc'])} · seed "
            f"{e(r['seed'])} · protocol {e(r['protocol']['name'])}</small></h3><p>{e(summary)}</p>"
            f"<div class='scroll'><table><thead><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def grid_html(run: Run) -> str:
    if not run.grid:
        return "<p class='caption'>No generated images available.</p>"
    rows = "".join(f"<tr><th>{e(name)}</th><td>" + (f'<img src="{uri}" alt="generated images of class {e(name)}">'
                                                     if uri else "<em>no images</em>") + "</td></tr>"
                   for name, uri, _ in run.grid)
    return f"<table class='grid'>{rows}</table><p class='caption'>{e(run.grid_note)}</p>"


# -------------------------------------------------------------------------------------------------- page
def run_section(run: Run) -> str:
    r = run.results
    facts = {"directory": str(run.path), "recipe": r["recipe"], "dataset": r["dataset"], "IPC": r["ipc"],
             "seed": r["seed"], "container": r["container"], "objective": r["objective"] or "–",
             "protocol": f'{r["protocol"]["name"]} — {r["protocol"].get("description", "")}',
             "iterations": r.get("iterations", "–"),
             "preprocessing": (run.metadata or {}).get("preprocessing", {}).get("kind", "–"),
             "device / precision": f'{r.get("device", "–")} / {r.get("precision", "–")}',
             "library version": r.get("library_version", "–")}
    if r.get("stopped_by_time_limit"):
        facts["stopped"] = "by the time limit"
    notes = ([f"recipe settings: {r['recipe_fallback']}"] if r.get("recipe_fallback") else []) + run.notes
    return (f'<section id="run-{run.index}"><h2>{e(run.path.name)} <small>{e(r["recipe"])} · {e(r["dataset"])} · '
            f'IPC {e(r["ipc"])}</small></h2>'
            f"<dl>{''.join(f'<dt>{e(k)}</dt><dd>{e(v)}</dd>' for k, v in facts.items())}</dl>"
            + "".join(f"<p class='note'>{e(note)}</p>" for note in notes) +
            f"<div class='panels'><div><h3>Loss</h3>{loss_plot(run.losses, name=f'loss-{run.index}')}</div>"
            f"<div><h3>Accuracy of each evaluation network</h3>{accuracy_strip(r, name=f'accuracy-{run.index}')}</div>"
            f"<div><h3>Budget: where the stored floats go</h3>{budget_bar(r, name=f'budget-{run.index}')}</div></div>"
            f"<h3>Generated images</h3>{grid_html(run)}</section>")


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: middle; }
thead th { background: #f3f3f3; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafafa; }
.scroll { overflow-x: auto; }
.mixed { background: #ffe7a8; padding: 0 3px; border-radius: 3px; white-space: nowrap; }
.warning { background: #fff4d6; border: 1px solid #e0b84f; padding: 8px 12px; margin: 8px 0; }
.note { color: #8a5300; font-size: 13px; }
.caption { color: #666; font-size: 13px; }
h2 small { color: #666; font-weight: normal; font-size: 15px; }
section { border-top: 2px solid #ccc; margin-top: 28px; }
dl { display: grid; grid-template-columns: repeat(4, max-content minmax(0, 1fr)); gap: 2px 12px; font-size: 13px; }
dt { color: #666; } dd { margin: 0; overflow-wrap: anywhere; }
.panels { display: flex; flex-wrap: wrap; gap: 24px; }
svg { height: auto; max-width: 100%; }
.legend { list-style: none; padding: 0; font-size: 13px; margin: 0; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; }
.grid th { font-weight: normal; text-align: right; background: none; }
.grid td { padding: 2px; } .grid img { display: block; image-rendering: pixelated; }
"""


def write_html_report(run_directories: list[Path | str], out: Path | str) -> Path:
    """Write one self-contained HTML page comparing ``run_directories``; returns its path. A run whose
    results.json (or a continual run whose continual.json) is missing or invalid raises ArtifactError (there is
    nothing to compare it by)."""
    from .results.continual import is_continual_run

    continual_runs = [Path(directory) for directory in run_directories if is_continual_run(directory)]
    runs = [read_run(Path(directory)) for directory in run_directories if not is_continual_run(directory)]
    runs.sort(key=lambda run: (run.results["dataset"], run.results["ipc"], -primary_accuracy(run.results)))
    for index, run in enumerate(runs):
        run.index = index
    body = (leaderboard(runs) if runs else "") + "".join(run_section(run) for run in runs)
    if continual_runs:
        body += continual_section(continual_runs)
    count = f"{len(runs)} run(s)" + (f", {len(continual_runs)} continual run(s)" if continual_runs else "")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Condensation report: {count}</title><style>{STYLE}</style></head>"
            f"<body><h1>Condensation report</h1><p class='caption'>{count}</p>{body}</body></html>\n")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
