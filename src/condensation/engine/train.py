"""The one network-training loop (evaluation, herding's feature network, AUM scoring), its vmapped twin for
ensembles of one architecture (``train_ensemble``), and test accuracy."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from ..containers.base import Batch
from ..data.augment import DSA, cutmix
from ..networks import batch_norm_layers
from ..runtime import forward_in_chunks, no_grad_forward


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
    ``optimizer`` to keep its momentum across calls (a network trained a little between outer steps).

    Every random draw (the epoch's data, its order, augmentation, CutMix) comes from ``generator``, in
    this order per step: augmentation, then CutMix. ``train_ensemble`` repeats exactly these draws."""
    if optimizer is None:
        optimizer = make_network_optimizer(network, settings)
    network.train()
    step, total = 0, None
    while total is None or step < total:
        data = epoch_batch(generator)
        if total is None:
            total = total_steps(settings, len(data.labels))
        order = torch.randperm(len(data.labels), generator=generator).to(data.labels.device)
        for start, stop in epoch_slices(len(order), settings):
            if step >= total:
                break
            images, labels, mix = training_batch(data, order[start:stop], augment, settings, generator)
            set_learning_rate(optimizer, learning_rate_at(settings, step, total))
            loss = mixed_cross_entropy(network(images), labels, mix)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if on_epoch is not None:
            with torch.no_grad():
                on_epoch(network, data, predict(network, data.images))
            network.train()
    return network


def epoch_slices(size: int, settings: TrainSettings) -> list[tuple[int, int]]:
    """The (start, stop) ranges of one epoch's batches in its shuffled order of ``size`` images."""
    starts = range(0, size, settings.batch_size)
    slices = [(start, min(start + settings.batch_size, size)) for start in starts]
    # A step budget counts SGD steps, so each must be a full batch: with 130 images and batch 128 the tail
    # of 2 would otherwise take every other step. The reshuffle each epoch still shows every image. A set
    # smaller than one batch is the exception: all of it is the batch.
    if settings.steps > 0 and len(slices) > 1 and slices[-1][1] - slices[-1][0] < settings.batch_size:
        slices.pop()
    return slices


def training_batch(data: Batch, chosen: torch.Tensor, augment: DSA | None, settings: TrainSettings,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, float] | None]:
    """(images, labels, CutMix's (second labels, weight of the first) or None) of one SGD step."""
    images, labels = data.images[chosen], data.labels[chosen]
    if augment is not None:
        images = augment(images, generator)
    if settings.cutmix_probability > 0 and float(torch.rand(1, generator=generator)) < settings.cutmix_probability:
        images, labels, other_labels, weight = cutmix(images, labels, generator)
        return images, labels, (other_labels, weight)
    return images, labels, None


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                        mix: tuple[torch.Tensor, float] | None) -> torch.Tensor:
    if mix is None:
        return F.cross_entropy(logits, labels)
    other_labels, weight = mix
    return weight * F.cross_entropy(logits, labels) + (1 - weight) * F.cross_entropy(logits, other_labels)


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate


