"""Shared pieces of every network: the registry, the input-shape check and the norm/activation tables."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import DataSpec
from ..errors import ConfigError
from ..registry import Registry, build_config

NETWORKS: Registry[Callable[..., "Network"]] = Registry("network")


class Network(nn.Module):
    """A classifier with ``embed`` (penultimate features) and ``classify`` (the linear head)."""

    def __init__(self, spec: DataSpec):
        super().__init__()
        self.input_shape = (spec.channels, spec.height, spec.width)

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, D)
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{type(self).__name__} was built for inputs {self.input_shape}, got {tuple(x.shape[1:])}"
            )
        return self.classify(self.embed(x))

    def _finish(self, num_classes: int) -> None:
        """Size the head by a dry run; refuse image sizes the feature stack cannot take."""
        was_training = self.training
        self.eval()  # the dry run must not touch batch-norm running statistics
        with torch.no_grad():
            try:
                features = self.embed(torch.zeros(2, *self.input_shape))
            except RuntimeError as error:
                raise ConfigError(
                    f"{type(self).__name__} cannot take {self.input_shape[1]}x{self.input_shape[2]} images: {error}"
                ) from None
        self.train(was_training)
        self.feature_dim = features.shape[1]
        self.head = nn.Linear(self.feature_dim, num_classes)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":  # the field's "instancenorm" is GroupNorm(C, C) with affine
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample statistics over (C, H, W), per-channel affine
        return nn.GroupNorm(1, channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm '{kind}'; choose one of: instance, batch, layer, none")


def make_activation(kind: str) -> nn.Module:
    table = {"relu": nn.ReLU, "leakyrelu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
    if kind not in table:
        raise ConfigError(f"unknown activation '{kind}'; choose one of: {', '.join(table)}")
    return table[kind]()


class AveragePool2x2(nn.Module):
    """2x2 average pooling, stride 2: ``nn.AvgPool2d(2, 2)``'s numbers (1/4 is exact in binary). Forwards
    without autograd (DM's real features, test accuracy) run it as a depthwise convolution with weights 1/4,
    which oneDNN does 1.6-4x faster than ATen's NCHW pooling on the development CPU; with autograd, ATen's
    pooling stays, because a depthwise convolution's double backward (gradient matching, MTT, BPTT) is
    slower than pooling's. Measurements: ``python benchmarks/speed_probes.py pooling``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return F.avg_pool2d(x, 2)
        channels = x.shape[1]
        weight = torch.full((channels, 1, 2, 2), 0.25, dtype=x.dtype, device=x.device)
        return F.conv2d(x, weight, stride=2, groups=channels)


def make_pool(kind: str) -> nn.Module:
    table = {"avg": AveragePool2x2, "max": lambda: nn.MaxPool2d(2, 2), "none": nn.Identity}
    if kind not in table:
        raise ConfigError(f"unknown pooling '{kind}'; choose one of: {', '.join(table)}")
    return table[kind]()


def batch_norm_layers(network: nn.Module) -> list[nn.Module]:
    """The network's batch-norm layers: their statistics couple the images of one forward pass."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def create_network(name: str, spec: DataSpec, **overrides) -> Network:
    """Build a network by name for a dataset's shape, e.g. ``create_network('convnet', spec, depth=4)``."""
    return NETWORKS.get(name)(spec, **overrides)


def seeded_network(name: str, spec: DataSpec, generator: torch.Generator, device, **overrides) -> nn.Module:
    """Build a network with weights drawn from a seed taken from ``generator`` (no global RNG leaks)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = create_network(name, spec, **overrides)
    return network.to(device)


def default_depth(spec: DataSpec) -> int:
    """ConvNet-3 for 28/32 px (and smaller), 4 for 64 px, 5 for 128 px (the field's convention)."""
    size = max(spec.height, spec.width)
    return 3 if size <= 32 else 4 if size <= 64 else 5


def configured(config_class, overrides, name):
    return build_config(config_class, overrides, f"network '{name}'")
