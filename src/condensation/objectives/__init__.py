from .base import OBJECTIVES, Objective, create_objective, seeded_network
from . import distribution  # noqa: F401  (registers dm, echo)

__all__ = ["OBJECTIVES", "Objective", "create_objective", "seeded_network"]