def make_network_optimizer(network: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    return make_optimizer(network.parameters(), settings)


def make_optimizer(parameters: Iterable[torch.Tensor], settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=settings.learning_rate,
                           momentum=settings.momentum, weight_decay=settings.weight_decay)


# ------------------------------------------------------------------------------------------- ensembles
def can_train_as_ensemble(network: nn.Module) -> bool:
    """Whether ``train_ensemble`` can take networks like this one: a pure function of its parameters.
    Batch norm (its running statistics, and its batch statistics under vmap) and any other buffer are
    state the vmapped forward would not carry, so such networks train one by one."""
    has_batch_norm = bool(batch_norm_layers(network))
    has_buffers = next(network.buffers(), None) is not None
    return not has_batch_norm and not has_buffers


def train_ensemble(
    networks: Sequence[nn.Module],
    epoch_batch: Callable[[torch.Generator], Batch],
    settings: TrainSettings,
    generators: Sequence[torch.Generator],
    augment: DSA | None = None,
) -> list[nn.Module]:
    """Train networks of one architecture at once: network k exactly as ``train_network(networks[k],
    epoch_batch, settings, generators[k], augment)`` would (same draws from its own generator: epoch data,
    order, augmentation, CutMix), with one vmapped forward and backward per step over the stacked weights.

    The summed loss keeps each network's gradient its own, and SGD with momentum and weight decay is
    elementwise, so one optimizer over the stacked tensors is N independent optimizers. The trained
    weights are written back into ``networks`` (returned as a list). Networks must pass
    ``can_train_as_ensemble``, and every network's epoch must hold the same number of images."""
    networks = list(networks)
    _check_ensemble(networks, generators)
    for network in networks:
        network.train()
    parameters, _ = stack_module_state(networks)  # {name: (N, *shape)}, new leaves
    forward = _vmapped_forward(networks[0])
    optimizer = make_optimizer(parameters.values(), settings)
    step, total = 0, None
    while total is None or step < total:
        epochs = [epoch_batch(generator) for generator in generators]
        size = _common_size(epochs)
        if total is None:
            total = total_steps(settings, size)
        orders = [torch.randperm(size, generator=generator).to(data.labels.device)
                  for data, generator in zip(epochs, generators)]
        for start, stop in epoch_slices(size, settings):
            if step >= total:
                break
            batches = [training_batch(data, order[start:stop], augment, settings, generator)
                       for data, order, generator in zip(epochs, orders, generators)]
            set_learning_rate(optimizer, learning_rate_at(settings, step, total))
            logits = forward(parameters, torch.stack([images for images, _, _ in batches]))  # (N, B, classes)
            loss = sum(mixed_cross_entropy(logits[k], labels, mix) for k, (_, labels, mix) in enumerate(batches))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    _write_back(networks, parameters)
    return networks


def _check_ensemble(networks: list[nn.Module], generators: Sequence[torch.Generator]) -> None:
    if not networks or len(networks) != len(generators):
        raise ValueError(f"train_ensemble needs one generator per network (>= 1), got {len(networks)} "
                         f"networks and {len(generators)} generators")
    refused = [type(network).__name__ for network in networks if not can_train_as_ensemble(network)]
    if refused:
        raise ValueError(f"{refused[0]} has batch norm or buffers: train it with train_network")
    shapes = [[(name, p.shape) for name, p in network.named_parameters()] for network in networks]
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError("train_ensemble needs networks of one architecture (the same parameter names and shapes)")


def _vmapped_forward(network: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """(stacked parameters {name: (N, ...)}, images (N, B, C, H, W)) -> logits (N, B, classes)."""
    skeleton = copy.deepcopy(network).to("meta")  # only its structure is used: the weights come as arguments

    def one(parameters: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, parameters, (images,))

    return torch.vmap(one)


def _common_size(epochs: list[Batch]) -> int:
    sizes = {len(data.labels) for data in epochs}
    if len(sizes) != 1:
        raise ValueError(f"train_ensemble needs epochs of one size for every network, got sizes {sorted(sizes)}")
    return sizes.pop()


@torch.no_grad()
def _write_back(networks: list[nn.Module], parameters: dict[str, torch.Tensor]) -> None:
    for k, network in enumerate(networks):
        for name, parameter in network.named_parameters():
            parameter.copy_(parameters[name][k])


# ---------------------------------------------------------------------------------------- test forward
def predict(network: nn.Module, inputs: torch.Tensor, batch_size: int = 256, precision: str = "fp32") -> torch.Tensor:
    """Evaluation-mode logits (float32) of ``inputs`` in chunks of ``batch_size``, without a graph: the
    result is an inference tensor, to read (never to save for a backward)."""
    was_training = network.training
    network.eval()
    with no_grad_forward(precision, inputs.device):
        logits = forward_in_chunks(network, inputs, batch_size)
    network.train(was_training)
    return logits


def accuracy(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 256,
             precision: str = "fp32") -> float:
    """Top-1 accuracy in percent on preprocessed inputs; the network is left in evaluation mode."""
    logits = predict(network, inputs, batch_size, precision)
    network.eval()
    correct = int((logits.argmax(1) == labels).sum())
    return 100.0 * correct / len(labels)
