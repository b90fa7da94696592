"""Named recipes: the published methods as container + objective + their papers' settings per dataset and IPC.

Each method is one TOML file in this folder, data rather than code:

- identity: ``name``, ``description``, ``container``, ``objective`` (or ``selection`` for methods that only
  choose real images), ``post_condense`` (a step by name in condensation.pruning.POST_CONDENSE);
- ``[reported]``: the IPCs the method's paper or official scripts report, per dataset;
- ``[base]``: settings that hold for every dataset and IPC, and ``[[cell]]`` tables of settings for some
  ``datasets`` and/or ``ipc`` values. Every table names its ``source`` (paper table, appendix, official file).

``resolve_recipe(name, dataset, ipc)`` starts from ``[base]`` and applies every matching cell in file order,
so a later, narrower cell overrides an earlier, broader one; it records which source set each value. A
(dataset, IPC) the method never reported takes the settings of a reported one by the rule in
``substitute_cell`` and says so (``Recipe.fallback``). ``iterations`` counts engine iterations (one synthetic
step; see each file for how that maps onto its paper's loops); the CLI's flags override any value.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.condense import OptimizerConfig
from ..errors import ConfigError
from ..io import tomllib

RECIPE_FOLDER = Path(__file__).parent
# keys a [base] or [[cell]] table may set: plain values, and tables whose entries are merged one by one
VALUE_KEYS = ("iterations", "learning_rate_times_ipc", "protocol", "preprocessing")
TABLE_KEYS = ("optimizer", "container_settings", "objective_settings", "protocol_settings", "post_condense_settings",
              "paper_report")
IDENTITY_KEYS = ("name", "description", "container", "objective", "selection", "post_condense", "fallback_dataset",
                 "reported", "base", "cell", "notes")
# the order in which a (dataset, IPC) no paper reports borrows settings: see substitute_cell
DEFAULT_FALLBACK_DATASET = "cifar10"


@dataclass(frozen=True)
class Recipe:
    """A recipe resolved for one (dataset, IPC); ``dataset=None`` gives the base settings alone."""

    name: str
    container: str
    objective: str | None
    container_settings: dict = field(default_factory=dict)
    objective_settings: dict = field(default_factory=dict)
    optimizer: OptimizerConfig = OptimizerConfig()
    iterations: int = 0
    protocol: str = "cpu"
    protocol_settings: dict = field(default_factory=dict)
    preprocessing: str = "normalize"
    selection: str | None = None  # "random" or "herding": choose real images, no optimization
    learning_rate_times_ipc: bool = False  # effective container lr = optimizer lr x IPC (ECHO, IDC)
    # a step after condensation, by name in condensation.pruning.POST_CONDENSE (HMN: "double_end_prune"):
    # fn(container, dataset, run_config, generator, device) -> container, back within the budget
    post_condense: str | None = None
    post_condense_settings: dict = field(default_factory=dict)
    # how the paper reports its number when it is not the final set: {every, window} (``--report paper``)
    paper_report: dict = field(default_factory=dict)
    description: str = ""
    dataset: str | None = None  # what it was resolved for
    ipc: int | None = None
    settings_from: tuple[str, int] | None = None  # the reported (dataset, IPC) whose cells were applied
    fallback: str | None = None  # why settings_from differs from (dataset, ipc), for the user
    sources: dict = field(default_factory=dict)  # "objective_settings.outer_loop" -> where the value comes from

    def settings(self) -> dict:
        """Every resolved value by dotted key, as results.json records them."""
        return _flatten_resolved(self)


@dataclass(frozen=True)
class RecipeFile:
    """One parsed TOML file: identity plus its tables, in file order."""

    name: str
    identity: dict
    reported: dict[str, tuple[int, ...]]
    tables: tuple[dict, ...]  # [base] first, then the cells
    path: Path


RECIPE_FILES: dict[str, RecipeFile] = {}


def _flat_table(table: dict, where: str) -> dict:
    """{"optimizer": {"learning_rate": 0.1}, "iterations": 5} -> {"optimizer.learning_rate": 0.1, "iterations": 5}."""
    flat = {}
    for key, value in table.items():
        if key in ("source", "datasets", "ipc"):
            continue
        if key in TABLE_KEYS:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: '{key}' must be a table")
            flat.update({f"{key}.{inner}": inner_value for inner, inner_value in value.items()})
        elif key in VALUE_KEYS:
            flat[key] = value
        else:
            raise ValueError(f"{where}: unknown key '{key}'; allowed: {', '.join(VALUE_KEYS + TABLE_KEYS)}")
    return flat


def load_recipe_file(path: Path) -> RecipeFile:
    data = tomllib.loads(path.read_text())
    unknown = sorted(set(data) - set(IDENTITY_KEYS))
    if unknown:
        raise ValueError(f"{path.name}: unknown top-level key(s) {', '.join(unknown)}")
    name = data.get("name") or path.stem
    tables = [data.get("base", {})] + list(data.get("cell", []))
    for number, table in enumerate(tables):
        where = f"{path.name} {'[base]' if number == 0 else f'cell {number}'}"
        if not table.get("source"):
            raise ValueError(f"{where}: every table names its source")
        if number == 0 and ("datasets" in table or "ipc" in table):
            raise ValueError(f"{where}: [base] holds for every dataset and IPC; put conditions in a [[cell]]")
        _flat_table(table, where)
    reported = {dataset: tuple(sorted(ipcs)) for dataset, ipcs in data.get("reported", {}).items()}
    identity = {k: data[k] for k in ("description", "container", "objective", "selection", "post_condense",
                                     "fallback_dataset", "notes") if k in data}
    if "container" not in identity:
        raise ValueError(f"{path.name}: a recipe names its container")
    return RecipeFile(name, identity, reported, tuple(tables), path)


def substitute_cell(recipe_file: RecipeFile, dataset: str, ipc: int) -> tuple[str, int, str | None]:
    """The reported (dataset, IPC) whose settings a run takes, and a note when it is not the one asked for.

    Rule: a reported pair is used as is. Otherwise, on a dataset the method reports, the nearest reported IPC
    (the smaller on a tie); on a dataset it never reports, the nearest reported IPC of its fallback dataset
    (CIFAR-10 unless the file names another). A method that reports nothing uses its base settings."""
    if not recipe_file.reported:  # one set of settings for everything (the file says why)
        return dataset, ipc, None
    if ipc in recipe_file.reported.get(dataset, ()):
        return dataset, ipc, None
    source_dataset = dataset if dataset in recipe_file.reported else recipe_file.identity.get(
        "fallback_dataset", DEFAULT_FALLBACK_DATASET)
    if source_dataset not in recipe_file.reported:
        source_dataset = next(iter(recipe_file.reported))
    candidates = recipe_file.reported[source_dataset]
    nearest = min(candidates, key=lambda k: (abs(k - ipc), k))
    why = ("IPC not reported for this dataset: nearest reported IPC" if source_dataset == dataset
           else "dataset not reported: the nearest reported IPC of " + source_dataset)
    note = (f"recipe '{recipe_file.name}' has no published settings for {dataset} at IPC {ipc}; using those of "
            f"{source_dataset} at IPC {nearest} ({why})")
    return source_dataset, nearest, note


def _matches(table: dict, dataset: str | None, ipc: int | None) -> bool:
    if "datasets" in table and dataset not in table["datasets"]:
        return False
    if "ipc" in table and ipc not in table["ipc"]:
        return False
    return True


def resolve_recipe(name: str, dataset: str | None = None, ipc: int | None = None) -> Recipe:
    """The recipe's settings for (dataset, ipc); with no dataset, the [base] settings only."""
    if name not in RECIPE_FILES:
        raise ConfigError(f"unknown recipe '{name}'; choose one of: {', '.join(sorted(RECIPE_FILES))}")
    recipe_file = RECIPE_FILES[name]
    settings_from, fallback = None, None
    if dataset is not None:
        cell_dataset, cell_ipc, fallback = substitute_cell(recipe_file, dataset, ipc or 1)
        settings_from = (cell_dataset, cell_ipc)
    values, sources = {}, {}
    for number, table in enumerate(recipe_file.tables):
        if number > 0 and (settings_from is None or not _matches(table, *settings_from)):
            continue
        flat = _flat_table(table, recipe_file.path.name)
        values.update(flat)
        sources.update({key: table["source"] for key in flat})
    return _build(recipe_file, values, sources, dataset, ipc, settings_from, fallback)


