"""The public entry points the CLI wraps: ``distill`` (condense, save, evaluate) and ``evaluate_artifact``."""
from __future__ import annotations

import dataclasses
import hashlib
import math
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .artifacts import atomic_write_json, is_artifact, load_artifact, save_artifact
from .containers import create_container
from .data import Preprocessing, load_dataset
from .engine.condense import LoopConfig, OptimizerConfig, condense
from .engine.real import RealPool
from .errors import ConfigError
from .evaluation import AccuracySummary, evaluate_container, get_protocol
from .networks import NETWORKS, create_network
from .objectives import create_objective
from .pruning import POST_CONDENSE
from .recipes import get_recipe
from .registry import build_config
from .runtime import check_precision, tune_process
from .selection import SELECTIONS


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; a config file holds these keys, CLI flags override them."""

    recipe: str
    dataset: str
    ipc: int = 1
    seed: int = 0
    iterations: int | None = None  # None: the recipe's default
    device: str = "auto"
    out: str | None = None
    data_root: str | None = None
    container: str | None = None  # None: the recipe's
    container_settings: dict = field(default_factory=dict)
    objective: str | None = None
    objective_settings: dict = field(default_factory=dict)
    learning_rate: float | None = None
    optimizer: str | None = None  # "sgd" or "adam"; None: the recipe's (momentum and clip stay the recipe's)
    preprocessing: str | None = None  # None: the recipe's ("normalize" or "zca")
    protocol: str | None = None
    protocol_settings: dict = field(default_factory=dict)
    architectures: tuple[str, ...] | None = None
    evaluate: bool = True
    random_baseline: bool = False
    random_baseline_draws: int = 3
    checkpoint_every: int = 50
    validation_fraction: float = 0.1
    budget_ratio: float = 1.0  # > 1 only for explicit over-budget states (HaBa's paper mode)
    post_condense_settings: dict = field(default_factory=dict)  # e.g. HMN pruning: beta_grid, aum_epochs
    progress: bool = True
    precision: str = "fp32"  # "bf16": no-gradient forwards (real features/gradients, test accuracy) in bfloat16
    time_limit: str | float | None = None  # condensation wall clock: seconds, or "90s", "20m", "1.5h"


def load_run_config(path: str | Path, **overrides) -> RunConfig:
    """A JSON or TOML file of RunConfig keys (unknown keys are refused), then overrides."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist")
    if path.suffix == ".toml":
        import tomllib

        values = tomllib.loads(path.read_text())
    else:
        values = json.loads(path.read_text())
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "architectures" in values and values["architectures"] is not None:
        values["architectures"] = tuple(values["architectures"])
    return build_config(RunConfig, values, "run")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
    return device


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


@dataclass
class Plan:
    """A validated run: every name resolved, before any data is read."""

    config: RunConfig
    recipe: object
    container_name: str
    container_settings: dict
    objective_name: str | None
    objective_settings: dict
    optimizer: OptimizerConfig
    iterations: int
    protocol: object
    architectures: tuple[str, ...]
    device: torch.device
    preprocessing: str = "normalize"
    time_limit_seconds: float | None = None
    post_condense_settings: dict = field(default_factory=dict)  # the recipe's, then the run config's
    settings: dict = field(default_factory=dict)  # every resolved value with its source (results.json)


