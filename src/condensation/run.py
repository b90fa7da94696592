"""The public entry points the CLI wraps: ``distill`` (condense, save, evaluate) and ``evaluate_artifact``."""
from __future__ import annotations

import contextlib
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

from . import __version__, distributed
from .artifacts import is_artifact, load_artifact, save_artifact
from .containers import create_container
from .data import Preprocessing, load_dataset
from .engine.checkpoint import fingerprint_of_checkpoint
from .engine.condense import LoopConfig, OptimizerConfig, condense
from .engine.real import RealPool
from .errors import ConfigError
from .evaluation import AccuracySummary, evaluate_container, get_protocol
from .io import DirectoryLock, atomic_write_json, tomllib
from .networks import NETWORKS, create_network
from .objectives import create_objective
from .pruning import POST_CONDENSE
from .recipes import get_recipe
from .registry import build_config
from .runtime import check_precision, phase, resolve_device, tune_process
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
    dataset_settings: dict = field(default_factory=dict)  # e.g. image_folder's image_size
    container: str | None = None  # None: the recipe's
    container_settings: dict = field(default_factory=dict)
    objective: str | None = None
    objective_settings: dict = field(default_factory=dict)
    learning_rate: float | None = None
    optimizer: str | None = None  # "sgd" or "adam"; None: the recipe's (momentum and clip stay the recipe's)
    isolate_classes: bool | None = None  # per-class optimizer state for per-class steps; None: the recipe's (false)
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
    cpu_limit: str | float | None = None  # condensation process CPU seconds (same forms): a budget contention cannot bend
    snapshots: tuple[float, ...] = ()  # fractions of the budget at which OUT/snapshots/<percent>/ is saved and evaluated
    evaluation_split: str = "test"  # "validation": accuracies on the held-out validation split (for choosing settings)
    report: str = "final"  # "paper": also the paper's statistic (e.g. MTT's best of evaluations every 100 iterations)
    allow_repeated_images: bool = False  # True: an IPC above a class's image count samples with replacement
    tensorboard: str | None = None  # a folder for TensorBoard event files: the loss per iteration, the accuracies
    wandb: str | None = None  # a Weights & Biases project for the same scalars (needs wandb installed)


