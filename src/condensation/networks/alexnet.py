"""The small AlexNet of the field's cross-architecture tables (VICO-UoE/DatasetCondensation networks.py,
read, not copied): five convolutions (128, 192, 256, 192, 192 channels) with three 2x2 max-pools, then a
linear head. Single-channel inputs get padding 4 in the first 5x5 conv, so 28x28 digits reach the same
4x4x192 map as 32x32 CIFAR."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data.datasets import DataSpec
from .base import NETWORKS, Network, configured, make_activation, make_norm


@dataclass(frozen=True)
class AlexNetConfig:
    norm: str = "none"  # the reference has no normalization; "instance"/"batch"/"layer" go after each conv
    activation: str = "relu"


class AlexNet(Network):
    def __init__(self, spec: DataSpec, config: AlexNetConfig):
        super().__init__(spec)
        self.config = config
        first_padding = 4 if spec.channels == 1 else 2

        def block(in_channels: int, out_channels: int, kernel: int, padding: int) -> list[nn.Module]:
            conv = nn.Conv2d(in_channels, out_channels, kernel, padding=padding)
            return [conv, make_norm(config.norm, out_channels), make_activation(config.activation)]

        self.features = nn.Sequential(
            *block(spec.channels, 128, 5, first_padding), nn.MaxPool2d(2, 2),  # (N, 128, H/2, W/2) at 32 px
            *block(128, 192, 5, 2), nn.MaxPool2d(2, 2),  # (N, 192, H/4, W/4)
            *block(192, 256, 3, 1),
            *block(256, 192, 3, 1),
            *block(192, 192, 3, 1), nn.MaxPool2d(2, 2),  # (N, 192, H/8, W/8): 4x4 for 32 px
        )
        self._finish(spec.num_classes)

    def embed(self, x):
        return self.features(x).flatten(1)  # (N, 192 * H/8 * W/8)


@NETWORKS.register("alexnet")
def alexnet(spec: DataSpec, **overrides) -> AlexNet:
    return AlexNet(spec, configured(AlexNetConfig, overrides, "alexnet"))
