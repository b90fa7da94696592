"""Train seeded networks from scratch on a container's images and test them on real data."""
from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..containers.base import Batch, Container
from ..data.augment import DSA, flips_allowed, make_evaluation_augment
from ..data.datasets import Split
from ..engine.train import (TrainSettings, accuracy, can_train_as_ensemble, train_ensemble,
                            train_network)
from ..distributed import gather, rank, world_size
from ..errors import ConfigError
from ..formatting import format_mean_std
from ..networks import seeded_network
from ..runtime import check_precision
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
        return format_mean_std(self.mean, self.std, self.n)


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


ENSEMBLE_MODES = ("auto", "vmap", "sequential")


def evaluate_container(
    container: Container,
    split: Split,
    protocol: Protocol,
    seed: int,
    architectures: tuple[str, ...] | None = None,
    device: torch.device | str = "cpu",
    learned_learning_rate: float | None = None,
    progress: bool = False,
    ensemble: str = "auto",
    precision: str = "fp32",
) -> dict[str, AccuracySummary]:
    """Accuracy (%) of ``protocol.networks`` networks per architecture trained on the container's images.

    ``split`` is the real test split, or the validation split for any selection (never the test split).
    ``ensemble`` and ``precision`` as for ``evaluate_on_splits``."""
    return evaluate_on_splits(container, {"split": split}, protocol, seed, architectures, device,
                              learned_learning_rate, progress, ensemble, precision)["split"]


def evaluate_on_splits(
    container: Container,
    splits: dict[str, Split],
    protocol: Protocol,
    seed: int,
    architectures: tuple[str, ...] | None = None,
    device: torch.device | str = "cpu",
    learned_learning_rate: float | None = None,
    progress: bool = False,
    ensemble: str = "auto",
    precision: str = "fp32",
) -> dict[str, dict[str, AccuracySummary]]:
    """``evaluate_container`` on several real splits at once ({split name: {architecture: summary}}): each
    network is trained once and tested on every split, so validation and test numbers come from the same
    networks (for reporting; a choice made on validation must still be evaluated again on test).

    Network k of an architecture draws everything (weights, batch order, augmentation, CutMix) from its own
    generator (``network_generator``), so its result does not depend (beyond float rounding) on how the
    networks are trained: ``ensemble="sequential"`` trains them one by one, ``"vmap"`` all at once
    (``train_ensemble``) when the architecture allows it (no batch norm), ``"auto"`` vmaps on CUDA only:
    on CPU the vmapped convolutions become grouped ones, slower than a loop. ``precision`` ("fp32", "bf16") applies to the
    test forwards only; training is float32. Of ``container`` only ``spec``, ``preprocessing``,
    ``evaluation_source()`` and ``to(device)`` are used (continual learning passes every stored task at once)."""
    if not splits:
        raise ValueError("evaluate_on_splits needs at least one split")
    if ensemble not in ENSEMBLE_MODES:
        raise ConfigError(f"unknown ensemble mode '{ensemble}'; choose one of: {', '.join(ENSEMBLE_MODES)}")
    check_precision(precision)
    device = torch.device(device)
    container = container.to(device)
    prepared = {name: prepare_split(split, container.preprocessing, device, protocol.test_limit)
                for name, split in splits.items()}
    learning_rate = learned_learning_rate if protocol.use_learned_learning_rate else None
    settings = train_settings(protocol, learning_rate)
    flip = flips_allowed(protocol.flip_rule, container.spec.flip_allowed)
    augment = make_evaluation_augment(protocol.augmentation, protocol.augment_mode, flip, protocol.augment_strategy)
    source = container.evaluation_source()
    architectures = tuple(architectures or protocol.architectures)
    # under torchrun the networks (x architectures) are dealt round-robin to the ranks, each trains its share
    # (as one ensemble where it can) and the accuracies are gathered; network k's result is the same on any rank
    jobs = [(architecture, k) for architecture in architectures for k in range(protocol.networks)]
    mine = jobs[rank()::world_size()]
    local = {}
    for architecture in architectures:
        indices = [k for a, k in mine if a == architecture]
        if not indices:
            continue
        generators = [network_generator(seed, architecture, k) for k in indices]
        build = functools.partial(seeded_network, architecture, container.spec, device=device)  # generator -> network
        trained = trained_networks(build, generators, source, settings, augment, ensemble, device)
        for k, (network, training_seconds) in zip(indices, trained):
            started = time.perf_counter()
            for name, (inputs, labels) in prepared.items():
                local[name, architecture, k] = accuracy(network, inputs, labels, precision=precision)
            if progress:
                shown = ", ".join(f"{name} {local[name, architecture, k]:.2f}%" if len(splits) > 1
                                  else f"{local[name, architecture, k]:.2f}%" for name in splits)
                seconds = training_seconds + time.perf_counter() - started
                where = f" (rank {rank()})" if world_size() > 1 else ""
                print(f"  {architecture} network {k + 1}/{protocol.networks}{where}: {shown} ({seconds:.0f} s)",
                      flush=True)
    merged = {key: value for part in gather(local) for key, value in part.items()}
    values = {name: {architecture: [merged[name, architecture, k] for k in range(protocol.networks)]
                     for architecture in architectures} for name in splits}
    return {name: {arch: AccuracySummary.of(v) for arch, v in per_arch.items()} for name, per_arch in values.items()}


def network_generator(seed: int, architecture: str, index: int) -> torch.Generator:
    """Network ``index`` of ``architecture``'s own random stream under the protocol ``seed``. The seed is a
    stable digest of the three (never Python's ``hash``, salted per process), so the stream is the same in
    every run and every training path, and no two networks share one."""
    digest = hashlib.blake2b(f"{seed}/{architecture}/{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)  # 63 bits: a valid seed


def trained_networks(
    build: Callable[[torch.Generator], nn.Module],
    generators: list[torch.Generator],
    source: Callable[[torch.Generator], Batch],
    settings: TrainSettings,
    augment: DSA | None,
    ensemble: str,
    device: torch.device,
) -> Iterator[tuple[nn.Module, float]]:
    """(trained network, its training seconds) for each generator, network k built by ``build(generators[k])``.
    One by one as they finish, or all together after one ``train_ensemble`` (each then gets an equal share
    of its seconds)."""
    first = build(generators[0])
    if not uses_vmap(ensemble, first, device):
        for k, generator in enumerate(generators):
            started = time.perf_counter()
            network = first if k == 0 else build(generator)
            yield train_network(network, source, settings, generator, augment), time.perf_counter() - started
        return
    started = time.perf_counter()
    networks = [first] + [build(generator) for generator in generators[1:]]
    train_ensemble(networks, source, settings, generators, augment)
    share = (time.perf_counter() - started) / len(networks)
    for network in networks:
        yield network, share


def uses_vmap(ensemble: str, network: nn.Module, device: torch.device) -> bool:
    """Whether networks like ``network`` train as one vmapped ensemble under the ``ensemble`` mode."""
    if ensemble == "sequential" or (ensemble == "auto" and device.type != "cuda"):
        return False
    return can_train_as_ensemble(network)
