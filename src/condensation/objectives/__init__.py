from .base import OBJECTIVES, Objective, create_objective
from . import distribution  # noqa: F401  (registers dm, echo)
from . import gradient  # noqa: F401  (registers dc, dsa, idc)
from . import trajectory, bptt  # noqa: F401  (registers mtt, bptt)

__all__ = ["OBJECTIVES", "Objective", "create_objective"]