def _build(recipe_file: RecipeFile, values: dict, sources: dict, dataset, ipc, settings_from, fallback) -> Recipe:
    tables = {key: {} for key in TABLE_KEYS}
    plain = {}
    for key, value in values.items():
        if "." in key:
            table, inner = key.split(".", 1)
            tables[table][inner] = value
        else:
            plain[key] = value
    identity = recipe_file.identity
    try:
        optimizer = OptimizerConfig(**tables.pop("optimizer"))
    except TypeError as error:
        raise ValueError(f"{recipe_file.path.name}: bad optimizer setting ({error})") from None
    return Recipe(
        name=recipe_file.name, container=identity["container"], objective=identity.get("objective"),
        optimizer=optimizer, selection=identity.get("selection"), post_condense=identity.get("post_condense"),
        description=" ".join(identity.get("description", "").split()), dataset=dataset, ipc=ipc,
        settings_from=settings_from, fallback=fallback, sources=sources, **tables, **plain,
    )


def _flatten_resolved(recipe: Recipe) -> dict:
    flat = {"container": recipe.container, "objective": recipe.objective, "iterations": recipe.iterations,
            "protocol": recipe.protocol, "preprocessing": recipe.preprocessing,
            "learning_rate_times_ipc": recipe.learning_rate_times_ipc}
    flat.update({f"optimizer.{k}": v for k, v in dataclasses.asdict(recipe.optimizer).items()})
    for table in ("container_settings", "objective_settings", "protocol_settings", "post_condense_settings"):
        flat.update({f"{table}.{k}": v for k, v in getattr(recipe, table).items()})
    return flat


