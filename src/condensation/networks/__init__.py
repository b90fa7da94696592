from .base import NETWORKS, Network, create_network
from . import alexnet, convnet, mlp, resnet, vgg  # noqa: F401  (register the networks)

__all__ = ["NETWORKS", "Network", "create_network"]
