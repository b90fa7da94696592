"""The field's MLP baseline (VICO-UoE/DatasetCondensation networks.py): flatten -> 128 -> 128 -> classes,
ReLU between; the input layer is sized from the dataset's shape."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data.datasets import DataSpec
from .base import NETWORKS, Network, configured, make_activation


@dataclass(frozen=True)
class MLPConfig:
    width: int = 128
    activation: str = "relu"


class MLP(Network):
    def __init__(self, spec: DataSpec, config: MLPConfig):
        super().__init__(spec)
        self.config = config
        self.features = nn.Sequential(
            nn.Flatten(),  # (N, C * H * W)
            nn.Linear(spec.image_floats, config.width),
            make_activation(config.activation),
            nn.Linear(config.width, config.width),
            make_activation(config.activation),
        )
        self._finish(spec.num_classes)

    def embed(self, x):
        return self.features(x)  # (N, width)


@NETWORKS.register("mlp")
def mlp(spec: DataSpec, **overrides) -> MLP:
    return MLP(spec, configured(MLPConfig, overrides, "mlp"))
