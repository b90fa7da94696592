from .base import NETWORKS, Network, create_network
from . import convnet  # noqa: F401  (registers the ConvNet family)

__all__ = ["NETWORKS", "Network", "create_network"]
