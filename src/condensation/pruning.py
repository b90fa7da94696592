"""Over-budget condensation, then double-end pruning by the Area Under the Margin (HMN;
docs/methods.md, Over-budget condensation and pruning (HMN)).

1. ``aum_scores``: train a network on the generated images; an image's AUM is the mean over epochs of
   ``logit_y - max_{other} logit`` (Pleiss et al. 2020). Low AUM: hard (or mislabeled-like); high: easy.
2. ``double_end_keep``: per class, drop the floor(beta * k) hardest and the k - floor(beta * k) easiest.
3. ``select_beta``: beta by accuracy on the *validation* split (held out from the real training set; never
   the test split); ``prune_to_budget`` keeps the largest class-balanced count that fits B.

``hmn_after_condense`` chains the three; run.py calls it through ``POST_CONDENSE`` after condensation.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field

import torch

from .containers.base import Container
from .data.datasets import Dataset
from .data.augment import flips_allowed
from .data.augment import make_evaluation_augment
from .engine.train import TrainSettings, train_network
from .errors import BudgetError, ConfigError
from .evaluation.evaluate import evaluate_container, train_settings
from .evaluation.protocols import Protocol, get_protocol
from .networks import seeded_network
from .registry import Registry, build_config
from .runtime import phase

POST_CONDENSE: Registry = Registry("post-condensation step")


@dataclass(frozen=True)
class PruningConfig:
    beta_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    aum_network: str = "convnet"
    # AUM averages each image's margin over the epochs of one training run on the generated set. 0: the run
    # is as long as the validation protocol's (its steps or epochs, batch size, learning rate, schedule,
    # momentum, weight decay; no CutMix, so that every image keeps its one label); > 0: this many epochs at
    # aum_batch_size and aum_learning_rate with a cosine schedule
    aum_epochs: int = 0
    aum_batch_size: int = 256
    aum_learning_rate: float = 0.01
    aum_augmentation: bool = True  # the protocol's augmentation while training the AUM network
    validation_protocol: str = ""  # protocol of the beta search; "": the run's own protocol
    validation_networks: int = 2  # networks per beta (the same seeds for every beta: a paired comparison)

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta_grid", tuple(float(b) for b in self.beta_grid))  # JSON gives lists
        if not self.beta_grid or any(not 0.0 <= b <= 1.0 for b in self.beta_grid):
            raise ConfigError(f"beta_grid needs values in [0, 1], got {list(self.beta_grid)}")
        if self.aum_epochs < 0 or self.validation_networks < 1:
            raise ConfigError("aum_epochs must be >= 0 (0: as long as the protocol trains) and validation_networks >= 1")


@dataclass
class BetaSelection:
    beta: float
    accuracies: dict[float, float] = field(default_factory=dict)  # validation accuracy (%) per beta


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, classes), (N,) -> (N,): logit of the label minus the largest other logit."""
    assigned = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return assigned - others


def aum_scores(container: Container, settings: TrainSettings, generator: torch.Generator,
               device: torch.device | str = "cpu", network: str = "convnet", augment=None) -> torch.Tensor:
    """AUM of every generated image, (total_generated,) in global-index order, on the CPU.

    One network trained by the engine's loop on the fixed generated set; ``on_epoch`` hands over the logits
    of the whole set after each epoch (un-augmented, evaluation mode)."""
    if container.random_per_epoch:
        raise ConfigError(f"AUM needs a fixed generated set; '{container.registry_name}' draws new images every epoch")
    device = torch.device(device)
    data = container.to(device).generate_all(None, mode="evaluate")  # same order every epoch
    total = torch.zeros(len(data.labels), dtype=torch.float64, device=device)
    epochs = []

    def record(_network, batch, logits):
        total.add_(margins(logits, batch.labels))
        epochs.append(1)

    model = seeded_network(network, container.spec, generator, device)
    train_network(model, lambda _generator: data, settings, generator, augment, on_epoch=record)
    return (total / max(len(epochs), 1)).float().cpu()


