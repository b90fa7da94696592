"""Seconds per outer iteration, real images per second and peak memory of an objective on real data.

    python benchmarks/objective_speed.py --objective dm --dataset fashion_mnist --data-root ../shared/data \
        --ipc 1 --iterations 10 --set real_per_class=64

Each configuration runs in this process after one warm-up iteration; run one configuration per process when
comparing peak memory (peak RSS only grows).
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from condensation.cli import _key_values
from condensation.containers import create_container
from condensation.data import Preprocessing, load_dataset
from condensation.engine.condense import LoopConfig, OptimizerConfig, condense
from condensation.engine.real import RealPool
from condensation.objectives import create_objective
from condensation.recipes import get_recipe
from condensation.runtime import tune_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objective", default="dm")
    parser.add_argument("--recipe", help="take container and objective settings from this recipe")
    parser.add_argument("--container", default="pixels")
    parser.add_argument("--container-set", action="append")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", help="objective setting KEY=VALUE")
    args = parser.parse_args()
    tune_process()  # what the library's entry points do (allocator, denormals)
    torch.set_num_threads(args.threads)

    container_name, objective_name = args.container, args.objective
    container_settings, objective_settings, preprocessing_kind = {}, {}, "normalize"
    if args.recipe:
        recipe = get_recipe(args.recipe, args.dataset, args.ipc)  # the settings a run of it would resolve to
        container_name, objective_name = recipe.container, recipe.objective
        container_settings, objective_settings = dict(recipe.container_settings), dict(recipe.objective_settings)
        preprocessing_kind = recipe.preprocessing
    container_settings.update(_key_values(args.container_set, "--container-set"))
    objective_settings.update(_key_values(args.set, "--set"))

    dataset = load_dataset(args.dataset, args.data_root)
    preprocessing = Preprocessing(preprocessing_kind).fit(dataset.train.images)
    real = RealPool(dataset.train, dataset.spec.num_classes, preprocessing)
    container = create_container(container_name, dataset.spec, args.ipc, preprocessing, **container_settings)
    objective = create_objective(objective_name, dataset.spec, **objective_settings)
    generator = torch.Generator().manual_seed(0)
    container.initialize(real, generator)
    optimizer = OptimizerConfig(learning_rate=1e-3)
    condense(container, objective, real, optimizer, LoopConfig(1), generator, progress=False)  # warm-up
    started = time.perf_counter()
    condense(container, objective, real, optimizer, LoopConfig(args.iterations), generator, progress=False)
    seconds = (time.perf_counter() - started) / args.iterations
    real_per_iteration = getattr(objective.config, "real_per_class", 0) * dataset.spec.num_classes
    print(json.dumps({
        "objective": objective_name, "container": container_name, "dataset": args.dataset, "ipc": args.ipc,
        "objective_settings": objective_settings, "threads": args.threads,
        "seconds_per_iteration": round(seconds, 4),
        "real_images_per_iteration": real_per_iteration,
        "real_images_per_second": round(real_per_iteration / seconds, 1) if real_per_iteration else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
