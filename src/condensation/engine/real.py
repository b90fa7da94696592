"""Real training images held on the device, indexed per class, preprocessed once."""
from __future__ import annotations

import torch

from ..data.datasets import Split
from ..data.preprocessing import Preprocessing


class RealPool:
    """``inputs``: preprocessed (network-input space); ``raw``: [0, 1] pixels (for pixel-space inits)."""

    def __init__(self, split: Split, num_classes: int, preprocessing: Preprocessing, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.raw = split.images.to(self.device)
        with torch.no_grad():
            self.inputs = torch.cat([preprocessing(chunk) for chunk in self.raw.split(4096)])
        self.labels = split.labels.to(self.device)
        self.num_classes = num_classes
        self.indices = [i.to(self.device) for i in split.class_indices(num_classes)]

    def _choose(self, class_index: int, count: int, generator: torch.Generator, replace_if_short: bool) -> torch.Tensor:
        available = self.indices[class_index]
        n = len(available)
        if count <= n:
            positions = torch.randperm(n, generator=generator)[:count]
        elif replace_if_short:
            positions = torch.randint(n, (count,), generator=generator)
        else:
            positions = torch.randperm(n, generator=generator)
        return available[positions.to(self.device)]

    def sample(self, class_index: int, count: int, generator: torch.Generator, replace_if_short: bool = False) -> torch.Tensor:
        """Up to ``count`` random preprocessed images of one class (without replacement)."""
        return self.inputs[self._choose(class_index, count, generator, replace_if_short)]

    def sample_raw(self, class_index: int, count: int, generator: torch.Generator,
                   replace_if_short: bool = False) -> torch.Tensor:
        return self.raw[self._choose(class_index, count, generator, replace_if_short)]

    def sample_classes(self, classes: list[int], count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) with ``count`` images of each listed class, in class order."""
        chosen = torch.cat([self._choose(c, count, generator, False) for c in classes])
        return self.inputs[chosen], self.labels[chosen]

    def sample_any(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` images drawn uniformly from the whole split."""
        chosen = torch.randperm(len(self.labels), generator=generator)[:count].to(self.device)
        return self.inputs[chosen], self.labels[chosen]
