from .base import CONTAINERS, Batch, Container, create_container
from . import pixels  # noqa: F401  (registers pixels, multi_formation)

__all__ = ["CONTAINERS", "Batch", "Container", "create_container"]