def get_recipe(name: str, dataset: str | None = None, ipc: int | None = None) -> Recipe:
    return resolve_recipe(name, dataset, ipc)


def recipe_names() -> list[str]:
    return sorted(RECIPE_FILES)


def reported_cells() -> list[tuple[str, str, int]]:
    """Every (recipe, dataset, IPC) some paper or official script reports."""
    return [(name, dataset, ipc) for name, recipe_file in sorted(RECIPE_FILES.items())
            for dataset, ipcs in recipe_file.reported.items() for ipc in ipcs]


def describe_recipe(recipe: Recipe) -> str:
    """The resolved settings, one per line, each with a numbered source listed below (``condense show-recipe``)."""
    where = f" for {recipe.dataset} at IPC {recipe.ipc}" if recipe.dataset else " (base settings)"
    lines = [f"recipe {recipe.name}{where}", f"  {recipe.description}"]
    if recipe.fallback:
        lines.append(f"  note: {recipe.fallback}")
    sources: list[str] = []
    for key, value in recipe.settings().items():
        source = recipe.sources.get(key)
        if source is None:
            mark = "(recipe structure)" if key in ("container", "objective") else "(library default)"
        else:
            source = " ".join(source.split())
            if source not in sources:
                sources.append(source)
            mark = f"[{sources.index(source) + 1}]"
        shown = repr(value)
        if key == "optimizer.learning_rate" and recipe.learning_rate_times_ipc and recipe.ipc:
            shown = f"{value * recipe.ipc:g} (= {value:g} x IPC {recipe.ipc})"
        lines.append(f"  {key:<44} {shown:<28} {mark}")
    lines.append("  sources:")
    lines += [f"  [{number}] {source}" for number, source in enumerate(sources, 1)]
    return "\n".join(lines)


def _load_all() -> None:
    for path in sorted(RECIPE_FOLDER.glob("*.toml")):
        recipe_file = load_recipe_file(path)
        if recipe_file.name in RECIPE_FILES:
            raise ValueError(f"recipe '{recipe_file.name}' is defined twice")
        RECIPE_FILES[recipe_file.name] = recipe_file
        resolve_recipe(recipe_file.name)  # a malformed file fails at import, not in a user's run


_load_all()
RECIPES = {name: resolve_recipe(name) for name in RECIPE_FILES}  # base settings, by name
