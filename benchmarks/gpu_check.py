"""Seconds per iteration and peak GPU memory of dm, idc, mtt, rtp (BPTT) and hmn on CIFAR-10-shaped inputs
(3x32x32, 10 classes, random tensors: speed and memory do not depend on the pixels) at IPC 1, 10 and 50, and
one ensemble evaluation (vmap against sequential). Run by benchmarks/gpu_check.sh; at most ~8 minutes on one
GPU (a shared time guard skips what is left and says so).

    python benchmarks/gpu_check.py                          # cuda, the recipes' own settings
    python benchmarks/gpu_check.py --device cpu --quick     # a smoke run of the script itself on a CPU

Prints one JSON line per measurement and a markdown table at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import torch

from condensation.containers import create_container
from condensation.data import DataSpec, Preprocessing, Split
from condensation.data.datasets import Dataset
from condensation.engine.condense import LoopConfig, condense
from condensation.engine.experts import ExpertConfig, train_experts
from condensation.engine.real import RealPool
from condensation.evaluation import evaluate_container, get_protocol
from condensation.objectives import create_objective
from condensation.recipes import get_recipe
from condensation.runtime import tune_process

SPEC = DataSpec(3, 32, 32, 10, tuple(f"class{c}" for c in range(10)))
SPEC_SHAPE = (SPEC.channels, SPEC.height, SPEC.width)
RECIPES = ("dm", "idc", "mtt", "rtp", "hmn")
# settings that are not the recipes' defaults: HMN at B (no pruning step here); MTT's experts are set below
OVERRIDES = {"hmn": ({"over_budget": 0}, {})}


def synthetic_dataset(per_class: int, generator: torch.Generator) -> Dataset:
    def split(n):
        images = torch.rand(n * SPEC.num_classes, *SPEC_SHAPE, generator=generator)
        return Split(images, torch.arange(SPEC.num_classes).repeat_interleave(n))

    return Dataset("synthetic-cifar10-shape", SPEC, split(per_class), split(10), split(100))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(device: torch.device) -> int:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0


def time_recipe(name, ipc, dataset, real, experts_dir, device, iterations, quick) -> dict:
    recipe = get_recipe(name, "cifar10", ipc)  # CIFAR-10-shaped data: the recipes' CIFAR-10 settings
    container_overrides, objective_overrides = OVERRIDES.get(name, ({}, {}))
    objective_settings = {**recipe.objective_settings, **objective_overrides}
    if name == "mtt":
        objective_settings["experts"] = experts_dir
        if quick:
            objective_settings["syn_steps"] = 3
    if quick and name == "rtp":
        objective_settings["inner_steps"] = 3
    preprocessing = real.preprocessing
    container = create_container(recipe.container, SPEC, ipc, preprocessing,
                                 **{**recipe.container_settings, **container_overrides}).to(device)
    objective = create_objective(recipe.objective, SPEC, device, **objective_settings)
    generator = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    container.initialize(real.pool, generator)
    synchronize(device)
    initialize_seconds = time.perf_counter() - started
    optimizer = dataclasses.replace(recipe.optimizer,
                                    learning_rate=recipe.optimizer.learning_rate * (ipc if recipe.learning_rate_times_ipc else 1))
    condense(container, objective, real.pool, optimizer, LoopConfig(1), generator, progress=False)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    condense(container, objective, real.pool, optimizer, LoopConfig(iterations), generator, progress=False)
    synchronize(device)
    seconds = (time.perf_counter() - started) / iterations
    return {"what": f"{name} ipc {ipc}", "seconds_per_iteration": round(seconds, 4), "iterations": iterations,
            "initialize_seconds": round(initialize_seconds, 2), "peak_gpu_mib": round(peak_bytes(device) / 2**20, 1),
            "objective_settings": {k: v for k, v in objective_settings.items() if k != "experts"}}


def time_ensemble(dataset, real, device, quick) -> list[dict]:
    pixels = create_container("pixels", SPEC, 10, real.preprocessing).to(device)
    pixels.initialize(real.pool, torch.Generator().manual_seed(0))
    protocol = get_protocol("dsa", epochs=2 if quick else 100, networks=3 if quick else 10)
    rows = []
    for ensemble in ("vmap", "sequential"):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        summary = evaluate_container(pixels, dataset.test, protocol, 0, ("convnet",), device, ensemble=ensemble)["convnet"]
        synchronize(device)
        rows.append({"what": f"evaluate dsa {protocol.epochs} epochs x {protocol.networks} networks, {ensemble}",
                     "seconds": round(time.perf_counter() - started, 2), "accuracies": summary.values,
                     "peak_gpu_mib": round(peak_bytes(device) / 2**20, 1)})
    return rows


@dataclasses.dataclass
class Real:
    pool: RealPool
    preprocessing: Preprocessing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks that the script runs")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which remaining rows are skipped")
    args = parser.parse_args()
    tune_process()
    device = torch.device(args.device)
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    dataset = synthetic_dataset(20 if args.quick else 500, generator)
    preprocessing = Preprocessing("normalize").fit(dataset.train.images)
    real = Real(RealPool(dataset.train, SPEC.num_classes, preprocessing, device), preprocessing)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(json.dumps({"device": name, "torch": torch.__version__}), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as experts_dir:
        train_experts(dataset, ExpertConfig(experts=1, epochs=3, preprocessing="normalize", real_images=0),
                      experts_dir, torch.Generator().manual_seed(1), device, progress=False)
        for ipc in ((1, 2) if args.quick else (1, 10, 50)):
            for recipe in RECIPES:
                if time.perf_counter() - started > args.budget:
                    rows.append({"what": f"{recipe} ipc {ipc}", "skipped": "time budget spent"})
                    print(json.dumps(rows[-1]), flush=True)
                    continue
                try:
                    rows.append(time_recipe(recipe, ipc, dataset, real, experts_dir, device, 1 if args.quick else 3, args.quick))
                except torch.OutOfMemoryError as error:
                    rows.append({"what": f"{recipe} ipc {ipc}", "error": f"out of memory: {error}"[:200]})
                print(json.dumps(rows[-1]), flush=True)
    for row in time_ensemble(dataset, real, device, args.quick):
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{name}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s in all\n")
    print("| what | s / iteration (or s) | peak GPU MiB |\n|---|---|---|")
    for row in rows:
        value = row.get("seconds_per_iteration", row.get("seconds", row.get("skipped", row.get("error"))))
        print(f"| {row['what']} | {value} | {row.get('peak_gpu_mib', '–')} |")


if __name__ == "__main__":
    main()
