"""Train seeded networks from scratch on a container's images and test them on real data."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..containers.base import Container
from ..data.datasets import Split
from ..engine.train import TrainSettings, accuracy, make_evaluation_augment, train_network
from ..objectives.base import seeded_network
from .protocols import Protocol


@dataclass
class AccuracySummary:
    mean: float
    std: float  # population std (numpy's default, as the field reports)
    n: int
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: list[float]) -> "AccuracySummary":
        array = np.asarray(values, dtype=float)
        return cls(float(array.mean()), float(array.std()), len(values), [round(v, 4) for v in values])

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}"


def train_settings(protocol: Protocol, learning_rate: float | None = None) -> TrainSettings:
    return TrainSettings(
        steps=protocol.steps, epochs=protocol.epochs, batch_size=protocol.batch_size,
        learning_rate=learning_rate if learning_rate is not None else protocol.learning_rate,
        momentum=protocol.momentum, weight_decay=protocol.weight_decay, schedule=protocol.schedule,
        cutmix_probability=protocol.cutmix_probability,
    )


def prepare_split(split: Split, preprocessing, device, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = split.images, split.labels
    if limit:
        images, labels = images[:limit], labels[:limit]
    with torch.no_grad():
        inputs = torch.cat([preprocessing(chunk.to(device)) for chunk in images.split(4096)])
    return inputs, labels.to(device)


def evaluate_container(
    container: Container,
    split: Split,
    protocol: Protocol,
    seed: int,
    architectures: tuple[str, ...] | None = None,
    device: torch.device | str = "cpu",
    learned_learning_rate: float | None = None,
    progress: bool = False,
) -> dict[str, AccuracySummary]:
    """Accuracy (%) of ``protocol.networks`` networks per architecture trained on the container's images.

    ``split`` is the real test split, or the validation split for any selection (never the test split)."""
    return evaluate_on_splits(container, {"split": split}, protocol, seed, architectures, device,
                              learned_learning_rate, progress)["split"]


def evaluate_on_splits(
    container: Container,
    splits: dict[str, Split],
    protocol: Protocol,
    seed: int,
    architectures: tuple[str, ...] | None = None,
    device: torch.device | str = "cpu",
    learned_learning_rate: float | None = None,
    progress: bool = False,
) -> dict[str, dict[str, AccuracySummary]]:
    """``evaluate_container`` on several real splits at once ({split name: {architecture: summary}}): each
    network is trained once and tested on every split, so validation and test numbers come from the same
    networks (for reporting; a choice made on validation must still be evaluated again on test)."""
    if not splits:
        raise ValueError("evaluate_on_splits needs at least one split")
    device = torch.device(device)
    container = container.to(device)
    prepared = {name: prepare_split(split, container.preprocessing, device, protocol.test_limit)
                for name, split in splits.items()}
    learning_rate = learned_learning_rate if protocol.use_learned_learning_rate else None
    settings = train_settings(protocol, learning_rate)
    flip = container.spec.flip_allowed if protocol.flip_rule == "dataset" else True
    augment = make_evaluation_augment(protocol.augmentation, protocol.augment_mode, flip)
    source = container.evaluation_source()
    values = {name: {} for name in splits}
    for architecture in architectures or protocol.architectures:
        generator = torch.Generator().manual_seed(seed)
        for name in splits:
            values[name][architecture] = []
        for k in range(protocol.networks):
            started = time.perf_counter()
            network = seeded_network(architecture, container.spec, generator, device)
            train_network(network, source, settings, generator, augment)
            for name, (inputs, labels) in prepared.items():
                values[name][architecture].append(accuracy(network, inputs, labels))
            if progress:
                shown = ", ".join(f"{name} {v[architecture][-1]:.2f}%" if len(splits) > 1 else f"{v[architecture][-1]:.2f}%"
                                  for name, v in values.items())
                print(f"  {architecture} network {k + 1}/{protocol.networks}: {shown} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
    return {name: {arch: AccuracySummary.of(v) for arch, v in per_arch.items()} for name, per_arch in values.items()}
