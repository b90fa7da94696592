"""HMN (Zheng et al., ECCV 2024; METHODS.md 1.5): the hierarchical memory container condensed at 1.1 x B with
IDC's batch gradient matching, then pruned back to B by double-end AUM pruning, beta chosen on the
validation split (``condensation.pruning.hmn_after_condense``, registered as ``double_end_prune``).

Choices measured (Fashion-MNIST IPC 1, default sizes, 13 images per class at 1.1 x B; validation accuracy of
2 ConvNet-w32 trained 300 steps, first 2,000 validation images; IDC loss, distance l1, ConvNet-w32):
random init 8.6% before condensation, 54.5% after 100 iterations at Adam 1e-3, 67.4% / 70.7% after 100 / 300
at Adam 1e-2; ``init="reconstruct"`` 66.1% before, 71.1% / 71.4% after 100 / 300 at Adam 1e-3 (66.1% after 100
at Adam 1e-2, which undoes the start). Hence reconstruct + Adam 1e-3. For MNIST-like data IDC uses
``--objective-set distance=l1``.
"""
from ..engine.condense import OptimizerConfig
from . import Recipe, register_recipe

register_recipe(Recipe(
    "hmn", "hmn", "idc", container_settings={"over_budget": 0.1, "init": "reconstruct"},
    optimizer=OptimizerConfig("adam", 1e-3), iterations=2000, protocol="cpu",
    description="HMN: dataset/class/instance memories + per-class extractors + one decoder, fitted to real "
                "images first, IDC batch gradient matching at 1.1 x B (Adam 1e-3), then double-end AUM pruning "
                "to B (beta on the validation split)",
    post_condense="double_end_prune",
))
