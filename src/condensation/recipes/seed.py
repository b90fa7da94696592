"""The seed papers' parameterized containers: ``rtp`` (addressable memories + BPTT) and ``haba``
(factorization + trajectory matching + the adversarial contrastive term).

``rtp`` (METHODS.md 1.3, 2.5; the RTP README's command): K = 16 memories at H/2 x W/2, r from the budget,
xavier-uniform start; T = 150 inner SGD steps (lr 0.01, momentum 0.9; 32 generated and 64 real images per
class); outer SGD lr 0.1, momentum 0.5, gradient-norm clip 2. CPU tables lower T with
``--objective-set inner_steps=20`` or so.

``haba`` (METHODS.md 1.4, 2.4): budget-strict factorization by default (``--container-set
budget_mode=paper`` gives the official sizes, 1.02-1.91 x B, and needs an explicit ``budget_ratio``);
bases and hallucinators SGD lr 100, momentum 0.95 (official); the learned step size with momentum 0.9,
clipped at >= 0.001 (HaBa). The remaining trajectory settings are those of the ``mtt`` recipe for the CPU
tables (N = 20, M = 2, T+ = 2, alpha lr 1e-5), so that ``mtt`` and ``haba`` differ only in the container;
HaBa's CIFAR-10 settings per IPC are in ``objectives.trajectory.HABA_SETTINGS``. Needs
``--objective-set experts=DIR`` from ``condense experts``.
"""
from ..engine.condense import OptimizerConfig
from . import Recipe, register_recipe

HABA_CPU_SETTINGS = {"syn_steps": 20, "expert_epochs": 2, "max_start_epoch": 2, "syn_lr": 0.01, "lr_lr": 1e-5,
                     "lr_momentum": 0.9, "min_syn_lr": 0.001}

register_recipe(Recipe(
    "rtp", "memories", "bptt", container_settings={"bases": 16, "downsample": 2, "init": "xavier"},
    objective_settings={"inner_steps": 150, "inner_learning_rate": 0.01, "inner_momentum": 0.9,
                        "synthetic_per_class": 32, "real_per_class": 64},
    optimizer=OptimizerConfig("sgd", 0.1, 0.5, gradient_clip=2.0), iterations=1000, protocol="cpu",
    preprocessing="normalize",
    description="RTP (Deng & Russakovsky 2022): 16 addressable memories at half resolution, r images per class "
                "from the budget; BPTT T=150, outer SGD lr 0.1 momentum 0.5, clip 2",
))
register_recipe(Recipe(
    "haba", "factorization", "mtt", container_settings={"budget_mode": "strict", "adversarial": True},
    objective_settings=HABA_CPU_SETTINGS, optimizer=OptimizerConfig("sgd", 100.0, 0.95), iterations=5000,
    protocol="cpu", preprocessing="normalize",
    description="HaBa (Liu et al. 2022): bases x 5 hallucinators within B (budget_mode=paper: official sizes), "
                "trajectory matching + adversarial contrastive term; lr 100 momentum 0.95; needs "
                "--objective-set experts=DIR",
))
