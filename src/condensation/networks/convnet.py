"""The ConvNet family of the field (VICO-UoE/DatasetCondensation networks.py, read, not copied):
D blocks of [3x3 conv -> norm -> activation -> 2x2 pool], then a linear head."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data.datasets import DataSpec
from .base import NETWORKS, Network, configured, default_depth, make_activation, make_norm, make_pool


@dataclass(frozen=True)
class ConvNetConfig:
    depth: int = 0  # 0: by image size (3 for <=32 px, 4 for 64, 5 for 128)
    width: int = 128
    norm: str = "instance"
    activation: str = "relu"
    pooling: str = "avg"


class ConvNet(Network):
    def __init__(self, spec: DataSpec, config: ConvNetConfig):
        super().__init__(spec)
        self.config = config
        depth = config.depth or default_depth(spec)
        layers: list[nn.Module] = []
        in_channels = spec.channels
        for d in range(depth):
            # single-channel inputs get padding 3 in the first conv: 28x28 becomes 32x32 as for CIFAR
            padding = 3 if spec.channels == 1 and d == 0 else 1
            layers += [
                nn.Conv2d(in_channels, config.width, 3, padding=padding),
                make_norm(config.norm, config.width),
                make_activation(config.activation),
                make_pool(config.pooling),
            ]
            in_channels = config.width
        self.features = nn.Sequential(*layers)
        self._finish(spec.num_classes)

    def embed(self, x):
        return self.features(x).flatten(1)


def _convnet(**fixed):
    def factory(spec: DataSpec, **overrides) -> ConvNet:
        return ConvNet(spec, configured(ConvNetConfig, {**fixed, **overrides}, "convnet"))

    return factory


NETWORKS.register("convnet")(_convnet())
for _depth in (1, 2, 3, 4, 5):
    NETWORKS.register(f"convnet{_depth}")(_convnet(depth=_depth))
NETWORKS.register("convnet_bn")(_convnet(norm="batch"))
NETWORKS.register("convnet_ln")(_convnet(norm="layer"))
NETWORKS.register("convnet_nn")(_convnet(norm="none"))
NETWORKS.register("convnet_w32")(_convnet(width=32))
NETWORKS.register("convnet_w64")(_convnet(width=64))
NETWORKS.register("convnet_w256")(_convnet(width=256))