def load_run_config(path: str | Path, **overrides) -> RunConfig:
    """A JSON or TOML file of RunConfig keys (unknown keys are refused), then overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist (or is not a file)")
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"config file '{path}' must be .toml or .json, got '{path.suffix or 'no suffix'}'")
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # TOML and JSON syntax errors are ValueErrors
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"config file '{path}' is not valid {path.suffix[1:].upper()}: {first}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a table of settings, got {type(values).__name__}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(RunConfig, values, "run")


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
    cpu_limit_seconds: float | None = None
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
                                    name=config.optimizer or recipe.optimizer.name,
                                    isolate_classes=(recipe.optimizer.isolate_classes if config.isolate_classes is None
                                                     else config.isolate_classes))
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
    if config.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {config.seed}")
    if config.checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every must be >= 0 (0: never), got {config.checkpoint_every}")
    if not 0.0 <= config.validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {config.validation_fraction}")
    if config.budget_ratio < 1.0:
        raise ConfigError(f"budget_ratio must be >= 1 (it only allows explicit over-budget states), got {config.budget_ratio}")
    if config.learning_rate is not None and not config.learning_rate > 0:
        raise ConfigError(f"learning_rate must be > 0, got {config.learning_rate}")
    if config.post_condense_settings and recipe.post_condense is None:
        raise ConfigError(f"recipe '{recipe.name}' has no post-condensation step; --post-condense-set "
                          f"{', '.join(config.post_condense_settings)} would do nothing")
    preprocessing = config.preprocessing or recipe.preprocessing
    Preprocessing(preprocessing)  # validates the name
    check_precision(config.precision)
    time_limit = None if config.time_limit is None else parse_duration(config.time_limit)
    cpu_limit = None if config.cpu_limit is None else parse_duration(config.cpu_limit, "cpu_limit")
    if config.evaluation_split not in EVALUATION_SPLITS:
        raise ConfigError(f"evaluation_split must be one of {', '.join(EVALUATION_SPLITS)}, got '{config.evaluation_split}'")
    if config.report not in REPORTS:
        raise ConfigError(f"report must be one of {', '.join(REPORTS)}, got '{config.report}'")
    if config.report == "paper":
        if not recipe.paper_report:
            raise ConfigError(f"recipe '{recipe.name}' reports its final set, as its paper does; --report paper applies "
                              "to recipes whose papers report the best of evaluations during condensation (mtt, haba)")
        if config.evaluation_split != "test" or not config.evaluate:
            raise ConfigError("--report paper evaluates on the test set during condensation, as the paper does; it "
                              "needs evaluation on the test split")
    snapshots = tuple(config.snapshots)
    if any(not isinstance(f, (int, float)) or not 0 < f < 1 for f in snapshots) or len(set(snapshots)) != len(snapshots):
        raise ConfigError("snapshots must be distinct fractions strictly between 0 and 1 (e.g. 0.25, 0.5), got "
                          f"{list(snapshots)}")
    if snapshots and recipe.selection:
        raise ConfigError(f"recipe '{recipe.name}' selects real images without condensing; it has no snapshots")
    post_condense_settings = {**recipe.post_condense_settings, **config.post_condense_settings}
    plan = Plan(config, recipe, container_name, container_settings, objective_name, objective_settings,
                optimizer, iterations, protocol, architectures, resolve_device(config.device), preprocessing,
                time_limit, cpu_limit, post_condense_settings)
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


def parse_duration(value: str | float | int, name: str = "time_limit") -> float:
    """Seconds from 3600, "3600", "90s", "20m", "1.5h" (positive and finite); ``name`` is the field errors name."""
    text = str(value).strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text[-1:], None) if text else None
    number = text[:-1] if scale is not None else text
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"{name} must be seconds or a duration such as 90s, 20m, 1.5h; got '{value}'") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{name} must be positive and finite, got '{value}'")
    return seconds


# settings that decide where a run stops, what it prints or how it is evaluated, not what it computes: a resumed
# run may change them (continual runs use the same list)
NOT_FINGERPRINTED = frozenset({"progress", "out", "evaluate", "random_baseline", "random_baseline_draws", "device",
                               "time_limit", "cpu_limit", "snapshots", "evaluation_split", "report", "tensorboard",
                               "wandb"})


def fingerprint_of(values: dict) -> str:
    """sha256 of a configuration's values, NOT_FINGERPRINTED keys left out."""
    kept = {key: value for key, value in values.items() if key not in NOT_FINGERPRINTED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(config: RunConfig) -> str:
    """Identifies a run's configuration for --resume."""
    return fingerprint_of(dataclasses.asdict(config))


def distill(config: RunConfig, resume: bool = False) -> dict:
    """Condense, save the artifact, evaluate; returns (and writes) results.json's content.

    The run directory is held by one process at a time (``DirectoryLock``) and moves through stages:
    checkpoint.pt while condensing; over_budget/ + post_condense.json before a post-condensation step (HMN's
    pruning); the artifact (metadata.json last); results.json last of all. ``resume`` continues from whatever
    stage a killed run reached, with the same configuration; without it, a directory holding any stage is
    refused rather than overwritten or silently restarted."""
    plan = plan_run(config)
    tune_process()
    distributed.initialize(plan.device)  # under torchrun: join the process group (nothing otherwise)
    distributed.check_same((fingerprint(config), config.out, resume), "run configurations")
    writer = distributed.is_writer()
    if not writer:  # rank 0 speaks for the run
        config = dataclasses.replace(config, progress=False)
    if plan.recipe.fallback and writer:
        print(f"condense: note: {plan.recipe.fallback}", file=sys.stderr)
    out = Path(config.out) if config.out else distributed.decide_on_rank_zero(_default_out, config, resume)
    with DirectoryLock(out) if writer else contextlib.nullcontext():
        results = _distill_in(out, config, plan, resume)
    distributed.barrier()  # no rank reports success before rank 0 has written everything
    return results


def run_stage(out: Path, run_fingerprint: str, resume: bool) -> str:
    """What a run into ``out`` does: "fresh", "condense" (resume the checkpoint), "post_condense", "evaluate"
    (the artifact exists, its evaluation did not finish) or "done". Refuses anything that would overwrite a
    finished run, mix two configurations, or silently start over."""
    if (out / "results.json").exists():
        stage = "done"
    elif is_artifact(out):
        stage = "evaluate"
    elif (out / POST_CONDENSE_STATE).exists() and is_artifact(out / "over_budget"):
        stage = "post_condense"
    elif (out / "checkpoint.pt").exists():
        stage = "condense"
    else:
        stage = "fresh"
    if not resume:
        if stage == "done":
            raise ConfigError(f"'{out}' already holds a finished artifact; choose another --out (nothing was changed)")
        if stage != "fresh":
            what = {"evaluate": "an artifact whose evaluation did not finish",
                    "post_condense": "a condensed container waiting for its post-condensation step",
                    "condense": "the checkpoint of an unfinished run"}[stage]
            raise ConfigError(f"'{out}' holds {what}; pass --resume to continue it, or delete the directory (or "
                              "choose another --out) to start over")
        return stage
    if stage == "fresh":
        raise ConfigError(f"nothing to resume in '{out}' (no checkpoint, no artifact); run without --resume to start")
    stored = _stored_fingerprint(out, stage)
    if stored != run_fingerprint:
        raise ConfigError(f"'{out}' holds a run of another configuration; --resume needs the same settings "
                          "(nothing was changed)")
    return stage


POST_CONDENSE_STATE = "post_condense.json"


def _stored_fingerprint(out: Path, stage: str) -> str | None:
    if stage == "condense":
        return fingerprint_of_checkpoint(out / "checkpoint.pt")
    path = out / POST_CONDENSE_STATE if stage == "post_condense" else out / "metadata.json"
    try:
        return json.loads(path.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        raise ConfigError(f"'{path}' is unreadable; delete the directory (or choose another --out) to start over") from None


def check_dataset_for_run(dataset, config: RunConfig) -> None:
    """Inputs that cannot give a meaningful result: fewer than two classes, a class without test images, or
    an IPC above what the smallest class holds (unless repeats are allowed)."""
    spec = dataset.spec
    if spec.num_classes < 2:
        raise ConfigError(f"dataset '{dataset.name}' has {spec.num_classes} class; condensation needs at least two")
    train_counts = torch.bincount(dataset.train.labels, minlength=spec.num_classes)
    test_counts = torch.bincount(dataset.test.labels, minlength=spec.num_classes)
    for counts, split in ((train_counts, "training"), (test_counts, "test")):
        empty = [spec.class_names[c] for c in range(spec.num_classes) if counts[c] == 0]
        if empty:
            raise ConfigError(f"class(es) {', '.join(map(repr, empty))} of '{dataset.name}' have no {split} images")
    smallest = int(train_counts.min())
    if config.ipc > smallest and not config.allow_repeated_images:
        name = spec.class_names[int(train_counts.argmin())]
        raise ConfigError(f"ipc {config.ipc} exceeds the {smallest} training images of class '{name}' (after the "
                          "validation split): lower --ipc, or set allow_repeated_images = true to sample with "
                          "replacement")


def _distill_in(out: Path, config: RunConfig, plan: Plan, resume: bool) -> dict:
    run_fingerprint = fingerprint(config)
    stage = distributed.decide_on_rank_zero(run_stage, out, run_fingerprint, resume)
    if stage == "done":
        if distributed.is_writer():
            print(f"condense: '{out}' has already finished; its results are unchanged", file=sys.stderr)
        return json.loads((out / "results.json").read_text())
    with run_log(config) if distributed.is_writer() else contextlib.nullcontext() as log:  # one log for the whole run
        return _distill_stages(out, config, plan, stage, run_fingerprint, resume, log)


def _distill_stages(out: Path, config: RunConfig, plan: Plan, stage: str, run_fingerprint: str, resume: bool,
                    log) -> dict:
    with phase(f"loading {config.dataset}", config.progress):
        dataset = load_dataset(config.dataset, config.data_root, validation_fraction=config.validation_fraction,
                               **config.dataset_settings)
    check_dataset_for_run(dataset, config)
    for architecture in plan.architectures:  # a network that cannot take these images fails now, not after hours
        create_network(architecture, dataset.spec)
    device = plan.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    writer = distributed.is_writer()
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(config.seed)
    objective = (create_objective(plan.objective_name, dataset.spec, plan.device, config.precision, **plan.objective_settings)
                 if plan.objective_name and not plan.recipe.selection else None)

    if stage == "evaluate":  # condensed and saved; only the evaluation is left
        artifact = load_artifact(out, device)
        container, metadata = artifact.container, artifact.metadata
        real = RealPool(dataset.train, dataset.spec.num_classes, container.preprocessing, device)
    else:
        if stage == "post_condense":
            container, record = _load_post_condense_state(out, device, generator)
        else:
            container, record = _condense_stage(out, config, plan, dataset, objective, generator, resume,
                                                run_fingerprint, log)
        real = RealPool(dataset.train, dataset.spec.num_classes, container.preprocessing, device)
        if plan.recipe.post_condense is not None:
            started = time.perf_counter()
            container = _post_condense(container, dataset, config, plan, generator, device)
            record["seconds"] += time.perf_counter() - started
        container.check_finite()
        metadata = _run_metadata(config, plan, record, run_fingerprint)
        if writer:
            save_artifact(out, container, metadata)
    objective_values = metadata["objective_values"]
    results = {
        "recipe": plan.recipe.name, "container": plan.container_name, "objective": plan.objective_name,
        "container_settings": container.construction()["config"], "objective_settings": plan.objective_settings,
        "dataset": config.dataset, "ipc": config.ipc, "seed": config.seed, "iterations": metadata["iterations"],
        "iterations_planned": plan.iterations, "time_limit_seconds": plan.time_limit_seconds,
        "stopped_by_time_limit": metadata["stopped_by_time_limit"], "cpu_limit_seconds": plan.cpu_limit_seconds,
        "stopped_by_cpu_limit": metadata.get("stopped_by_cpu_limit", False),
        "condense_cpu_seconds": metadata.get("condense_cpu_seconds"), "precision": config.precision,
        "protocol": plan.protocol.settings(), "evaluation_split": config.evaluation_split,
        "recipe_settings": plan.settings, "recipe_settings_from": list(plan.recipe.settings_from or ()),
        "recipe_fallback": plan.recipe.fallback,
        "stored_floats": container.stored_floats(), "stored_bytes": container.stored_bytes(),
        "stored_floats_by_part": container.floats_per_part(),
        "budget_floats": container.budget_floats, "budget_ratio": container.stored_floats() / container.budget_floats,
        "budget_statement": container.budget_statement(),
        "generated_images_per_class": container.generated_per_class(),
        "generated_images_total": container.total_generated(),
        "accuracy": {}, "wall_clock_seconds": {"distill": round(metadata["distill_seconds"], 2), "evaluate": 0.0},
    }
    if config.evaluate:
        started = time.perf_counter()
        if config.progress:
            print(f"condense: evaluating under protocol '{plan.protocol.name}': {plan.protocol.networks} network(s) "
                  f"per architecture ({', '.join(plan.architectures)})", file=sys.stderr, flush=True)
        accuracy = _evaluate(container, dataset, config, plan, device, objective_values.get("learned_learning_rate"))
        results.update(accuracy)
        for architecture, summary in next(iter(accuracy.values())).items() if log is not None else ():
            log.add_scalar(f"accuracy/{architecture}", summary["mean"], metadata["iterations"])
        if config.random_baseline:
            with phase(f"random real images at IPC {config.ipc}: {config.random_baseline_draws} draw(s), one network "
                       "each", config.progress):
                results["random_baseline"] = random_baseline(dataset, real, container.preprocessing, config, plan,
                                                             device)
        results["wall_clock_seconds"]["evaluate"] = round(time.perf_counter() - started, 2)
    if config.snapshots:
        results["snapshots"] = _finish_snapshots(out, config, plan, dataset, device)
    if config.report == "paper" and results.get("accuracy"):
        first = next(iter(results["accuracy"]))
        results["paper_report"] = {**paper_statistic(out, plan.recipe.paper_report,
                                                     {first: results["accuracy"][first]}, metadata["iterations"]),
                                   "source": plan.recipe.sources.get("paper_report.every", "")}
    results.update(peak_memory_bytes=peak_memory_bytes(device), device=str(device), torch_version=torch.__version__,
                   world_size=distributed.world_size(),
                   library_version=__version__, python_version=platform.python_version())
    if writer:
        atomic_write_json(out / "results.json", results)
        for leftover in ("checkpoint.pt", POST_CONDENSE_STATE):  # kept until now: a kill above resumes, not redoes
            (out / leftover).unlink(missing_ok=True)
    return results


EVALUATION_SPLITS = ("test", "validation")
REPORTS = ("final", "paper")
# networks that measure validation accuracy draw other seeds than the test networks of the same run, so that a
# setting chosen on validation is then tested by networks its choice did not see
VALIDATION_NETWORK_SEED_OFFSET = 1_000_003


def _evaluate(container, dataset, config: RunConfig, plan: Plan, device, learned_learning_rate=None) -> dict:
    """{"accuracy": {arch: summary}} on the test split, or {"validation_accuracy": ...} on the validation split."""
    if config.evaluation_split == "validation":
        if len(dataset.validation) == 0:
            raise ConfigError("evaluation_split 'validation' needs a validation split: set validation_fraction > 0")
        split, seed, key = dataset.validation, config.seed + VALIDATION_NETWORK_SEED_OFFSET, "validation_accuracy"
    else:
        split, seed, key = dataset.test, config.seed, "accuracy"
    accuracy = evaluate_container(container, split, plan.protocol, seed, plan.architectures, device,
                                  learned_learning_rate, config.progress, precision=config.precision)
    return {key: {k: dataclasses.asdict(v) for k, v in accuracy.items()}}


def _post_condense(container, dataset, config: RunConfig, plan: Plan, generator: torch.Generator, device):
    """The recipe's post-condensation step (HMN's pruning), under the run's protocol; back within B after it."""
    step_config = dataclasses.replace(config, protocol=plan.protocol.name,
                                      protocol_settings={k: v for k, v in plan.protocol.settings().items()
                                                         if k != "name"},
                                      post_condense_settings=plan.post_condense_settings)
    with phase(f"post-condensation step '{plan.recipe.post_condense}'", config.progress):
        container = POST_CONDENSE.get(plan.recipe.post_condense)(container, dataset, step_config, generator, device)
    container.check_budget(max(config.budget_ratio, container.declared_budget_ratio))  # back within B
    return container


PAPER_EVALUATIONS = "paper_evaluations.jsonl"


def _paper_evaluates_at(report: dict, iterations: int, spent: float) -> bool:
    """The paper's evaluation points: every ``every`` iterations within the last ``window`` of the budget
    (MTT: every 100 from iteration 0; HaBa: every 100 in the last 10%)."""
    return iterations % report["every"] == 0 and spent >= 1.0 - report["window"] - 1e-12


def _paper_evaluation(out: Path, container, dataset, config: RunConfig, plan: Plan, iterations: int,
                      learned_learning_rate) -> None:
    """Test accuracy of the container as it stands, appended to OUT/paper_evaluations.jsonl (once per
    iteration: a resumed run that passes the same point again keeps the first record)."""
    path = out / PAPER_EVALUATIONS
    if any(row["iteration"] == iterations for row in _read_paper_evaluations(path)):
        return
    accuracy = evaluate_container(container, dataset.test, plan.protocol, config.seed, plan.architectures[:1],
                                  plan.device, learned_learning_rate, False, precision=config.precision)
    if distributed.is_writer():
        from .io import append_line

        append_line(path, json.dumps({"iteration": iterations, "accuracy": {
            k: dataclasses.asdict(v) for k, v in accuracy.items()}}))


def _read_paper_evaluations(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # a torn last line from a kill
    return rows


def paper_statistic(out: Path, report: dict, final: dict, final_iteration: int) -> dict:
    """The paper's reported number: the best mean test accuracy over its evaluation points (the final set
    included, as the official loops evaluate their last iteration), *selected on the test set*."""
    rows = _read_paper_evaluations(out / PAPER_EVALUATIONS)
    if not any(row["iteration"] == final_iteration for row in rows):
        rows.append({"iteration": final_iteration, "accuracy": final})
    first = lambda row: next(iter(row["accuracy"].values()))  # noqa: E731
    best = max(rows, key=lambda row: first(row)["mean"])
    return {"statistic": f"max over evaluations every {report['every']} iterations"
                         + (f" in the last {report['window']:.0%} of the run" if report["window"] < 1 else ""),
            "selected_on": "the test set (as the paper reports it; not an unbiased estimate)",
            "mean": first(best)["mean"], "std": first(best)["std"],
            "iteration": best["iteration"],
            "evaluations": [{"iteration": row["iteration"], "mean": round(first(row)["mean"], 4)} for row in rows]}


def snapshot_name(fraction: float) -> str:
    """OUT/snapshots/<name>: the percentage of the budget, e.g. 0.25 -> "25", 0.125 -> "12.5"."""
    return f"{fraction * 100:g}"


def _finish_snapshots(out: Path, config: RunConfig, plan: Plan, dataset, device) -> list[dict]:
    """Post-condense (where the recipe does) and evaluate each snapshot the loop saved, as the run itself is;
    each finished snapshot keeps its results.json, so a killed run redoes none. Returns one row per snapshot
    taken, by fraction (a run that ended before a fraction of its budget has no snapshot there)."""
    rows = []
    for fraction in sorted(config.snapshots):
        name = snapshot_name(fraction)
        final, raw = out / "snapshots" / name, out / "snapshots" / f"{name}-raw"
        if (final / "results.json").exists():
            rows.append(json.loads((final / "results.json").read_text()))
            continue
        if not is_artifact(raw) and not is_artifact(final):
            continue  # the run stopped before this fraction of its budget
        artifact = load_artifact(final if is_artifact(final) else raw, device)
        container, metadata = artifact.container, artifact.metadata
        if plan.recipe.post_condense is not None and not is_artifact(final):
            generator = torch.Generator().manual_seed(config.seed * 1000 + int(fraction * 1000))
            container = _post_condense(container, dataset, config, plan, generator, device)
            if distributed.is_writer():
                save_artifact(final, container, {**metadata, "stage": "snapshot"})
        with phase(f"evaluating the snapshot at {name}% of the budget", config.progress):
            accuracy = _evaluate(container, dataset, config, plan, device,
                                 metadata["objective_values"].get("learned_learning_rate"))
        row = {"fraction": fraction, "iterations": metadata["iterations"],
               "condense_cpu_seconds": metadata.get("condense_cpu_seconds"),
               "stored_floats": container.stored_floats(),
               "evaluation_split": config.evaluation_split, **accuracy}
        if distributed.is_writer():
            atomic_write_json(final / "results.json", row)
        rows.append(row)
    return rows


def _condense_stage(out: Path, config: RunConfig, plan: Plan, dataset, objective, generator, resume: bool,
                    run_fingerprint: str, log=None) -> tuple:
    """Build, initialize and condense (or select) the container; returns it and what the artifact records."""
    with phase(f"fitting '{plan.preprocessing}' preprocessing on {len(dataset.train)} training images", config.progress):
        preprocessing = Preprocessing(plan.preprocessing).fit(dataset.train.images)
    container = create_container(plan.container_name, dataset.spec, config.ipc, preprocessing, **plan.container_settings)
    if container.over_budget_ratio > 1 and plan.recipe.post_condense is None:
        raise ConfigError(f"container '{plan.container_name}' condenses over budget ({container.over_budget_ratio:g} x B) "
                          f"and recipe '{plan.recipe.name}' has no step that brings it back; use --recipe hmn or "
                          "--container-set over_budget=0")
    container.check_budget(max(config.budget_ratio, container.over_budget_ratio, container.declared_budget_ratio))
    real = RealPool(dataset.train, dataset.spec.num_classes, preprocessing, plan.device)
    container = container.to(plan.device)
    started = time.perf_counter()
    record = {"iterations": plan.iterations, "stopped_by_time_limit": False, "losses": [], "seconds": 0.0,
              "objective_values": {}}
    if plan.recipe.selection:
        with phase(f"choosing {config.ipc} real image(s) per class ({plan.recipe.selection})", config.progress):
            SELECTIONS[plan.recipe.selection](container, real, generator)
        record["seconds"] = time.perf_counter() - started
    else:
        if config.iterations == 0:
            print("condense: note: --iterations 0: the container is evaluated as initialized", file=sys.stderr)
        with phase(f"initializing the {plan.container_name} container", config.progress):
            container.initialize(real, generator)

        def at_boundary(iterations: int, spent: float, cpu_seconds: float) -> None:
            values = {k: float(v) for k, v in objective.artifact_tensors().items()}
            for fraction in config.snapshots:  # saved as condensed: post-condensation and evaluation come after
                name = snapshot_name(fraction) + ("-raw" if plan.recipe.post_condense is not None else "")
                if spent >= fraction and not is_artifact(out / "snapshots" / name) and distributed.is_writer():
                    save_artifact(out / "snapshots" / name, container, {
                        **_run_metadata(config, plan, {**record, "iterations": iterations, "objective_values": values,
                                                       "condense_cpu_seconds": cpu_seconds}, run_fingerprint),
                        "stage": "snapshot before post-condensation"})
            if config.report == "paper" and _paper_evaluates_at(plan.recipe.paper_report, iterations, spent):
                _paper_evaluation(out, container, dataset, config, plan, iterations, values.get("learned_learning_rate"))

        result = condense(
            container, objective, real, plan.optimizer, LoopConfig(plan.iterations, config.checkpoint_every),
            generator, checkpoint_path=out / "checkpoint.pt", resume=resume, fingerprint=run_fingerprint,
            metrics_path=out / "metrics.jsonl", progress=config.progress, time_limit=plan.time_limit_seconds,
            on_iteration=None if log is None else (lambda iteration, loss: log.add_scalar("condense/loss", loss, iteration)),
            cpu_limit=plan.cpu_limit_seconds,
            at_boundary=at_boundary if config.snapshots or config.report == "paper" else None,
        )
        record.update(iterations=result.iterations, stopped_by_time_limit=result.stopped_by_time_limit,
                      losses=result.losses, seconds=result.seconds, condense_cpu_seconds=result.cpu_seconds,
                      stopped_by_cpu_limit=result.stopped_by_cpu_limit,
                      objective_values={k: float(v) for k, v in objective.artifact_tensors().items()})
    if plan.recipe.post_condense is not None and container.over_budget_ratio > 1 and distributed.is_writer():
        # kept so that pruning can be redone (other beta) without condensing, and resumed after a kill
        save_artifact(out / "over_budget", container, {
            **_run_metadata(config, plan, record, run_fingerprint), "stage": "before post-condensation"})
        atomic_write_json(out / POST_CONDENSE_STATE, {
            "fingerprint": run_fingerprint, "generator_state": generator.get_state().tolist(),
            **{k: record[k] for k in ("iterations", "stopped_by_time_limit", "losses", "seconds", "objective_values",
                                      "condense_cpu_seconds", "stopped_by_cpu_limit") if k in record}})
    return container, record


class RunLog:
    """Scalars to TensorBoard and/or Weights & Biases, whichever the run asked for (``add_scalar`` as
    TensorBoard's SummaryWriter). Each is optional: asked for and not installed is a ConfigError."""

    def __init__(self, config: "RunConfig"):
        self.writers, self.wandb = [], None
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.writers.append(SummaryWriter(str(config.tensorboard)))
        if config.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("--wandb needs the wandb package: pip install wandb") from None
            # reinit: a second distill in the same process starts a run of its own
            self.wandb = wandb.init(project=config.wandb, config=_jsonable(dataclasses.asdict(config)),
                                    name=Path(config.out).name if config.out else None, reinit=True)

    def add_scalar(self, name: str, value: float, step: int) -> None:
        for writer in self.writers:
            writer.add_scalar(name, value, step)
        if self.wandb is not None:
            self.wandb.log({name: value}, step=step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.wandb is not None:
            self.wandb.finish()


@contextlib.contextmanager
def run_log(config: "RunConfig"):
    """A RunLog for the run's --tensorboard / --wandb (None when neither is asked for), closed on exit."""
    if not config.tensorboard and not config.wandb:
        yield None
        return
    log = RunLog(config)
    try:
        yield log
    finally:
        log.close()


def _load_post_condense_state(out: Path, device, generator: torch.Generator) -> tuple:
    """The condensed, over-budget container and the run's state as they were before the post-condensation step."""
    state = json.loads((out / POST_CONDENSE_STATE).read_text())
    generator.set_state(torch.tensor(state.pop("generator_state"), dtype=torch.uint8))
    state.pop("fingerprint", None)
    return load_artifact(out / "over_budget", device).container, state


def _run_metadata(config: RunConfig, plan: Plan, record: dict, run_fingerprint: str) -> dict:
    losses = record["losses"]
    return {
        "recipe": plan.recipe.name, "dataset": config.dataset, "ipc": config.ipc, "seed": config.seed,
        "config": _jsonable(dataclasses.asdict(config)), "fingerprint": run_fingerprint,
        "objective": {"name": plan.objective_name, "settings": plan.objective_settings} if plan.objective_name else None,
        "optimizer": dataclasses.asdict(plan.optimizer), "iterations": record["iterations"],
        "iterations_planned": plan.iterations, "stopped_by_time_limit": record["stopped_by_time_limit"],
        "distill_seconds": record["seconds"], "precision": config.precision,
        "condense_cpu_seconds": record.get("condense_cpu_seconds"),
        "stopped_by_cpu_limit": record.get("stopped_by_cpu_limit", False),
        "objective_values": record["objective_values"], "final_loss": losses[-1] if losses else None,
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
                      precision: str = "fp32", record: bool = True, **protocol_settings) -> dict:
    """Evaluate a saved artifact on its dataset's real test split (``precision`` 'bf16': test forwards in
    bfloat16); ``protocol_settings`` override the preset's. The result's "protocol" holds the settings
    actually used (overrides applied, ``architectures`` the ones evaluated). With ``record`` the result is
    appended as one JSON line to PATH/evaluations.jsonl (timestamp, protocol, overrides, architectures,
    seed, precision, accuracies); a directory that cannot be written gets a warning, not a failure."""
    import datetime

    from .io import append_line

    tune_process()
    torch_device = resolve_device(device)
    distributed.initialize(torch_device)
    check_precision(precision)
    if not is_artifact(path):
        raise ConfigError(f"'{path}' holds no finished artifact (no metadata.json)")
    chosen = get_protocol(protocol, **protocol_settings)
    if isinstance(architectures, str):
        architectures = [name.strip() for name in architectures.split(",") if name.strip()]
    evaluated = tuple(architectures or chosen.architectures)
    for name in evaluated:
        NETWORKS.get(name)  # an unknown name fails before the data loads
    chosen = dataclasses.replace(chosen, architectures=evaluated)
    with DirectoryLock(path) if distributed.is_writer() else contextlib.nullcontext():  # not while a distill writes it
        artifact = load_artifact(path, torch_device)
    meta = artifact.metadata
    dataset = load_dataset(meta["dataset"], data_root or meta["config"].get("data_root"),
                           validation_fraction=meta["config"].get("validation_fraction", 0.1),
                           **(meta["config"].get("dataset_settings") or {}))
    started = time.perf_counter()
    accuracy = evaluate_container(artifact.container, dataset.test, chosen, seed, evaluated,
                                  torch_device, artifact.learned_learning_rate, progress, precision=precision)
    result = {"artifact": str(path), "protocol": chosen.settings(),
              "protocol_overrides": {k: chosen.settings()[k] for k in protocol_settings},
              "architectures": list(evaluated), "seed": seed, "precision": precision, "device": str(torch_device),
              "accuracy": {k: dataclasses.asdict(v) for k, v in accuracy.items()},
              "evaluate_seconds": round(time.perf_counter() - started, 2)}
    if record and distributed.is_writer():
        line = {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **{k: v for k, v in result.items() if k != "artifact"}, "library_version": __version__}
        target = Path(path) / "evaluations.jsonl"
        try:
            append_line(target, json.dumps(_jsonable(line)))
            result["recorded_in"] = str(target)
        except OSError as error:
            print(f"condense: warning: the evaluation was not recorded in '{target}': {error.strerror or error}",
                  file=sys.stderr)
    return result


def _jsonable(values: dict) -> dict:
    return json.loads(json.dumps(values, default=str))


def python_info() -> str:
    return f"{sys.version.split()[0]} torch {torch.__version__}"
