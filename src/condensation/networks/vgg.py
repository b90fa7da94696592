"""VGG-11 as the field uses it for 32x32 images (VICO-UoE/DatasetCondensation networks.py, read, not
copied): eight 3x3 convs [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M] with norm + ReLU, five 2x2
max-pools, a linear head on the flattened map (512-d at 32 px). ``vgg11`` uses instance norm
(GroupNorm(C, C)), ``vgg11_bn`` batch norm. Single-channel inputs get padding 3 in the first conv (28 -> 32).
Five pools need at least 32x32 after that padding: smaller images are refused."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data.datasets import DataSpec
from .base import NETWORKS, Network, configured, make_activation, make_norm

VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


@dataclass(frozen=True)
class VGGConfig:
    norm: str = "instance"
    activation: str = "relu"


class VGG(Network):
    def __init__(self, spec: DataSpec, config: VGGConfig, layers: tuple = VGG11_LAYERS):
        super().__init__(spec)
        self.config = config
        modules: list[nn.Module] = []
        in_channels = spec.channels
        for layer in layers:
            if layer == "M":
                modules.append(nn.MaxPool2d(2, 2))
                continue
            padding = 3 if spec.channels == 1 and not modules else 1  # first conv: 28 -> 32 for digits
            modules += [
                nn.Conv2d(in_channels, layer, 3, padding=padding),
                make_norm(config.norm, layer),
                make_activation(config.activation),
            ]
            in_channels = layer
        self.features = nn.Sequential(*modules)  # (N, 512, H/32, W/32)
        self._finish(spec.num_classes)

    def embed(self, x):
        return self.features(x).flatten(1)


def _vgg11(**fixed):
    def factory(spec: DataSpec, **overrides) -> VGG:
        return VGG(spec, configured(VGGConfig, {**fixed, **overrides}, "vgg11"))

    return factory


NETWORKS.register("vgg11")(_vgg11())
NETWORKS.register("vgg11_bn")(_vgg11(norm="batch"))
