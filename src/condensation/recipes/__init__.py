"""Named recipes: the published methods as container + objective + hyperparameters.

One module per family registers its recipes: baselines (random, herding, dm, echo), matching (dc, dsa, idc),
trajectory (mtt, bptt_pixels), hmn, seed (rtp, haba).

A recipe is data. ``iterations`` is the recipe's default outer-iteration count (the paper's where it fits a
CPU; CLI ``--iterations`` overrides it). Recipes with ``selection`` choose real images and train nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.condense import OptimizerConfig
from ..errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    name: str
    container: str
    objective: str | None
    container_settings: dict = field(default_factory=dict)
    objective_settings: dict = field(default_factory=dict)
    optimizer: OptimizerConfig = OptimizerConfig()
    iterations: int = 0
    protocol: str = "cpu"
    preprocessing: str = "normalize"
    selection: str | None = None  # "random" or "herding": choose real images, no optimization
    learning_rate_times_ipc: bool = False  # effective container lr = optimizer lr x IPC (ECHO, IDC)
    # a step after condensation, by name in condensation.pruning.POST_CONDENSE (HMN: "double_end_prune"):
    # fn(container, dataset, run_config, generator, device) -> container, back within the budget
    post_condense: str | None = None
    description: str = ""


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe '{recipe.name}' is registered twice")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe '{name}'; choose one of: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]




from . import baselines  # noqa: E402,F401  (registers the recipes)
from . import matching  # noqa: E402,F401  (registers dc, dsa, idc)
from . import trajectory  # noqa: E402,F401  (registers mtt, bptt_pixels)
from . import seed  # noqa: E402,F401  (registers rtp, haba)
from . import hmn  # noqa: E402,F401  (registers hmn)