def plan_run(config: RunConfig) -> Plan:
    """Validate names, budgets and settings up front so that bad input fails before work starts."""
    from .data import DATASETS
    from .containers import CONTAINERS
    from .objectives import OBJECTIVES

    if not isinstance(config.ipc, int) or config.ipc < 1:
        raise ConfigError(f"ipc must be an integer >= 1, got {config.ipc!r}")
    DATASETS.get(config.dataset)
    recipe = get_recipe(config.recipe, config.dataset, config.ipc)
    container_name = config.container or recipe.container
    CONTAINERS.get(container_name)
    objective_name = config.objective or recipe.objective
    if objective_name is not None:
        OBJECTIVES.get(objective_name)
    if recipe.selection and (config.objective or config.container):
        raise ConfigError(f"recipe '{recipe.name}' selects real images; it takes no --objective or --container")
    # a recipe's settings belong to its own container, objective and protocol: another one given on the
    # command line starts from that part's defaults
    container_settings = {**(recipe.container_settings if container_name == recipe.container else {}),
                          **config.container_settings}
    objective_settings = {**(recipe.objective_settings if objective_name == recipe.objective else {}),
                          **config.objective_settings}
    # settings are checked by name and type now, not after the data has loaded
    build_config(CONTAINERS.get(container_name).config_class, container_settings, f"container '{container_name}'")
    if objective_name is not None and not recipe.selection:
        build_config(OBJECTIVES.get(objective_name).config_class, objective_settings, f"objective '{objective_name}'")
    iterations = recipe.iterations if config.iterations is None else config.iterations
    if iterations < 0:
        raise ConfigError(f"iterations must be >= 0, got {iterations}")
    learning_rate = config.learning_rate if config.learning_rate is not None else (
        recipe.optimizer.learning_rate * (config.ipc if recipe.learning_rate_times_ipc else 1))
    if config.optimizer is not None and config.optimizer not in ("sgd", "adam"):
        raise ConfigError(f"unknown optimizer '{config.optimizer}'; choose one of: sgd, adam")
    optimizer = dataclasses.replace(recipe.optimizer, learning_rate=learning_rate,
                                    name=config.optimizer or recipe.optimizer.name)
    protocol_name = config.protocol or recipe.protocol
    protocol_settings = {**(recipe.protocol_settings if protocol_name == recipe.protocol else {}),
                         **config.protocol_settings}
    protocol = get_protocol(protocol_name, **protocol_settings)
    architectures = tuple(config.architectures or protocol.architectures)
    for name in architectures:
        NETWORKS.get(name)
    if recipe.post_condense is not None:
        step = POST_CONDENSE.get(recipe.post_condense)
        if getattr(step, "needs_instance_pruning", False) and not CONTAINERS.get(container_name).can_prune_instances:
            able = [name for name in CONTAINERS.names() if getattr(CONTAINERS.get(name), "can_prune_instances", False)]
            raise ConfigError(f"recipe '{recipe.name}' prunes single generated images after condensing, which "
                              f"container '{container_name}' cannot do; use one of: {', '.join(able)}")
    if config.random_baseline_draws < 1:
        raise ConfigError("random_baseline_draws must be >= 1")
    preprocessing = config.preprocessing or recipe.preprocessing
    Preprocessing(preprocessing)  # validates the name
    check_precision(config.precision)
    time_limit = None if config.time_limit is None else parse_duration(config.time_limit)
    post_condense_settings = {**recipe.post_condense_settings, **config.post_condense_settings}
    plan = Plan(config, recipe, container_name, container_settings, objective_name, objective_settings,
                optimizer, iterations, protocol, architectures, resolve_device(config.device), preprocessing,
                time_limit, post_condense_settings)
    plan.settings = _resolved_settings(plan)
    return plan


def _resolved_settings(plan: Plan) -> dict:
    """Every setting the run uses, by dotted key, with where it came from: the recipe's source for the
    (dataset, IPC) cell it resolved to, or "run config" for a flag or config-file value."""
    recipe, config = plan.recipe, plan.config
    used = {"container": plan.container_name, "objective": plan.objective_name, "iterations": plan.iterations,
            "protocol": plan.protocol.name, "preprocessing": plan.preprocessing}
    used.update({f"optimizer.{k}": v for k, v in dataclasses.asdict(plan.optimizer).items()})
    for table, values in (("container_settings", plan.container_settings),
                          ("objective_settings", plan.objective_settings),
                          ("protocol_settings", {k: v for k, v in plan.protocol.settings().items()
                                                 if k in recipe.protocol_settings or k in config.protocol_settings}),
                          ("post_condense_settings", plan.post_condense_settings)):
        used.update({f"{table}.{k}": v for k, v in values.items()})
    recipe_values = recipe.settings()
    resolved = {}
    for key, value in used.items():
        if key in recipe_values and recipe_values[key] == value:
            source = recipe.sources.get(key, "recipe structure" if key in ("container", "objective") else
                                        "library default")
        else:
            source = "run config (command line or config file)"
        resolved[key] = {"value": value, "source": source}
    if recipe.learning_rate_times_ipc and config.learning_rate is None:
        resolved["optimizer.learning_rate"]["source"] += f" (x IPC {config.ipc})"
    return resolved


def parse_duration(value: str | float | int) -> float:
    """Seconds from 3600, "3600", "90s", "20m", "1.5h" (positive and finite)."""
    text = str(value).strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text[-1:], None) if text else None
    number = text[:-1] if scale is not None else text
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"time_limit must be seconds or a duration such as 90s, 20m, 1.5h; got '{value}'") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"time_limit must be positive and finite, got '{value}'")
    return seconds


