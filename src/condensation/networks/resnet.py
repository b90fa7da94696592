"""ResNet-18, CIFAR style, as the field uses it (VICO-UoE/DatasetCondensation networks.py, read, not
copied): a 3x3 stride-1 stem without max-pool, four stages of two basic blocks (64, 128, 256, 512 channels;
stages 2-4 halve the size with stride-2 convs and 1x1 stride-2 shortcuts), global average pooling, a linear
head. ``resnet18`` uses instance norm (GroupNorm(C, C)) as DC's ResNet18, ``resnet18_bn`` batch norm.
The reference averages a 4x4 map at 32 px; global pooling is the same there and also works at 8 or 64 px."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import DataSpec
from .base import NETWORKS, Network, configured, make_norm


@dataclass(frozen=True)
class ResNetConfig:
    norm: str = "instance"
    width: int = 64  # channels of the first stage; later stages double it


class BasicBlock(nn.Module):
    """Two 3x3 convs with norm; the shortcut is a 1x1 conv + norm when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), make_norm(norm, out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W) -> (N, C_out, H/stride, W/stride)
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Network):
    def __init__(self, spec: DataSpec, config: ResNetConfig, blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__(spec)
        self.config = config
        width = config.width
        self.stem = nn.Sequential(
            nn.Conv2d(spec.channels, width, 3, padding=1, bias=False), make_norm(config.norm, width), nn.ReLU()
        )
        stages: list[nn.Module] = []
        in_channels = width
        for stage, count in enumerate(blocks):
            out_channels = width * 2**stage
            for b in range(count):
                stride = 2 if stage > 0 and b == 0 else 1
                stages.append(BasicBlock(in_channels, out_channels, stride, config.norm))
                in_channels = out_channels
        self.stages = nn.Sequential(*stages)  # (N, 8 * width, H/8, W/8) rounded up
        self._finish(spec.num_classes)

    def embed(self, x):
        return self.stages(self.stem(x)).mean(dim=(2, 3))  # global average pool: (N, 8 * width)


def _resnet18(**fixed):
    def factory(spec: DataSpec, **overrides) -> ResNet:
        return ResNet(spec, configured(ResNetConfig, {**fixed, **overrides}, "resnet18"))

    return factory


NETWORKS.register("resnet18")(_resnet18())
NETWORKS.register("resnet18_bn")(_resnet18(norm="batch"))
