"""The objective interface: hooks around the engine's one condensation loop (engine/condense.py).

The engine calls, per outer iteration::

    objective.begin_iteration(iteration, generator)        # network schedule
    for classes in objective.class_groups(num_classes):    # per class, or one group of all classes
        optimizer.zero_grad()
        loss = objective.backward(container, real, classes, generator)   # sets .grad
        optimizer.step()
    container.after_iteration()
    objective.end_iteration(container, real, generator)    # e.g. train the network

An objective owns its network(s) and their schedule; the engine owns the loop and the optimizer steps.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..data.augment import DSA, DSAConfig, flips_allowed
from ..data.datasets import DataSpec
from ..networks import seeded_network
from ..registry import Registry, build_config
from ..runtime import check_precision

OBJECTIVES: Registry[type] = Registry("objective")


class Objective:
    config_class: type = object
    per_class: bool = True  # True: one optimizer step per class group; False: one group of all classes
    # True: the loss is a sum of per-class terms, each drawing only from its class's stream (the engine passes
    # distributed.ClassStreams as the generator), so ranks can compute disjoint blocks of classes
    decomposes_over_classes: bool = False
    # "bf16": forwards that need no gradient w.r.t. the container (real images' features, real gradients)
    # run under bfloat16 autocast; everything the container's gradient flows through stays float32
    precision: str = "fp32"

    def __init__(self, spec: DataSpec, config, device: torch.device | str = "cpu"):
        self.spec = spec
        self.config = config
        self.device = torch.device(device)

    # ----------------------------------------------------------------------------------------- hooks
    def class_groups(self, num_classes: int) -> list[list[int]]:
        return [[c] for c in range(num_classes)] if self.per_class else [list(range(num_classes))]

    def begin_iteration(self, iteration: int, generator: torch.Generator) -> None:
        pass

    def loss(self, container, real, classes: list[int], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, container, real, classes: list[int], generator: torch.Generator) -> float:
        """Set gradients on the container (and extra parameters); return the loss value as a detached 0-dim
        tensor (the engine reads it once per iteration: one device sync, not one per class group)."""
        loss = self.loss(container, real, classes, generator)
        loss.backward()
        return loss.detach()

    def end_iteration(self, container, real, generator: torch.Generator) -> None:
        pass

    def extra_parameter_groups(self) -> list[dict]:
        """Learnable parameters beyond the container (e.g. MTT's step size), as optimizer groups."""
        return []

    def artifact_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors saved with the artifact but not counted (e.g. MTT's learned step size)."""
        return {}

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit (networks, their optimizers)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # -------------------------------------------------------------------------------------- helpers
    def fresh_network(self, generator: torch.Generator, name: str = "convnet", **overrides) -> nn.Module:
        """A randomly initialized network whose weights come from the run generator."""
        return seeded_network(name, self.spec, generator, self.device, **overrides)

    def make_augment(self, dsa: bool, mode: str = "single", strategy: str | None = None) -> DSA | None:
        if not dsa:
            return None
        config = DSAConfig(mode=mode) if strategy is None else DSAConfig(mode=mode, strategy=strategy)
        return DSA(config, flip_allowed=flips_allowed(getattr(self.config, "flip_rule", "dataset"), self.spec.flip_allowed))


def create_objective(name: str, spec: DataSpec, device="cpu", precision: str = "fp32", **overrides) -> Objective:
    cls = OBJECTIVES.get(name)
    config = build_config(cls.config_class, overrides, f"objective '{name}'")
    objective = cls(spec, config, device)
    objective.registry_name = name
    objective.precision = check_precision(precision)
    return objective


def freeze(network: nn.Module) -> nn.Module:
    """Random feature extractors (DM, ECHO) need no parameter gradients: the graph then only reaches images."""
    for p in network.parameters():
        p.requires_grad_(False)
    return network


ObjectiveFactory = Callable[..., Objective]
