"""The one network-training loop (evaluation, herding's feature network, AUM scoring) and test accuracy."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..containers.base import Batch
from ..data.augment import DSA, DSAConfig, cutmix


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 0  # > 0: exactly this many SGD steps
    epochs: int = 0  # used when steps == 0
    batch_size: int = 256
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step_half"
    cutmix_probability: float = 0.0


def learning_rate_at(settings: TrainSettings, step: int, total: int) -> float:
    base, fraction = settings.learning_rate, step / max(total, 1)
    if settings.schedule == "step_half":
        return base * (0.1 if step >= total // 2 else 1.0)
    if settings.schedule == "idc":
        return base * (0.2 ** ((step >= 2 * total // 3) + (step >= 5 * total // 6)))
    if settings.schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * fraction))
    if settings.schedule == "constant":
        return base
    raise ValueError(f"unknown schedule '{settings.schedule}'; choose one of: step_half, idc, cosine, constant")


def total_steps(settings: TrainSettings, dataset_size: int) -> int:
    if settings.steps > 0:
        return settings.steps
    return settings.epochs * math.ceil(dataset_size / settings.batch_size)


def train_network(
    network: nn.Module,
    epoch_batch: Callable[[torch.Generator], Batch],
    settings: TrainSettings,
    generator: torch.Generator,
    augment: DSA | None = None,
    on_epoch: Callable[[nn.Module, Batch, torch.Tensor], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> nn.Module:
    """Train on the batches ``epoch_batch(generator)`` returns (called once per epoch). ``on_epoch`` gets
    (network, the epoch's data, the logits of that data after the epoch) — used by AUM scoring. Pass an
    ``optimizer`` to keep its momentum across calls (a network trained a little between outer steps)."""
    if optimizer is None:
        optimizer = make_network_optimizer(network, settings)
    network.train()
    # A step budget counts SGD steps, so each must be a full batch: with 130 images and batch 128 the tail
    # of 2 would otherwise take every other step. The reshuffle each epoch still shows every image.
    full_batches_only = settings.steps > 0
    step, total = 0, None
    while total is None or step < total:
        data = epoch_batch(generator)
        if total is None:
            total = total_steps(settings, len(data.labels))
        order = torch.randperm(len(data.labels), generator=generator).to(data.labels.device)
        for start in range(0, len(order), settings.batch_size):
            if step >= total:
                break
            chosen = order[start:start + settings.batch_size]
            if full_batches_only and start > 0 and len(chosen) < settings.batch_size:
                break
            images, labels = data.images[chosen], data.labels[chosen]
            if augment is not None:
                images = augment(images, generator)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(settings, step, total)
            if settings.cutmix_probability > 0 and float(torch.rand(1, generator=generator)) < settings.cutmix_probability:
                images, labels_a, labels_b, lam = cutmix(images, labels, generator)
                logits = network(images)
                loss = lam * F.cross_entropy(logits, labels_a) + (1 - lam) * F.cross_entropy(logits, labels_b)
            else:
                loss = F.cross_entropy(network(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if on_epoch is not None:
            with torch.no_grad():
                on_epoch(network, data, predict(network, data.images))
            network.train()
    return network


def make_network_optimizer(network: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(network.parameters(), lr=settings.learning_rate,
                           momentum=settings.momentum, weight_decay=settings.weight_decay)


@torch.no_grad()
def predict(network: nn.Module, inputs: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    was_training = network.training
    network.eval()
    logits = torch.cat([network(chunk) for chunk in inputs.split(batch_size)])
    network.train(was_training)
    return logits


@torch.no_grad()
def accuracy(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent on preprocessed inputs."""
    correct = 0
    network.eval()
    for x, y in zip(inputs.split(batch_size), labels.split(batch_size)):
        correct += int((network(x).argmax(1) == y).sum())
    return 100.0 * correct / len(labels)


def make_evaluation_augment(augmentation: str, mode: str, flip_allowed: bool) -> DSA | None:
    if augmentation == "none":
        return None
    return DSA(DSAConfig(mode=mode), flip_allowed=flip_allowed)
