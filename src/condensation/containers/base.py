"""The container interface: learnable storage that generates (images, labels) in network-input space.

Global image index = class * generated_per_class + i. Every parameter of the module counts towards the
storage budget; state that is kept but not counted (hard labels, preprocessing) lives outside parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..data.datasets import DataSpec
from ..data.preprocessing import Preprocessing
from ..distributed import ClassStreams, shared_stream, stream_of
from ..errors import BudgetError, ConfigError, NumericalError
from ..registry import Registry, build_config

CONTAINERS: Registry[Callable[..., "Container"]] = Registry("container")


@dataclass
class Batch:
    images: torch.Tensor  # (N, C, H, W), network-input space
    labels: torch.Tensor  # (N,) int64 hard labels


class Container(nn.Module):
    """Base class. Subclasses implement ``generated_per_class`` and ``_generate``."""

    config_class: type = object
    # True where evaluation must ask for a fresh draw every epoch (HaBa's random hallucinators)
    random_per_epoch: bool = False
    # True where single generated images can be removed (``prune``, ``instances_within_budget``): what
    # instance-level pruning after condensation needs (HMN)
    can_prune_instances: bool = False
    # True where ``query`` mixes classes in storage (label-mixture queries, docs/methods.md, Queries); and
    # ``linear_queries`` where a query is then exactly the same mixture of the classes' generated images
    supports_queries: bool = False
    linear_queries: bool = False

    def __init__(self, spec: DataSpec, images_per_class: int, preprocessing: Preprocessing, config):
        super().__init__()
        self.spec = spec
        self.images_per_class = images_per_class
        self.preprocessing = preprocessing  # not a submodule: stored with the artifact, not counted
        self.config = config

    # ------------------------------------------------------------------------------------ the interface
    def generated_per_class(self) -> int:
        raise NotImplementedError

    def _generate(self, indices: torch.Tensor, generator: torch.Generator | None, mode: str) -> torch.Tensor:
        """indices: (N,) global -> images (N, C, H, W) in network-input space."""
        raise NotImplementedError

    def initialize(self, real, generator: torch.Generator) -> None:
        """Start from real data (``real`` is an engine RealPool); the default keeps the random start."""

    @torch.no_grad()
    def after_iteration(self) -> None:
        """Called once per outer iteration after the optimizer steps (e.g. clamping pixels to [0, 1])."""

    def regularization(self, generator: torch.Generator) -> torch.Tensor | None:
        """An extra loss over every class, once per outer iteration (HaBa's adversarial contrastive term). The
        engine adds it to the iteration's one step when the objective steps all classes at once, else gives it
        a step of its own after the class steps."""
        return None

    def after_optimizer_steps(self, generator: torch.Generator) -> None:
        """Called once per outer iteration after the container's last optimizer step (HaBa's adversary takes
        its own step here)."""

    def training_state(self) -> dict:
        """State that is not stored in the artifact but must survive a resume (HaBa's adversary)."""
        return {}

    def load_training_state(self, state: dict) -> None:
        pass

    def prune(self, keep: torch.Tensor) -> "Container":
        raise NotImplementedError(f"{type(self).__name__} cannot remove single images")

    def per_class_parameters(self) -> list[torch.Tensor]:
        """Parameters that belong to one class each, class-major along dim 0 (rows [c*k, (c+1)*k) are class
        c's). The engine moves them only in their class's step (OptimizerConfig.isolate_classes)."""
        return []

    def parameter_groups(self, learning_rate: float) -> list[dict]:
        """Optimizer parameter groups; containers with parts that need other rates override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": learning_rate}]

    def construction(self) -> dict:
        """Everything needed to rebuild the same shapes: used by artifacts and checkpoints."""
        from ..registry import config_dict

        return {"config": config_dict(self.config), "images_per_class": self.images_per_class}

    # --------------------------------------------------------------------------------------- generation
    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def total_generated(self) -> int:
        return self.num_classes * self.generated_per_class()

    def labels_of(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.div(indices, self.generated_per_class(), rounding_mode="floor")

    def generate(self, indices: torch.Tensor, generator: torch.Generator | None = None, mode: str = "distill") -> Batch:
        """Images for the given global indices; ``mode`` is 'distill' or 'evaluate'."""
        device = self.device
        indices = indices.to(device)
        return Batch(self._generate(indices, generator, mode), self.labels_of(indices))

    def class_indices(self, class_index: int) -> torch.Tensor:
        per_class = self.generated_per_class()
        return torch.arange(class_index * per_class, (class_index + 1) * per_class)

    def generate_class(self, class_index: int, count: int | None, generator: torch.Generator) -> Batch:
        """Up to ``count`` images of one class (a random subset when the class has more)."""
        indices = self.class_indices(class_index)
        if count is not None and count < len(indices):
            indices = indices[torch.randperm(len(indices), generator=generator)[:count]]
        return self.generate(indices, generator)

    def generate_classes(self, classes: list[int], count: int | None, generator: torch.Generator | ClassStreams) -> Batch:
        """One generator call for several classes, so shared parts run once (concatenated in class order).
        ``generator`` may be ``ClassStreams``: class c's subset (and its generation, for containers random by
        design) then comes from c's own stream, so c's images do not depend on which classes come with it."""
        parts = []
        for c in classes:
            indices = self.class_indices(c)
            if count is not None and count < len(indices):
                indices = indices[torch.randperm(len(indices), generator=stream_of(generator, c))[:count]]
            parts.append(indices)
        return self.generate_parts(classes, parts, generator)

    def generate_parts(self, classes: list[int], parts: list[torch.Tensor], generator) -> Batch:
        """Images for each class's chosen ``parts`` of indices, in class order: one call, or one per class
        from its own stream where generation itself draws (``random_per_epoch``) under ``ClassStreams``."""
        if isinstance(generator, ClassStreams) and self.random_per_epoch:
            batches = [self.generate(p, generator[c]) for c, p in zip(classes, parts)]
            return Batch(torch.cat([b.images for b in batches]), torch.cat([b.labels for b in batches]))
        return self.generate(torch.cat(parts), shared_stream(generator))

    def distillation_order(self, generator: torch.Generator) -> torch.Tensor:
        """The global indices an objective that walks the set in mini-batches (MTT) draws from, in a random
        order: every generated image. Factorization narrows it to one image per basis, so that each batch
        goes through one hallucinator (the official distillation)."""
        return torch.randperm(self.total_generated(), generator=generator)

    @torch.no_grad()
    def generate_all(self, generator: torch.Generator | None = None, mode: str = "evaluate", batch_size: int = 512) -> Batch:
        """Every generated image in the fixed order (no graph)."""
        indices = torch.arange(self.total_generated())
        parts = [self.generate(chunk, generator, mode) for chunk in indices.split(batch_size)]
        return Batch(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))

    def evaluation_source(self):
        """A callable ``generator -> Batch`` giving one evaluation epoch's training set: the fixed generated
        set, computed once, or a fresh draw per epoch for containers random by design (HaBa)."""
        if self.random_per_epoch:
            return lambda generator: self.generate_all(generator, mode="evaluate")
        fixed = self.generate_all(None, mode="evaluate")
        return lambda generator: fixed

    # ------------------------------------------------------------------------------------------ queries
    def query(self, soft_labels: torch.Tensor) -> torch.Tensor:
        """Images for label mixtures (RTP's generalized queries; docs/methods.md, Queries).

        soft_labels: (Q, classes) finite, non-negative weights, at least one positive per row. Each row is
        normalized to sum 1 (``query_weights``), so ``[2, 2, 0]`` and ``[0.5, 0.5, 0]`` are the same query.
        Returns (Q, generated_per_class, C, H, W) in network-input space (``preprocessing.inverse`` gives
        pixels): image i of query q mixes, with q's weights, what each class stores for its image i, so a
        one-hot row gives that class's generated images in the artifact's fixed order. Where
        ``linear_queries`` holds, image i is also sum_c w_c * (image i of class c). The graph is kept when
        grad is on. A malformed ``soft_labels`` or a container without queries raises ConfigError."""
        if not self.supports_queries:
            raise ConfigError(f"container '{self.registry_name}' does not support queries; these containers do: "
                              f"{', '.join(query_containers())}")
        return self._query(self.query_weights(soft_labels).to(self.device))

    def query_weights(self, soft_labels: torch.Tensor) -> torch.Tensor:
        """The checked (Q, classes) weights ``query`` mixes with, each row normalized to sum 1 (float32)."""
        return normalized_soft_labels(soft_labels, self.num_classes)

    def _query(self, weights: torch.Tensor) -> torch.Tensor:
        """weights (Q, classes), rows summing to 1, on the container's device -> (Q, per_class, C, H, W)."""
        raise NotImplementedError(f"{type(self).__name__} sets supports_queries but does not implement _query")

    def mix_generated(self, weights: torch.Tensor) -> torch.Tensor:
        """The query of containers that store images (or decode each class alone): image i of query q is
        sum_c weights[q, c] * (image i of class c), over the generated set in its fixed order."""
        images = self.generate(torch.arange(self.total_generated()), None, "evaluate").images  # (classes*n, C, H, W)
        per_class = images.reshape(self.num_classes, -1)  # (classes, n*C*H*W)
        return (weights.to(per_class) @ per_class).view(len(weights), self.generated_per_class(), *images.shape[1:])

    # ------------------------------------------------------------------------------------------ storage
    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def stored_floats(self) -> int:
        """Every stored number (whatever its dtype) needed to regenerate the images."""
        return sum(p.numel() for p in self.parameters())

    def floats_per_part(self) -> dict[str, int]:
        """Stored floats by part (results.json's split of the budget); by parameter unless a container groups them."""
        return {name: p.numel() for name, p in self.named_parameters()}

    def stored_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    @property
    def over_budget_ratio(self) -> float:
        """> 1 for a container condensed over budget on purpose (HMN at (1 + p) x B before pruning)."""
        return 1.0

    @property
    def declared_budget_ratio(self) -> float:
        """> 1 for a container whose published sizing stores more than B for good and says so (HaBa's paper
        sizing): a run allows it and states the ratio beside every number (``budget_statement``)."""
        return 1.0

    def budget_statement(self) -> str | None:
        """A plain sentence for tables and reports when the container stores more than B on purpose."""
        return None

    @property
    def budget_floats(self) -> int:
        return self.spec.budget_floats(self.images_per_class)

    def check_finite(self) -> None:
        """Refuse NaN or infinite stored values before they are saved as an artifact."""
        bad = [name for name, p in self.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise NumericalError(f"the condensed container holds NaN or infinite values in {', '.join(bad)}; "
                                 "nothing was saved: lower the learning rate (--lr) and start again")

    def check_budget(self, allowed_ratio: float = 1.0) -> None:
        """Refuse a container above ``allowed_ratio`` x B (over-budget states must be explicit)."""
        limit = int(allowed_ratio * self.budget_floats)
        if self.stored_floats() > limit:
            raise BudgetError(
                f"container '{self.registry_name}' stores {self.stored_floats():,} floats, over its budget of "
                f"{limit:,} ({allowed_ratio:g} x B, B = {self.budget_floats:,} for IPC {self.images_per_class})"
            )

    registry_name = "container"


def normalized_soft_labels(soft_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(Q, classes) weights -> float32 rows that sum to 1. Refuses (ConfigError, naming the rows) a wrong
    shape, NaN or infinite weights, negative weights and rows without a positive weight."""
    soft_labels = torch.as_tensor(soft_labels)
    if soft_labels.ndim != 2 or soft_labels.shape[0] < 1 or soft_labels.shape[1] != num_classes:
        raise ConfigError(f"soft labels must have shape (Q, {num_classes}): one row of {num_classes} class weights "
                          f"per query, Q >= 1; got shape {tuple(soft_labels.shape)}")
    if soft_labels.is_complex():
        raise ConfigError("soft labels must be real numbers, got a complex tensor")
    weights = soft_labels.detach().to(torch.float64)  # normalized in double: one-hot rows stay exact, mixes close

    def rows(mask: torch.Tensor) -> str:
        return ", ".join(map(str, torch.nonzero(mask).flatten().tolist()))

    bad = ~torch.isfinite(weights).all(dim=1)
    if bool(bad.any()):
        raise ConfigError(f"soft labels hold NaN or infinite weights in row(s) {rows(bad)}")
    bad = (weights < 0).any(dim=1)
    if bool(bad.any()):
        raise ConfigError(f"soft labels hold negative weights in row(s) {rows(bad)}: a query mixes classes with "
                          "weights >= 0, it cannot subtract one")
    totals = weights.sum(dim=1, keepdim=True)  # (Q, 1)
    bad = totals.squeeze(1) == 0
    if bool(bad.any()):
        raise ConfigError(f"soft labels row(s) {rows(bad)} are all zero: a query needs a positive weight for at "
                          "least one class")
    return (weights / totals).to(torch.float32)


def query_containers() -> list[str]:
    """Registered containers that answer ``query``, each marked linear or not (docs/methods.md, Queries)."""
    return [f"{name} ({'linear' if CONTAINERS.get(name).linear_queries else 'not linear'})"
            for name in CONTAINERS.names() if CONTAINERS.get(name).supports_queries]


def create_container(name: str, spec: DataSpec, images_per_class: int, preprocessing: Preprocessing, **overrides) -> Container:
    """Build a container by name; overrides are fields of its config dataclass (unknown keys raise)."""
    from ..errors import ConfigError

    if images_per_class < 1:
        raise ConfigError(f"ipc must be >= 1, got {images_per_class}")
    cls = CONTAINERS.get(name)
    config = build_config(cls.config_class, overrides, f"container '{name}'")
    container = cls(spec, images_per_class, preprocessing, config)
    container.registry_name = name
    return container
