from .base import NETWORKS, Network, batch_norm_layers, create_network, seeded_network
from . import alexnet, convnet, mlp, resnet, vgg  # noqa: F401  (register the networks)

__all__ = ["NETWORKS", "Network", "batch_norm_layers", "create_network", "seeded_network"]
