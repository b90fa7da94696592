"""Coreset baselines that choose real images: random and herding (greedy mean matching)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .containers.pixels import Pixels
from .engine.real import RealPool
from .engine.train import TrainSettings, train_network
from .containers.base import Batch
from .networks import seeded_network


@dataclass(frozen=True)
class HerdingConfig:
    # "briefly": a ConvNet trained for 200 SGD steps of 64 real images (lr 0.01, momentum 0.9), no augmentation
    feature_network: str = "convnet"
    training_steps: int = 200
    training_batch_size: int = 64
    candidates_per_class: int = 1000  # herding runs over this many random real images per class


def select_random(container: Pixels, real: RealPool, generator: torch.Generator) -> None:
    """Random real images of each class (the container's 'real' initialization)."""
    container.initialize(real, generator)


@torch.no_grad()
def herding_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """Greedy herding (Welling 2009): pick the points whose running mean best tracks the full mean.
    features: (n, d) -> indices (count,)."""
    target = features.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(target)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for t in range(1, count + 1):
        distance = ((target - (running + features) / t) ** 2).sum(1)  # (n,) all candidates at once
        distance[~available] = float("inf")
        best = int(distance.argmin())
        chosen.append(best)
        available[best] = False
        running += features[best]
    return torch.tensor(chosen, device=features.device)


def select_herding(container: Pixels, real: RealPool, generator: torch.Generator,
                   config: HerdingConfig = HerdingConfig()) -> None:
    """Herding in the penultimate features of a briefly trained ConvNet."""
    network = seeded_network(config.feature_network, container.spec, generator, real.device)
    settings = TrainSettings(steps=config.training_steps, batch_size=config.training_batch_size, schedule="constant")

    def real_batches(g):  # one "epoch" = a random slice of the training split, enough for the steps
        images, labels = real.sample_any(config.training_steps * config.training_batch_size, g)
        return Batch(images, labels)

    train_network(network, real_batches, settings, generator)
    network.eval()
    ipc = container.images_per_class
    chosen = []
    with torch.no_grad():
        for c in range(container.num_classes):
            candidates = real.sample(c, config.candidates_per_class, generator)
            features = torch.cat([network.embed(chunk) for chunk in candidates.split(500)])
            if len(candidates) < ipc:
                raise ValueError(f"class {c} has {len(candidates)} images, fewer than IPC {ipc}")
            chosen.append(candidates[herding_order(features, ipc)])
    container.set_images(torch.cat(chosen))


SELECTIONS = {"random": select_random, "herding": select_herding}
