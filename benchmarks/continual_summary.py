"""The tables and plots of docs/continual.md, rebuilt from the continual.json summaries that
benchmarks/continual.sh keeps in benchmarks/results/continual/ROW/ (no run directory needed).

    python benchmarks/continual_summary.py table ROW ...   # one markdown table per (stream, IPC)
    python benchmarks/continual_summary.py plot ROW ...    # docs/continual-<stream>.png, one panel per IPC

RTP rows are labelled with the memories' start (the recipe's xavier, or pca), which the recipe label omits.
"""
from __future__ import annotations

import sys
from pathlib import Path

from condensation.continual import load_continual, markdown_table, plot_continual

SUMMARIES = Path(__file__).resolve().parent / "results" / "continual"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def records(rows: list[str]) -> list[dict]:
    """The saved summaries of ``rows`` (rows not saved yet are left out), labelled for the docs."""
    found = []
    for row in rows:
        if not (SUMMARIES / row / "continual.json").is_file():
            continue
        record = load_continual(SUMMARIES / row)
        if record["recipe"] == "rtp":  # the recipe's container start is xavier unless the row overrides it
            start = record["config"]["container_settings"].get("init", "xavier")
            record["label"] = f"{record['label']}, {start} start"
        found.append(record)
    return found


def by_stream(found: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for record in found:
        groups.setdefault(record["stream"]["name"], []).append(record)
    return groups


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("table", "plot"):
        print(__doc__)
        return 2
    found = records(argv[1:])
    if argv[0] == "table":
        panels: dict[tuple, list[dict]] = {}
        for record in found:
            panels.setdefault((record["stream"]["name"], record["ipc"]), []).append(record)
        for (stream, ipc), group in panels.items():
            print(f"\n{stream}, IPC {ipc}\n")
            print(markdown_table(group))
        return 0
    for stream, group in by_stream(found).items():
        out = DOCS / f"continual-{stream.removeprefix('split-')}.png"
        plot_continual([], out, records=group)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
