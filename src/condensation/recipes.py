"""Named recipes: the published methods as container + objective + hyperparameters.

A recipe is data. ``iterations`` is the recipe's default outer-iteration count (the paper's where it fits a
CPU; CLI ``--iterations`` overrides it). Recipes with ``selection`` choose real images and train nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .engine.condense import OptimizerConfig
from .errors import ConfigError


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


register_recipe(Recipe("random", "pixels", None, selection="random", description="random real images"))
register_recipe(Recipe("herding", "pixels", None, selection="herding",
                       description="herding in the features of a briefly trained ConvNet"))
register_recipe(Recipe(
    "dm", "pixels", "dm", optimizer=OptimizerConfig("sgd", 1.0, 0.5), iterations=20000,
    description="distribution matching (Zhao & Bilen 2023): pixels, image lr 1, momentum 0.5",
))
register_recipe(Recipe(
    "echo", "multi_formation", "echo", container_settings={"factor": 2, "init": "mosaic"},
    optimizer=OptimizerConfig("sgd", 5e-3, 0.5), learning_rate_times_ipc=True, iterations=5000,
    description="ECHO/M3D: multi-formation f=2 + Gaussian-kernel MMD; image lr IPC x 5e-3 ([0,1] pixels)",
))
