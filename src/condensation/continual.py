"""Class-incremental continual learning with condensed memories (``condense continual``); docs/continual.md.

A *stream* is data: an ordered list of tasks, each a set of classes of one dataset (``StreamTask``). Built-in
streams: ``split-fashion-mnist``, ``split-mnist`` and ``split-digits`` (5 tasks of 2 classes, the class order
drawn from a seed and recorded) and ``mnist-fashion-mnist`` (MNIST's 10 classes, then Fashion-MNIST's 10:
20 classes, one task per dataset, labels kept apart). A TOML or JSON file of ``[[tasks]]`` defines any
other stream, image folders included (``load_stream``).

At task t the learner sees only task t's training images. It condenses them with any recipe into a
container of its own: the library's ``distill`` on a class subset (``dataset_settings = {classes = [...]}``,
relabelled 0..k-1 inside the container), so OUT/task-t is an ordinary, resumable run directory. Every past
container is kept. After each task the protocol's networks are trained from scratch on everything stored
so far (GDumb's protocol, as in DC's and DM's continual-learning experiments), through ``evaluate_on_splits``,
with one output per class seen so far (stream labels 0..seen-1), and tested on the test images of each seen
task; a network's accuracy on all seen classes is the union of those (``union_accuracy``). No future task's
images are trained on or tested on.

Budget: task t's container gets the field's budget for its own classes, B_t = |classes_t| x IPC x C x H x W
(``distill`` refuses anything over it), so the whole stream stores at most classes x IPC x C x H x W floats,
the same as IPC k pixels per class. Parts a container shares across its classes (RTP's memories, HMN's
dataset memory and decoder, HaBa's hallucinators) are counted once per task, inside that task's B_t. Shared
parts are never reused or fine-tuned by later tasks: each task's container is frozen once condensed.

Preprocessing: each task's container is condensed in the space of a preprocessing fitted on its own
training images only (what ``distill`` does). The stream's one network-input space, for the joint training
and the test images, is task 1's preprocessing: every later container's images are mapped into it exactly
(``inverse`` of their own, then task 1's forward; both affine). Nothing is fitted on a future task's data.

Resume: OUT is held by one process (``DirectoryLock``); OUT/continual.json (written atomically after every
task's evaluation) lists the evaluated tasks, so a run killed at any point continues with ``resume=True``
from the first task not yet evaluated, whose run directory resumes from its own stage (checkpoint, pruning,
artifact). The same configuration and seed give the same numbers, interrupted or not.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import __version__, distributed
from .artifacts import load_artifact
from .io import atomic_write_json
from .schema import read_json
from .containers import create_container
from .containers.base import Batch, Container
from .containers.memories import MemoriesConfig
from .data import DATASETS, DataSpec, Preprocessing, Split, load_dataset
from .errors import ArtifactError, ConfigError
from .evaluation.evaluate import AccuracySummary, evaluate_on_splits
from .results.continual import PLOT_FILE, RESULTS_FILE, format_accuracy, plot_continual
from .io import DirectoryLock, tomllib
from .registry import Registry, build_config
from .run import RunConfig, distill, fingerprint, fingerprint_of, plan_run, run_stage
from .runtime import resolve_device, tune_process

SCHEMA_VERSION = 1


# ------------------------------------------------------------------------------------------------ streams
@dataclass(frozen=True)
class StreamTask:
    """One task: classes of one dataset (indices, or class names resolved when the data loads)."""

    dataset: str
    classes: tuple[int | str, ...]
    data_root: str | None = None  # None: the run's data_root
    dataset_settings: dict = field(default_factory=dict)  # e.g. image_folder's image_size


@dataclass(frozen=True)
class Stream:
    name: str
    tasks: tuple[StreamTask, ...]
    order_seed: int | None = None  # the seed that drew the class order; None: the order is the definition's

    def to_dict(self) -> dict:
        return {"name": self.name, "order_seed": self.order_seed,
                "tasks": [{**dataclasses.asdict(task), "classes": list(task.classes)} for task in self.tasks]}


STREAMS: Registry[Callable[[int], Stream]] = Registry("stream")


def split_stream(name: str, dataset: str, num_classes: int, classes_per_task: int, seed: int) -> Stream:
    """The dataset's classes in an order drawn from ``seed``, cut into tasks of ``classes_per_task``."""
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    tasks = tuple(StreamTask(dataset, tuple(order[i:i + classes_per_task]))
                  for i in range(0, num_classes, classes_per_task))
    return Stream(name, tasks, seed)


