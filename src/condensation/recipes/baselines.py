"""Selection baselines and the distribution-matching recipes."""
from ..engine.condense import OptimizerConfig
from . import Recipe, register_recipe

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
