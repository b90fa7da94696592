"""Trajectory matching (``mtt``) and unrolled back-propagation through time on pixels (``bptt_pixels``).

``mtt`` needs an expert directory trained with the same dataset and preprocessing::

    condense experts --dataset fashion_mnist --data-root ../shared/data --out runs/experts-fmnist --set preset=cpu
    condense distill --recipe mtt --dataset fashion_mnist --data-root ../shared/data \\
        --objective-set experts=runs/experts-fmnist

No MTT settings for MNIST/Fashion-MNIST are published (METHODS.md 2.4); ours, for the CPU tables: normalized
inputs (the ``cpu`` expert preset; MTT itself uses ZCA on CIFAR, and a recipe's preprocessing is fixed, so a
ZCA variant would be another recipe), N = 20 student steps, M = 2, T+ = 2 (the ``cpu`` experts have 3
epochs), alpha starts at 0.01 with lr 1e-5 and momentum 0.5, image SGD lr 100 with momentum 0.5 (MTT: 1000 on
ZCA-whitened CIFAR-10 IPC 1). Measured on Fashion-MNIST IPC 1 with the ``cpu`` experts: the pixel gradient's
RMS is about 5e-4 at the start, so lr 100 moves pixels (std 1) by about 0.05 per step; lr 1000 would move
them by 0.5. One iteration takes about 9 s on one loaded CPU core: the recipe keeps MTT's 5,000 iterations
as its default and CPU tables pass fewer with --iterations.

``bptt_pixels``: RTP's objective on plain pixels; T = 150 inner steps as the RTP README (CPU tables use
``--objective-set inner_steps=20`` or so), outer SGD lr 0.1, momentum 0.5, gradient-norm clip 2.
"""
from ..engine.condense import OptimizerConfig
from . import Recipe, register_recipe

MTT_CPU_SETTINGS = {"syn_steps": 20, "expert_epochs": 2, "max_start_epoch": 2, "syn_lr": 0.01, "lr_lr": 1e-5,
                    "lr_momentum": 0.5}

register_recipe(Recipe(
    "mtt", "pixels", "mtt", container_settings={"init": "real"}, objective_settings=MTT_CPU_SETTINGS,
    optimizer=OptimizerConfig("sgd", 100.0, 0.5), iterations=5000, protocol="cpu", preprocessing="normalize",
    description="trajectory matching (Cazenavette et al. 2022): pixels from real images, N=20 M=2 T+=2, "
                "image lr 100; needs --objective-set experts=DIR from `condense experts`",
))
register_recipe(Recipe(
    "bptt_pixels", "pixels", "bptt", container_settings={"init": "real"}, objective_settings={"inner_steps": 150},
    optimizer=OptimizerConfig("sgd", 0.1, 0.5, gradient_clip=2.0), iterations=1000, protocol="cpu",
    description="RTP's unrolled BPTT on pixels: T=150 inner SGD-momentum steps, exact gradient with one step's "
                "graph at a time; outer SGD lr 0.1, momentum 0.5, clip 2",
))
