from .base import CONTAINERS, Batch, Container, create_container
from . import pixels  # noqa: F401  (registers pixels, multi_formation)
from . import memories, factorization  # noqa: F401  (registers memories, factorization)
from . import hmn  # noqa: F401  (registers hmn)

__all__ = ["CONTAINERS", "Batch", "Container", "create_container"]