def fingerprint(config: RunConfig) -> str:
    """Identifies a run's configuration for --resume (progress and output settings excluded)."""
    values = dataclasses.asdict(config)
    # a resumed run may take another time limit: the limit decides where a run stops, not what it computes
    for key in ("progress", "out", "evaluate", "random_baseline", "random_baseline_draws", "device", "time_limit"):
        values.pop(key)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def distill(config: RunConfig, resume: bool = False) -> dict:
    """Condense, save the artifact, evaluate; returns (and writes) results.json's content."""
    plan = plan_run(config)
    tune_process()
    if plan.recipe.fallback:
        print(f"condense: note: {plan.recipe.fallback}", file=sys.stderr)
    out = Path(config.out) if config.out else _default_out(config, resume)
    if is_artifact(out) and not resume:
        raise ConfigError(f"'{out}' already holds a finished artifact; choose another --out (nothing was changed)")
    dataset = load_dataset(config.dataset, config.data_root, validation_fraction=config.validation_fraction)
    for architecture in plan.architectures:  # a network that cannot take these images fails now, not after hours
        create_network(architecture, dataset.spec)
    preprocessing = Preprocessing(plan.preprocessing).fit(dataset.train.images)
    container = create_container(plan.container_name, dataset.spec, config.ipc, preprocessing, **plan.container_settings)
    if container.over_budget_ratio > 1 and plan.recipe.post_condense is None:
        raise ConfigError(f"container '{plan.container_name}' condenses over budget ({container.over_budget_ratio:g} x B) "
                          f"and recipe '{plan.recipe.name}' has no step that brings it back; use --recipe hmn or "
                          "--container-set over_budget=0")
    container.check_budget(max(config.budget_ratio, container.over_budget_ratio))
    objective = (create_objective(plan.objective_name, dataset.spec, plan.device, config.precision, **plan.objective_settings)
                 if plan.objective_name and not plan.recipe.selection else None)
    out.mkdir(parents=True, exist_ok=True)

    generator = torch.Generator().manual_seed(config.seed)
    device = plan.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    real = RealPool(dataset.train, dataset.spec.num_classes, preprocessing, device)
    container = container.to(device)
    started = time.perf_counter()
    iterations_done, stopped_by_time_limit = plan.iterations, False
    if plan.recipe.selection:
        SELECTIONS[plan.recipe.selection](container, real, generator)
        losses = []
    else:
        container.initialize(real, generator)
        result = condense(
            container, objective, real, plan.optimizer, LoopConfig(plan.iterations, config.checkpoint_every),
            generator, checkpoint_path=out / "checkpoint.pt", resume=resume, fingerprint=fingerprint(config),
            metrics_path=out / "metrics.jsonl", progress=config.progress, time_limit=plan.time_limit_seconds,
        )
        losses, iterations_done, stopped_by_time_limit = result.losses, result.iterations, result.stopped_by_time_limit
        if plan.recipe.post_condense is not None:
            if container.over_budget_ratio > 1:  # kept so that pruning can be redone (other beta) without condensing
                save_artifact(out / "over_budget", container, {
                    **_run_metadata(config, plan, objective, losses, iterations_done), "stage": "before post-condensation"})
            step_config = dataclasses.replace(config, protocol=plan.protocol.name,
                                              protocol_settings={k: v for k, v in plan.protocol.settings().items()
                                                                 if k != "name"},
                                              post_condense_settings=plan.post_condense_settings)
            container = POST_CONDENSE.get(plan.recipe.post_condense)(container, dataset, step_config, generator, device)
            container.check_budget(config.budget_ratio)  # whatever was over budget must be back within B
    distill_seconds = time.perf_counter() - started
    metadata = _run_metadata(config, plan, objective, losses, iterations_done)
    objective_values = metadata["objective_values"]
    save_artifact(out, container, metadata)
    (out / "checkpoint.pt").unlink(missing_ok=True)

    results = {
        "recipe": plan.recipe.name, "container": plan.container_name, "objective": plan.objective_name,
        "container_settings": container.construction()["config"], "objective_settings": plan.objective_settings,
        "dataset": config.dataset, "ipc": config.ipc, "seed": config.seed, "iterations": iterations_done,
        "iterations_planned": plan.iterations, "time_limit_seconds": plan.time_limit_seconds,
        "stopped_by_time_limit": stopped_by_time_limit, "precision": config.precision,
        "protocol": plan.protocol.settings(),
        "recipe_settings": plan.settings, "recipe_settings_from": list(plan.recipe.settings_from or ()),
        "recipe_fallback": plan.recipe.fallback,
        "stored_floats": container.stored_floats(), "stored_bytes": container.stored_bytes(),
        "stored_floats_by_part": container.floats_per_part(),
        "budget_floats": container.budget_floats, "budget_ratio": container.stored_floats() / container.budget_floats,
        "generated_images_per_class": container.generated_per_class(),
        "generated_images_total": container.total_generated(),
        "accuracy": {}, "wall_clock_seconds": {"distill": round(distill_seconds, 2), "evaluate": 0.0},
    }
    if config.evaluate:
        started = time.perf_counter()
        accuracy = evaluate_container(container, dataset.test, plan.protocol, config.seed, plan.architectures,
                                      device, objective_values.get("learned_learning_rate"), config.progress,
                                      precision=config.precision)
        results["accuracy"] = {k: dataclasses.asdict(v) for k, v in accuracy.items()}
        if config.random_baseline:
            results["random_baseline"] = random_baseline(dataset, real, preprocessing, config, plan, device)
        results["wall_clock_seconds"]["evaluate"] = round(time.perf_counter() - started, 2)
    results.update(peak_memory_bytes=peak_memory_bytes(device), device=str(device), torch_version=torch.__version__,
                   library_version=__version__, python_version=platform.python_version())
    atomic_write_json(out / "results.json", results)
    return results


