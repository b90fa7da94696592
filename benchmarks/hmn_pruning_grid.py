"""HMN before and after double-end pruning: p in {0, 0.1} x beta in {0, 0.5, 1}, on the validation split and on
the test split, every container evaluated by the same seeded networks (trained once, tested on both splits).

Inputs are two finished `condense distill --recipe hmn` runs (rows hmn-1 and hmn-1-p0 of
benchmarks/fashion_mnist_table.sh): the p = 0.1 run's over-budget container (RUN/over_budget, saved before
pruning) is scored by AUM here (seed --seed, the recipe's pruning settings), pruned for every beta and
evaluated; the p = 0 run's container is at B already (nothing to prune, so beta has no effect).

    .venv/bin/python benchmarks/hmn_pruning_grid.py --over-budget-run runs/table/hmn-1 \\
        --at-budget-run runs/table/hmn-1-p0 --data-root ../shared/data --out runs/table/hmn-pruning-grid.json
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from condensation.artifacts import load_artifact
from condensation.data import load_dataset
from condensation.evaluation import evaluate_on_splits, get_protocol
from condensation.io import atomic_write_json
from condensation.pruning import PruningConfig, budget_count, prune_to_budget, score_container


def evaluate(container, dataset, protocol, seed):
    started = time.perf_counter()
    result = evaluate_on_splits(container, {"validation": dataset.validation, "test": dataset.test}, protocol, seed,
                                protocol.architectures[:1], progress=True)
    summaries = {split: next(iter(per_arch.values())) for split, per_arch in result.items()}
    return {split: {"mean": s.mean, "std": s.std, "values": s.values} for split, s in summaries.items()} | {
        "instances_per_class": container.generated_per_class(), "stored_floats": container.stored_floats(),
        "budget_ratio": container.stored_floats() / container.budget_floats,
        "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--over-budget-run", required=True, help="a finished hmn run with p > 0 (has RUN/over_budget)")
    parser.add_argument("--at-budget-run", required=True, help="a finished hmn run with p = 0")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True, help="JSON file of every number")
    parser.add_argument("--betas", default="0,0.5,1")
    parser.add_argument("--protocol", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    betas = [float(b) for b in args.betas.split(",")]
    over = load_artifact(Path(args.over_budget_run) / "over_budget")
    at_budget = load_artifact(args.at_budget_run)
    meta = over.metadata
    dataset = load_dataset(meta["dataset"], args.data_root, validation_fraction=meta["config"]["validation_fraction"])
    protocol = get_protocol(args.protocol)
    settings = PruningConfig(**meta["config"].get("post_condense_settings", {}))
    rows = []

    print(f"p = 0: {at_budget.container.generated_per_class()} images per class at B", flush=True)
    rows.append({"p": 0.0, "stage": "at B (no pruning; every beta)", "betas": betas,
                 **evaluate(at_budget.container, dataset, protocol, args.seed)})

    container = over.container
    p = container.over_budget_ratio - 1
    print(f"p = {p:g}: {container.generated_per_class()} images per class before pruning", flush=True)
    rows.append({"p": p, "stage": "before pruning (over B)", "betas": [],
                 **evaluate(container, dataset, protocol, args.seed)})
    scores = score_container(container, settings, protocol, torch.Generator().manual_seed(args.seed))
    removed = container.generated_per_class() - budget_count(container)
    by_hardest = {}  # betas that drop the same number of hardest images give the same container
    for beta in betas:
        by_hardest.setdefault(math.floor(beta * removed + 1e-9), []).append(beta)
    for hardest, same in by_hardest.items():
        print(f"beta {same}: drop {hardest} hardest and {removed - hardest} easiest per class", flush=True)
        pruned = prune_to_budget(container, scores, same[0])
        rows.append({"p": p, "stage": f"pruned: {hardest} hardest + {removed - hardest} easiest removed per class",
                     "betas": same, **evaluate(pruned, dataset, protocol, args.seed)})

    report = {"protocol": protocol.settings(), "aum_seed": args.seed, "pruning_settings": settings.__dict__,
              "over_budget_run": args.over_budget_run, "at_budget_run": args.at_budget_run, "rows": rows}
    atomic_write_json(Path(args.out), json.loads(json.dumps(report, default=list)))
    print("\n| p | container | beta | images/class | stored floats / B | validation % | test % |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        betas_shown = ", ".join(f"{b:g}" for b in row["betas"]) or "-"
        print(f"| {row['p']:g} | {row['stage']} | {betas_shown} | {row['instances_per_class']} | "
              f"{row['budget_ratio']:.3f} | {row['validation']['mean']:.2f} ± {row['validation']['std']:.2f} | "
              f"{row['test']['mean']:.2f} ± {row['test']['std']:.2f} |")


if __name__ == "__main__":
    main()