def double_end_keep(scores: torch.Tensor, per_class_total: int, keep_per_class: int, beta: float) -> torch.Tensor:
    """Global indices kept (classes * keep_per_class,), increasing. Per class, with k = per_class_total -
    keep_per_class: the floor(beta * k) lowest scores (hardest) and the k - floor(beta * k) highest
    (easiest) go; ties keep the lower index first."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if not 1 <= keep_per_class <= per_class_total or scores.numel() % per_class_total:
        raise ValueError(f"cannot keep {keep_per_class} of {per_class_total} per class from {scores.numel()} scores")
    removed = per_class_total - keep_per_class
    hardest = math.floor(beta * removed + 1e-9)  # 1e-9: 0.29 * 100 is 28.999... in floating point
    per_class = scores.reshape(-1, per_class_total)  # (classes, per_class_total)
    order = torch.argsort(per_class, dim=1, stable=True)  # ascending AUM: hardest first
    kept = order[:, hardest:hardest + keep_per_class]  # (classes, keep)
    offsets = torch.arange(per_class.shape[0], device=kept.device)[:, None] * per_class_total
    return (kept + offsets).sort(dim=1).values.flatten()


def budget_count(container: Container, ratio: float = 1.0) -> int:
    """The largest class-balanced instance count whose stored floats fit ``ratio`` x B."""
    count = container.instances_within_budget(ratio)
    if count < 1:
        raise BudgetError(f"not even one instance per class fits {ratio:g} x B: the shared parts of "
                          f"'{container.registry_name}' are over the budget")
    return min(count, container.generated_per_class())


def prune_to_budget(container: Container, scores: torch.Tensor, beta: float) -> Container:
    """Double-end pruning down to the largest class-balanced count within B (the container itself if it fits)."""
    count, per_class = budget_count(container), container.generated_per_class()
    if count == per_class:
        return container
    return container.prune(double_end_keep(scores, per_class, count, beta))


def select_beta(container: Container, dataset: Dataset, scores: torch.Tensor,
                grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0), protocol: Protocol | str = "cpu",
                seed: int = 0, device: torch.device | str = "cpu", progress: bool = False) -> BetaSelection:
    """The beta whose pruned container trains the most accurate networks on ``dataset.validation``
    (first in ``grid`` on ties). Betas that drop the same number of hardest images share one evaluation."""
    if len(dataset.validation) == 0:
        raise ConfigError("choosing beta needs a validation split: set validation_fraction > 0")
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    count, per_class = budget_count(container), container.generated_per_class()
    removed = per_class - count
    by_hardest: dict[int, float] = {}
    accuracies = {}
    for beta in grid:
        hardest = math.floor(beta * removed + 1e-9)
        if hardest not in by_hardest:
            pruned = prune_to_budget(container, scores, beta)
            with phase(f"beta {beta:g}: {hardest} hardest + {removed - hardest} easiest removed per class, "
                       f"{protocol.networks} validation network(s)", progress):
                summary = evaluate_container(pruned, dataset.validation, protocol, seed, protocol.architectures[:1],
                                             device)
            by_hardest[hardest] = next(iter(summary.values())).mean
            if progress:
                print(f"condense: beta {beta:g}: validation accuracy {by_hardest[hardest]:.2f}%", file=sys.stderr)
        accuracies[beta] = by_hardest[hardest]
    best = max(grid, key=lambda b: (accuracies[b], -grid.index(b)))
    return BetaSelection(best, accuracies)


@POST_CONDENSE.register("double_end_prune")
def hmn_after_condense(container: Container, dataset: Dataset, config, generator: torch.Generator,
                       device: torch.device | str = "cpu", settings: PruningConfig | None = None) -> Container:
    """Score by AUM, choose beta on the validation split, prune to B. ``config`` is the run's RunConfig
    (its seed, protocol, protocol settings and, where it has them, ``post_condense_settings``: fields of
    ``PruningConfig``); returns the pruned container, within B, with a ``pruning_record`` (beta, validation
    accuracies, counts) that its artifact's metadata keeps."""
    if settings is None:
        overrides = getattr(config, "post_condense_settings", None) or {}
        settings = build_config(PruningConfig, overrides, "post-condensation step 'double_end_prune'")
    before = container.generated_per_class()
    if budget_count(container) == before:
        container.check_budget(1.0)
        return container
    protocol = _validation_protocol(config, settings)
    progress = getattr(config, "progress", False)
    training = aum_training(settings, protocol)
    length = f"{training.steps} steps" if training.steps else f"{training.epochs} epochs"
    with phase(f"AUM of {container.total_generated()} generated images ({length} of training)", progress):
        scores = score_container(container, settings, protocol, generator, device)
    selection = select_beta(container, dataset, scores, settings.beta_grid, protocol, config.seed, device, progress)
    pruned = prune_to_budget(container, scores, selection.beta)
    pruned.check_budget(1.0)
    pruned.pruning_record = {
        "beta": selection.beta, "validation_accuracy": {str(b): a for b, a in selection.accuracies.items()},
        "instances_per_class_before": before, "instances_per_class_after": pruned.generated_per_class(),
        "validation_protocol": protocol.name, "validation_networks": protocol.networks,
        "aum_training": dataclasses.asdict(aum_training(settings, protocol)),
    }
    return pruned


hmn_after_condense.needs_instance_pruning = True  # run.py refuses containers without it before condensing


def score_container(container: Container, settings: PruningConfig, protocol: Protocol, generator: torch.Generator,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """AUM of every generated image with ``settings``' training (DSA as ``protocol`` augments, if enabled)."""
    flip = flips_allowed(protocol.flip_rule, container.spec.flip_allowed)
    augment = make_evaluation_augment(protocol.augmentation if settings.aum_augmentation else "none",
                                      protocol.augment_mode, flip, protocol.augment_strategy)
    return aum_scores(container, aum_training(settings, protocol), generator, device, settings.aum_network, augment)


def aum_training(settings: PruningConfig, protocol: Protocol) -> TrainSettings:
    """How long and how the AUM network trains: the protocol's training (``aum_epochs`` = 0) or fixed epochs."""
    if settings.aum_epochs == 0:
        return dataclasses.replace(train_settings(protocol), cutmix_probability=0.0)
    return TrainSettings(epochs=settings.aum_epochs, batch_size=settings.aum_batch_size,
                         learning_rate=settings.aum_learning_rate, schedule="cosine")


def _validation_protocol(config, settings: PruningConfig) -> Protocol:
    from .recipes import get_recipe

    name = (settings.validation_protocol or getattr(config, "protocol", None)
            or get_recipe(config.recipe, config.dataset, config.ipc).protocol)
    overrides = dict(getattr(config, "protocol_settings", {}) or {}) if not settings.validation_protocol else {}
    return get_protocol(name, **{**overrides, "networks": settings.validation_networks})