def _run_metadata(config: RunConfig, plan: Plan, objective, losses: list[float], iterations_done: int) -> dict:
    objective_values = {k: float(v) for k, v in (objective.artifact_tensors() if objective else {}).items()}
    return {
        "recipe": plan.recipe.name, "dataset": config.dataset, "ipc": config.ipc, "seed": config.seed,
        "config": _jsonable(dataclasses.asdict(config)),
        "objective": {"name": plan.objective_name, "settings": plan.objective_settings} if objective else None,
        "optimizer": dataclasses.asdict(plan.optimizer), "iterations": iterations_done,
        "iterations_planned": plan.iterations, "precision": config.precision,
        "objective_values": objective_values, "final_loss": losses[-1] if losses else None,
    }


def _default_out(config: RunConfig, resume: bool) -> Path:
    """runs/<recipe>-<dataset>-ipc<N>-seed<S>, with -2, -3, ... appended rather than touching a finished run."""
    base = Path("runs") / f"{config.recipe}-{config.dataset}-ipc{config.ipc}-seed{config.seed}"
    candidate, number = base, 1
    while is_artifact(candidate) and not resume:
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def random_baseline(dataset, real: RealPool, preprocessing, config: RunConfig, plan: Plan, device) -> dict:
    """Random real images at the same IPC: ``random_baseline_draws`` independent draws, one network each,
    under the run's protocol and first architecture (the draw alone moves IPC-1 accuracy by ~15 points)."""
    values, draws = [], []
    for draw in range(config.random_baseline_draws):
        generator = torch.Generator().manual_seed(10_000 + 7919 * draw + config.seed)
        pixels = create_container("pixels", dataset.spec, config.ipc, preprocessing).to(device)
        pixels.initialize(real, generator)
        # one network per draw: at small IPC the draw, not the network's initialization, moves accuracy most
        protocol = dataclasses.replace(plan.protocol, networks=1)
        summary = evaluate_container(pixels, dataset.test, protocol, config.seed + draw, plan.architectures[:1], device,
                                     precision=config.precision)
        first = next(iter(summary.values()))
        values += first.values
        draws.append(first.mean)
    summary = AccuracySummary.of(values)
    return {**dataclasses.asdict(summary), "draws": [round(d, 4) for d in draws]}


def evaluate_artifact(path: str | Path, protocol: str = "cpu", architectures=None, seed: int = 0,
                      device: str = "auto", data_root: str | None = None, progress: bool = True,
                      precision: str = "fp32", **protocol_settings) -> dict:
    """Evaluate a saved artifact on its dataset's real test split (``precision`` 'bf16': test forwards in
    bfloat16)."""
    tune_process()
    torch_device = resolve_device(device)
    artifact = load_artifact(path, torch_device)
    meta = artifact.metadata
    chosen = get_protocol(protocol, **protocol_settings)
    dataset = load_dataset(meta["dataset"], data_root or meta["config"].get("data_root"),
                           validation_fraction=meta["config"].get("validation_fraction", 0.1))
    accuracy = evaluate_container(artifact.container, dataset.test, chosen, seed, tuple(architectures or chosen.architectures),
                                  torch_device, artifact.learned_learning_rate, progress, precision=precision)
    return {"artifact": str(path), "protocol": chosen.settings(), "precision": precision,
            "accuracy": {k: dataclasses.asdict(v) for k, v in accuracy.items()}}


def _jsonable(values: dict) -> dict:
    return json.loads(json.dumps(values, default=str))


def python_info() -> str:
    return f"{sys.version.split()[0]} torch {torch.__version__}"
