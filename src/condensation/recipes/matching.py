"""Gradient-matching recipes: DC, DSA and IDC (METHODS.md 2.1; objectives/gradient.py).

``iterations`` counts engine iterations, and one engine iteration is one synthetic step of the paper (see
objectives/gradient.py). DC's and DSA's 1000 iterations are 1000 engine iterations at IPC 1 but 10,000 at IPC 10
and 50,000 at IPC 50 (``outer_loop`` steps each); IDC's 2000 outer iterations are 200,000 engine iterations
(100 steps each). The defaults below are the paper's counts read as engine iterations, so that a run fits a CPU;
pass ``--iterations`` for the full schedules.
"""
from ..engine.condense import OptimizerConfig
from . import Recipe, register_recipe

register_recipe(Recipe(
    "dc", "pixels", "dc", container_settings={"init": "noise"}, optimizer=OptimizerConfig("sgd", 0.1, 0.5),
    iterations=1000,
    description="DC gradient matching (Zhao et al. 2021): noise-initialized pixels, layer-wise cosine distance, "
                "image lr 0.1, momentum 0.5; (outer, inner) loops (1, 1) / (10, 50) / (50, 10) at IPC 1 / 10 / 50 "
                "(one engine iteration = one outer step; the paper's 1000 iterations = 1000 x outer_loop)",
))
register_recipe(Recipe(
    "dsa", "pixels", "dsa", container_settings={"init": "real"}, optimizer=OptimizerConfig("sgd", 0.1, 0.5),
    iterations=1000,
    description="DSA (Zhao & Bilen 2021): DC with siamese augmentation (one shared draw per class), "
                "real-initialized pixels, image lr 0.1, momentum 0.5; same loop schedule as dc",
))
register_recipe(Recipe(
    "idc", "multi_formation", "idc", container_settings={"factor": 2, "init": "mosaic"},
    optimizer=OptimizerConfig("sgd", 5e-4, 0.5), learning_rate_times_ipc=True, iterations=2000,
    description="IDC (Kim et al. 2022): multi-formation f=2 from real mosaics ([0,1] pixels), per-class batch "
                "gradient matching of conv weights (64 real vs <=128 generated, shared color/crop/cutout draw), "
                "network renewed every 100 iterations and trained one epoch on real data with CutMix between "
                "steps. Image lr 5e-3 x IPC/10 in [0,1] pixel space (IDC's CIFAR setting, distance mse); for "
                "MNIST/Fashion-MNIST IDC uses 1e-4 x IPC/10 with distance l1 (--objective-set distance=l1 "
                "--lr <1e-5 x IPC>); CIFAR trains the network on 2000 real images (--objective-set "
                "real_training_images=2000). 2000 iterations here = 20 IDC outer iterations of 100 steps; the "
                "paper's 2000 outer iterations are 200,000",
))
