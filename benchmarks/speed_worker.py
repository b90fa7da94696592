"""One timing of speed_compare.py, run in a fresh process against whichever `condensation` is on PYTHONPATH.

    PYTHONPATH=SRC python benchmarks/speed_worker.py iteration dm 3
    PYTHONPATH=SRC python benchmarks/speed_worker.py evaluate cpu

Uses only functions that exist both at 25aee08 and on main, so that the old and the new library run the same
work. Prints one JSON line. The settings are the Fashion-MNIST IPC 1 table's (benchmarks/fashion_mnist_table.sh).
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch

EXPERTS = os.environ.get("EXPERTS", "runs/table/experts-cpu")
DATA = os.environ.get("DATA", "../shared/data")

# recipe -> (container overrides, objective overrides, container learning rate or None for the recipe's)
TABLE_SETTINGS = {
    "dm": ({}, {"real_per_class": 64}, 10.0),
    "echo": ({}, {"real_per_class": 64}, 1.0),
    "dc": ({"init": "real"}, {"real_per_class": 64}, 1.0),
    "dsa": ({}, {"real_per_class": 64}, 1.0),
    "idc": ({}, {"distance": "l1"}, 0.001),
    "mtt": ({}, {"experts": EXPERTS}, None),
    "hmn": ({"over_budget": 0}, {"distance": "l1"}, None),
    "rtp": ({}, {"inner_steps": 10, "synthetic_per_class": 10}, None),
    "haba": ({"hallucinator_learning_rate": 0.01}, {"experts": EXPERTS, "batch_syn": 20}, 10.0),
}


def _new_library_settings() -> str:
    """What the library's entry points do on main (absent at 25aee08): process speed settings, precision."""
    try:
        from condensation.runtime import tune_process
    except ImportError:
        return "fp32"
    tune_process()
    return os.environ.get("PRECISION", "fp32")


def _dataset():
    from condensation.data import Preprocessing, load_dataset

    dataset = load_dataset("fashion_mnist", DATA)
    return dataset, Preprocessing


def time_iterations(recipe_name: str, iterations: int) -> dict:
    import dataclasses

    from condensation.containers import create_container
    from condensation.engine.condense import LoopConfig, condense
    from condensation.engine.real import RealPool
    from condensation.objectives import create_objective
    from condensation.recipes import get_recipe

    precision = _new_library_settings()
    recipe = get_recipe(recipe_name)
    container_overrides, objective_overrides, learning_rate = TABLE_SETTINGS[recipe_name]
    dataset, Preprocessing = _dataset()
    preprocessing = Preprocessing(recipe.preprocessing).fit(dataset.train.images)
    real = RealPool(dataset.train, dataset.spec.num_classes, preprocessing)
    container = create_container(recipe.container, dataset.spec, 1, preprocessing,
                                 **{**recipe.container_settings, **container_overrides})
    settings = {**recipe.objective_settings, **objective_overrides}
    objective = (create_objective(recipe.objective, dataset.spec, "cpu", precision, **settings) if precision != "fp32"
                 else create_objective(recipe.objective, dataset.spec, **settings))
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    container.initialize(real, generator)
    initialize_seconds = time.perf_counter() - started
    optimizer = recipe.optimizer if learning_rate is None else dataclasses.replace(recipe.optimizer, learning_rate=learning_rate)
    condense(container, objective, real, optimizer, LoopConfig(1), generator, progress=False)  # warm-up
    started = time.perf_counter()
    condense(container, objective, real, optimizer, LoopConfig(iterations), generator, progress=False)
    seconds = (time.perf_counter() - started) / iterations
    return {"what": f"iteration {recipe_name}", "seconds": round(seconds, 3), "iterations": iterations,
            "initialize_seconds": round(initialize_seconds, 2), "precision": precision}


def time_evaluation(protocol_name: str) -> dict:
    """cpu: the protocol's 3 networks on 10 random real images, total seconds; dsa: one network of 300
    epochs (the issue's measurement), seconds per network. Each includes testing on the 10,000 test images."""
    from condensation.containers import create_container
    from condensation.engine.real import RealPool
    from condensation.evaluation import evaluate_container, get_protocol

    precision = _new_library_settings()
    dataset, Preprocessing = _dataset()
    preprocessing = Preprocessing("normalize").fit(dataset.train.images)
    real = RealPool(dataset.train, dataset.spec.num_classes, preprocessing)
    pixels = create_container("pixels", dataset.spec, 1, preprocessing)
    pixels.initialize(real, torch.Generator().manual_seed(0))
    protocol = get_protocol("cpu") if protocol_name == "cpu" else get_protocol("dsa", epochs=300, networks=1)
    extra = {"precision": precision} if precision != "fp32" else {}
    started = time.perf_counter()
    summary = evaluate_container(pixels, dataset.test, protocol, 0, ("convnet",), "cpu", **extra)["convnet"]
    seconds = time.perf_counter() - started
    per = "per 3 networks" if protocol_name == "cpu" else "per network"
    return {"what": f"evaluate {protocol_name} ({per})", "seconds": round(seconds, 2),
            "accuracy": [round(v, 2) for v in summary.values], "precision": precision}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    kind = sys.argv[1]
    result = (time_iterations(sys.argv[2], int(sys.argv[3])) if kind == "iteration" else time_evaluation(sys.argv[2]))
    import condensation

    result["library"] = os.path.dirname(os.path.dirname(condensation.__file__))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
