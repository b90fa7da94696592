"""HMN (Zheng et al., ECCV 2024; METHODS.md 1.5): the hierarchical memory container condensed at 1.1 x B with
IDC's batch gradient matching, then pruned back to B by double-end AUM pruning, beta chosen on the
validation split (``condensation.pruning.hmn_after_condense``, registered as ``double_end_prune``)."""
from dataclasses import fields

from ..engine.condense import OptimizerConfig
from . import Recipe, register_recipe

# run.py runs the step named here after condensation once Recipe has the field
_AFTER = {"post_condense": "double_end_prune"} if "post_condense" in {f.name for f in fields(Recipe)} else {}

register_recipe(Recipe(
    "hmn", "hmn", "idc", container_settings={"over_budget": 0.1},
    optimizer=OptimizerConfig("adam", 0.01), iterations=2000, protocol="cpu",
    description="HMN: dataset/class/instance memories + per-class extractors + one decoder, IDC batch gradient "
                "matching at 1.1 x B, then double-end AUM pruning to B (beta on the validation split)",
    **_AFTER,
))