@STREAMS.register("split-fashion-mnist")
def split_fashion_mnist(seed: int) -> Stream:
    return split_stream("split-fashion-mnist", "fashion_mnist", 10, 2, seed)


@STREAMS.register("split-mnist")
def split_mnist(seed: int) -> Stream:
    return split_stream("split-mnist", "mnist", 10, 2, seed)


@STREAMS.register("split-digits")
def split_digits(seed: int) -> Stream:
    """scikit-learn's embedded 8x8 digits: no data folder needed (quick tries, tests)."""
    return split_stream("split-digits", "digits", 10, 2, seed)


@STREAMS.register("mnist-fashion-mnist")
def mnist_fashion_mnist(seed: int) -> Stream:
    """Two datasets, one task each, in this order; MNIST's digits are stream labels 0-9, Fashion-MNIST's
    clothes 10-19 (the seed does not enter: the order is the stream's definition)."""
    return Stream("mnist-fashion-mnist", (StreamTask("mnist", tuple(range(10))),
                                          StreamTask("fashion_mnist", tuple(range(10)))))


def load_stream(path: str | Path) -> Stream:
    """A stream file (TOML or JSON): optional ``name``, then ``[[tasks]]`` tables with ``dataset``,
    ``classes`` (indices or class names), optional ``data_root`` and ``dataset_settings``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"stream file '{path}' cannot be read: {str(error).splitlines()[0] if str(error) else error}") from None
    if not isinstance(values, dict) or not isinstance(values.get("tasks"), list) or not values["tasks"]:
        raise ConfigError(f"stream file '{path}' must hold a non-empty list 'tasks' ([[tasks]] tables in TOML)")
    unknown = sorted(set(values) - {"name", "tasks"})
    if unknown:
        raise ConfigError(f"stream file '{path}': unknown key(s) {', '.join(unknown)}; allowed: name, tasks")
    tasks = tuple(build_config(StreamTask, task, f"stream file '{path}' task {i + 1}")
                  for i, task in enumerate(values["tasks"]))
    return Stream(str(values.get("name", path.stem)), tasks)


def get_stream(name: str, seed: int) -> Stream:
    """A built-in stream by name (its class order from ``seed``), or a stream file (.toml / .json)."""
    if name in STREAMS:
        return STREAMS.get(name)(seed)
    if name.endswith((".toml", ".json")):
        if not Path(name).is_file():
            raise ConfigError(f"stream file '{name}' does not exist")
        return load_stream(name)
    raise ConfigError(f"unknown stream '{name}'; choose one of: {', '.join(STREAMS.names())}, or a .toml/.json "
                      "stream file")


# ------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ContinualConfig:
    """A continual run; every field but ``stream`` and ``stream_seed`` means what RunConfig's field of the same
    name means, for every task (``time_limit``: per task's condensation)."""

    stream: str  # a built-in stream name or a stream file
    recipe: str
    ipc: int = 1
    seed: int = 0
    stream_seed: int | None = None  # the class order of split streams; None: ``seed``
    out: str | None = None
    data_root: str | None = None  # for every task whose stream entry names none
    device: str = "auto"
    iterations: int | None = None
    container: str | None = None
    container_settings: dict = field(default_factory=dict)
    objective: str | None = None
    objective_settings: dict = field(default_factory=dict)
    learning_rate: float | None = None
    optimizer: str | None = None
    preprocessing: str | None = None
    post_condense_settings: dict = field(default_factory=dict)
    protocol: str | None = None
    protocol_settings: dict = field(default_factory=dict)
    architectures: tuple[str, ...] | None = None
    checkpoint_every: int = 50
    validation_fraction: float = 0.1
    precision: str = "fp32"
    time_limit: str | float | None = None
    allow_repeated_images: bool = False
    progress: bool = True
    # memories containers (RTP): each later task also addresses every earlier task's memories, frozen, and adds
    # ``later_bases`` new ones (None: as many as task 1); docs/continual.md, Shared parts
    reuse_memories: bool = False
    later_bases: int | None = None


# the fields a task's RunConfig takes from the continual config as they are
_PASSED_ON = tuple(f.name for f in dataclasses.fields(ContinualConfig)
                   if f.name in {g.name for g in dataclasses.fields(RunConfig)} and f.name not in ("out", "data_root"))


def task_run_config(config: ContinualConfig, task: StreamTask, classes: list[int], directory: Path,
                    container_settings: dict | None = None) -> RunConfig:
    """The ``distill`` run of one task: its classes only, no evaluation of its own (the stream's comes after);
    ``container_settings`` are added to the run's (memory reuse)."""
    passed = {name: getattr(config, name) for name in _PASSED_ON}
    passed["container_settings"] = {**config.container_settings, **(container_settings or {})}
    return RunConfig(**passed, dataset=task.dataset, data_root=task.data_root or config.data_root,
                     dataset_settings={**task.dataset_settings, "classes": list(classes)},
                     out=str(directory), evaluate=False)


def reuse_settings(config: ContinualConfig, first_plan, tasks: int, out: Path) -> list[dict]:
    """Each task's added container settings: with ``reuse_memories``, task t > 1 addresses the memory table of
    task t-1 (which holds every earlier task's memories) and adds ``later_bases`` memories of its own."""
    if not config.reuse_memories:
        if config.later_bases is not None:
            raise ConfigError("later_bases is the number of new memories of each task after the first with "
                              "reuse_memories; without it every task has its own memories (set bases)")
        return [{} for _ in range(tasks)]
    if first_plan.container_name != "memories":
        raise ConfigError(f"reuse_memories needs the memories container (recipe rtp, or --container memories); "
                          f"recipe '{config.recipe}' condenses into '{first_plan.container_name}'")
    first = first_plan.container_settings.get("bases", MemoriesConfig.bases)
    later = first if config.later_bases is None else config.later_bases
    if later < 0:
        raise ConfigError(f"later_bases must be >= 0 (0: later tasks store addresses only), got {later}")
    return [{}] + [{"bases": later, "reused_bases": first + (number - 2) * later,
                    "reuse_from": str(out / f"task-{number - 1}" / "container.safetensors")}
                   for number in range(2, tasks + 1)]


def continual_fingerprint(config: ContinualConfig, stream: Stream) -> str:
    """Identifies what a continual run computes (the settings ``run.fingerprint`` leaves out are left out)."""
    return fingerprint_of({**dataclasses.asdict(config), "stream": stream.to_dict()})


# ------------------------------------------------------------------------------------------- stream data
@dataclass
class TaskData:
    """A task resolved against its dataset: class indices, names, stream labels and real test images."""

    task: StreamTask
    classes: list[int]
    class_names: list[str]
    stream_labels: list[int]  # the stream's label of each class, in ``classes`` order
    spec: DataSpec  # the task's own (k classes)
    test: Split  # the task's real test images, labelled with stream labels


def load_stream_data(stream: Stream, config: ContinualConfig) -> list[TaskData]:
    """Resolve every task (names to indices), check that the stream is well formed, and keep each task's
    test images (only test splits are kept: ``distill`` reads each task's training images itself)."""
    loaded, tasks, offset, seen = {}, [], 0, set()
    for number, task in enumerate(stream.tasks, 1):
        DATASETS.get(task.dataset)
        root = task.data_root or config.data_root
        key = (task.dataset, root, json.dumps(task.dataset_settings, sort_keys=True))
        if key not in loaded:
            full = load_dataset(task.dataset, root, validation_fraction=config.validation_fraction,
                                **task.dataset_settings)
            loaded[key] = (full.spec, full.test)
        spec, test = loaded[key]
        classes = [_class_index(c, spec, task, number) for c in task.classes]
        if len(classes) < 2:
            raise ConfigError(f"stream '{stream.name}' task {number} has {len(classes)} class; a task needs at "
                              "least two (condensation trains a classifier on the task's classes)")
        repeated = [spec.class_names[c] for c in classes if (key, c) in seen]
        if repeated or len(set(classes)) != len(classes):
            raise ConfigError(f"stream '{stream.name}' task {number}: class(es) {repeated or classes} of "
                              f"'{task.dataset}' appear in more than one place; each class belongs to one task")
        seen.update((key, c) for c in classes)
        labels = list(range(offset, offset + len(classes)))
        offset += len(classes)
        relabel = torch.full((spec.num_classes,), -1, dtype=torch.long)
        relabel[torch.tensor(classes)] = torch.tensor(labels)
        keep = torch.nonzero(relabel[test.labels] >= 0).flatten()
        task_spec = dataclasses.replace(spec, num_classes=len(classes),
                                        class_names=tuple(spec.class_names[c] for c in classes))
        tasks.append(TaskData(task, classes, [spec.class_names[c] for c in classes], labels, task_spec,
                              Split(test.images[keep], relabel[test.labels[keep]])))
    shapes = {(t.spec.channels, t.spec.height, t.spec.width) for t in tasks}
    if len(shapes) > 1:
        raise ConfigError(f"stream '{stream.name}' mixes image shapes {sorted(shapes)}; one network trains on every "
                          "task's images, so every task needs the same channels x height x width (image_folder: "
                          "dataset_settings image_size)")
    return tasks


def _class_index(value: int | str, spec: DataSpec, task: StreamTask, number: int) -> int:
    if isinstance(value, str):
        if value not in spec.class_names:
            raise ConfigError(f"stream task {number}: '{task.dataset}' has no class '{value}'; its classes: "
                              f"{', '.join(spec.class_names)}")
        return spec.class_names.index(value)
    if not 0 <= value < spec.num_classes:
        raise ConfigError(f"stream task {number}: class {value} is not a class index of '{task.dataset}' "
                          f"(0..{spec.num_classes - 1})")
    return value


# ---------------------------------------------------------------------------------------- stored memory
class StoredMemory:
    """Every task's stored container so far, generating one training set over the classes seen so far in the
    stream's network-input space. It offers what ``evaluate_on_splits`` reads of a container: ``spec``,
    ``preprocessing``, ``evaluation_source()`` and ``to(device)``."""

    def __init__(self, containers: list[Container], label_offsets: list[int], spec: DataSpec):
        self.containers, self.label_offsets, self.spec = containers, label_offsets, spec
        self.preprocessing = containers[0].preprocessing  # task 1's: the stream's one input space

    def to(self, device) -> "StoredMemory":
        self.containers = [container.to(device) for container in self.containers]
        return self

    def stored_floats(self) -> int:
        return sum(container.stored_floats() for container in self.containers)

    def _in_stream_space(self, images: torch.Tensor, container: Container) -> torch.Tensor:
        """(N, C, H, W) in ``container``'s input space -> the stream's (its pixels, through task 1's transform)."""
        if container.preprocessing is self.preprocessing:
            return images
        return self.preprocessing(container.preprocessing.inverse(images))

    def _draw(self, sources: list, generator: torch.Generator | None) -> Batch:
        images, labels = [], []
        for container, source, offset in zip(self.containers, sources, self.label_offsets):
            batch = source(generator)
            images.append(self._in_stream_space(batch.images, container))
            labels.append(batch.labels + offset)  # task-local 0..k-1 -> stream labels
        return Batch(torch.cat(images), torch.cat(labels))

    def evaluation_source(self):
        """As ``Container.evaluation_source``: one fixed set, or a fresh draw per epoch where any task's
        container draws its images (HaBa), each task's draw from the same generator in task order."""
        sources = [container.evaluation_source() for container in self.containers]
        if any(container.random_per_epoch for container in self.containers):
            return lambda generator: self._draw(sources, generator)
        fixed = self._draw(sources, None)
        return lambda generator: fixed


# ------------------------------------------------------------------------------------------------ the run
def continual(config: ContinualConfig, resume: bool = False) -> dict:
    """Run (or with ``resume`` continue) a continual benchmark; returns continual.json's content.

    Every name, setting and budget is checked before any task condenses. OUT/task-t holds task t's run
    directory; OUT/continual.json the per-task results; OUT/continual.png the accuracy plot."""
    tune_process()
    if distributed.launched_by_torchrun():
        raise ConfigError("condense continual runs in one process; launch it without torchrun")
    if config.stream_seed is not None and config.stream_seed < 0:
        raise ConfigError(f"stream_seed must be >= 0, got {config.stream_seed}")
    stream = get_stream(config.stream, config.seed if config.stream_seed is None else config.stream_seed)
    out = Path(config.out) if config.out else default_out(config, stream.name)
    run_fingerprint = continual_fingerprint(config, stream)
    # every task's run planned now, so that names, settings and the protocol fail before any data loads (a plan
    # does not read the classes; the real ones replace the placeholder once the data has named them)
    reuse = reuse_settings(config, plan_run(task_run_config(config, stream.tasks[0], [0, 1], out / "task-1")),
                           len(stream.tasks), out)
    plans = [plan_run(task_run_config(config, task, [0, 1], out / f"task-{i}", reuse[i - 1]))
             for i, task in enumerate(stream.tasks, 1)]
    with DirectoryLock(out):
        record = continual_stage(out, run_fingerprint, resume)
        if record is not None and record.get("finished"):
            _say(config, f"'{out}' has already finished; its results are unchanged")
            return record
        tasks = load_stream_data(stream, config)
        for number, (plan, data) in enumerate(zip(plans, tasks), 1):
            _check_budget(plan, data, config, number)
        if record is None:
            record = _new_record(config, stream, tasks, plans[0], run_fingerprint)
            atomic_write_json(out / RESULTS_FILE, record)  # from here on, a kill leaves a run to resume
        for number in range(1, len(tasks) + 1):
            if number <= len(record["tasks"]):
                _say(config, f"task {number}/{len(tasks)} was finished before: {_accuracy_line(record['tasks'][number - 1])}")
                continue
            record["tasks"].append(_run_task(config, record, tasks, number, out, plans[0].protocol, reuse[number - 1]))
            atomic_write_json(out / RESULTS_FILE, record)
        record.update(_summary(record), finished=True)
        atomic_write_json(out / RESULTS_FILE, record)
        plot_continual([out], out / PLOT_FILE, records=[record])
    return record


def default_out(config: ContinualConfig, stream_name: str) -> Path:
    return Path("runs") / f"continual-{stream_name}-{config.recipe}-ipc{config.ipc}-seed{config.seed}"


def continual_stage(out: Path, run_fingerprint: str, resume: bool) -> dict | None:
    """The record to continue from, or None for a fresh start. As ``run.run_stage``: refuses to overwrite a
    finished run, to mix two configurations, or to start over silently."""
    path = out / RESULTS_FILE
    if not path.exists():
        others = sorted(p.name for p in out.iterdir() if p.name != ".lock") if out.is_dir() else []
        if resume:
            raise ConfigError(f"nothing to resume in '{out}' (no {RESULTS_FILE}); run without --resume to start")
        if others:
            raise ConfigError(f"'{out}' is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) "
                              "and holds no continual run; choose another --out")
        return None
    record = read_json(path)
    if not isinstance(record, dict) or record.get("kind") != "continual":
        raise ArtifactError(f"'{path}' is not a continual run's results; delete the directory to start over")
    if not resume:
        if record.get("finished"):
            raise ConfigError(f"'{out}' already holds a finished continual run; choose another --out (nothing was "
                              "changed)")
        raise ConfigError(f"'{out}' holds an unfinished continual run; pass --resume to continue it, or delete the "
                          "directory (or choose another --out) to start over")
    if record.get("fingerprint") != run_fingerprint:
        raise ConfigError(f"'{out}' holds a continual run of another configuration; --resume needs the same "
                          "settings (nothing was changed)")
    return record


def _check_budget(plan, data: TaskData, config: ContinualConfig, number: int) -> None:
    """Build the task's container once, empty, so that a budget it cannot meet fails before any condensing."""
    try:
        probe = create_container(plan.container_name, data.spec, config.ipc, Preprocessing("none"),
                                 **plan.container_settings)
        probe.check_budget(max(1.0, probe.over_budget_ratio))
    except ConfigError as error:
        raise type(error)(f"task {number} ({len(data.classes)} classes of '{data.task.dataset}'): {error}") from None


def _new_record(config: ContinualConfig, stream: Stream, tasks: list[TaskData], plan, run_fingerprint: str) -> dict:
    several = len({t.task.dataset for t in tasks}) > 1
    return json.loads(json.dumps({  # as a reader gets it back (tuples become lists)
        "kind": "continual", "schema_version": SCHEMA_VERSION, "fingerprint": run_fingerprint,
        "label": method_label(config), "recipe": config.recipe, "container": plan.container_name,
        "objective": plan.objective_name, "ipc": config.ipc, "seed": config.seed,
        "config": dataclasses.asdict(config),
        "stream": {**stream.to_dict(), "num_classes": sum(len(t.classes) for t in tasks), "tasks": [
            {"dataset": t.task.dataset, "classes": t.classes, "class_names": t.class_names,
             "stream_labels": t.stream_labels, "data_root": t.task.data_root or config.data_root,
             "dataset_settings": t.task.dataset_settings, "test_images": len(t.test)} for t in tasks]},
        "label_names": [f"{t.task.dataset}/{name}" if several else name for t in tasks for name in t.class_names],
        "preprocessing": {"kind": plan.preprocessing, "fitted_on": "task 1's training images only; each later "
                          "task's container was condensed under its own task's fit and its images are mapped "
                          "into task 1's space (inverse of its own, then task 1's)"},
        "protocol": plan.protocol.settings(), "architectures": list(plan.architectures),
        "budget_floats_per_task": [t.spec.budget_floats(config.ipc) for t in tasks],
        "tasks": [], "finished": False, "library_version": __version__, "torch_version": torch.__version__,
    }, default=str))


def method_label(config: ContinualConfig) -> str:
    """How plots and tables name the run: the recipe, with a container or objective it was given, and memory reuse."""
    parts = [name for name in (config.container, config.objective) if name]
    if config.reuse_memories:
        parts.append("reused memories")
    return config.recipe + (f" ({', '.join(parts)})" if parts else "")


def _run_task(config: ContinualConfig, record: dict, tasks: list[TaskData], number: int, out: Path,
              protocol, container_settings: dict) -> dict:
    """Condense task ``number`` (only its training data), then train fresh networks on every container stored so
    far and test them on every class seen so far; returns the task's entry of continual.json."""
    data = tasks[number - 1]
    directory = out / f"task-{number}"
    run_config = task_run_config(config, data.task, data.classes, directory, container_settings)
    names = ", ".join(f"{c} '{n}'" for c, n in zip(data.classes, data.class_names))
    _say(config, f"task {number}/{len(tasks)}: condensing {data.task.dataset} classes {names} into {directory}")
    results = distill(run_config, resume=_has_started(directory, run_config))

    device = resolve_device(config.device)
    artifacts = [load_artifact(out / f"task-{j}", device) for j in range(1, number + 1)]
    containers = [artifact.container for artifact in artifacts]
    seen = tasks[:number]
    spec = DataSpec(data.spec.channels, data.spec.height, data.spec.width, sum(len(t.classes) for t in seen),
                    tuple(record["label_names"][:sum(len(t.classes) for t in seen)]),
                    all(t.spec.flip_allowed for t in seen))
    memory = StoredMemory(containers, [t.stream_labels[0] for t in seen], spec)
    splits = {f"task-{j}": t.test for j, t in enumerate(seen, 1)}  # each tested once; "seen" is their union
    learned = [a.learned_learning_rate for a in artifacts if a.learned_learning_rate is not None]
    started = time.perf_counter()
    _say(config, f"task {number}/{len(tasks)}: training {protocol.networks} fresh network(s) per architecture on "
                 f"the {len(containers)} stored container(s), testing on the {spec.num_classes} classes seen so far")
    by_task = evaluate_on_splits(memory, splits, protocol, config.seed, tuple(record["architectures"]), device,
                                 sum(learned) / len(learned) if learned else None, config.progress,
                                 precision=config.precision)
    tested = {name: min(len(split), protocol.test_limit or len(split)) for name, split in splits.items()}
    seen_accuracy = union_accuracy(by_task, tested)
    entry = {
        "task": number, "directory": directory.name, "classes_seen": spec.num_classes,
        "test_images": sum(tested.values()), "test_images_by_task": tested,
        "stored_floats": containers[-1].stored_floats(), "budget_floats": containers[-1].budget_floats,
        "stored_floats_by_part": containers[-1].floats_per_part(),
        "generated_images": containers[-1].total_generated(), "stored_floats_so_far": memory.stored_floats(),
        "iterations": results.get("iterations"),
        "accuracy": {arch: dataclasses.asdict(s) for arch, s in seen_accuracy.items()},
        "accuracy_by_task": {name: {arch: dataclasses.asdict(s) for arch, s in per_arch.items()}
                             for name, per_arch in by_task.items()},
        "seconds": {"distill": results["wall_clock_seconds"]["distill"],
                    "evaluate": round(time.perf_counter() - started, 2)},
    }
    _say(config, f"after task {number}/{len(tasks)}: {_accuracy_line(entry)}")
    return entry


def union_accuracy(by_task: dict[str, dict[str, AccuracySummary]], tested: dict[str, int]) -> dict[str, AccuracySummary]:
    """Each network's accuracy on the union of the tasks' test images, from its accuracy on each task's: the
    correct counts are recovered exactly (a percentage kept to 4 decimals of n <= 10^5 images rounds back to its
    count), so every test image is forwarded once per network rather than twice."""
    total = sum(tested.values())
    union = {}
    for arch in next(iter(by_task.values())):
        networks = len(next(iter(by_task.values()))[arch].values)
        correct = [sum(round(by_task[name][arch].values[k] * tested[name] / 100) for name in by_task)
                   for k in range(networks)]
        union[arch] = AccuracySummary.of([100.0 * count / total for count in correct])
    return union


def _has_started(directory: Path, run_config: RunConfig) -> bool:
    """Whether the task's run directory holds a stage ``distill`` continues with resume=True."""
    try:
        return run_stage(directory, fingerprint(run_config), resume=False) != "fresh"
    except ConfigError:  # any stage refuses a fresh start; resuming continues it (or names the mismatch)
        return True


def _summary(record: dict) -> dict:
    """The stream's numbers, per architecture: accuracy after the last task on every class, the final average
    accuracy (mean over tasks of the last networks' accuracy on each task's classes), and the average
    incremental accuracy (mean over tasks of the accuracy after that task)."""
    last = record["tasks"][-1]
    summary = {"final_accuracy": last["accuracy"], "final_average_accuracy": {}, "average_incremental_accuracy": {},
               "accuracy_after_task": {}}
    for arch in last["accuracy"]:
        after = [entry["accuracy"][arch]["mean"] for entry in record["tasks"]]
        by_task = [stats[arch]["mean"] for stats in last["accuracy_by_task"].values()]
        summary["accuracy_after_task"][arch] = after
        summary["final_average_accuracy"][arch] = sum(by_task) / len(by_task)
        summary["average_incremental_accuracy"][arch] = sum(after) / len(after)
    summary["total_stored_floats"] = last["stored_floats_so_far"]
    summary["total_budget_floats"] = sum(record["budget_floats_per_task"])
    return summary


def _accuracy_line(entry: dict) -> str:
    shown = "; ".join(f"{arch} {format_accuracy(stats)}" for arch, stats in entry["accuracy"].items())
    return (f"{entry['classes_seen']} classes seen, accuracy % {shown}, {entry['stored_floats_so_far']:,} floats "
            "stored")


def _say(config: ContinualConfig, text: str) -> None:
    if config.progress:
        print(f"condense continual: {text}", file=sys.stderr, flush=True)
