"""Back-propagation through time (RTP's objective, Deng & Russakovsky 2022).
docs/methods.md, Back-propagation through time (BPTT).

Each outer iteration trains a fresh network for T inner SGD-momentum steps on generated batches and scores
the result with the cross-entropy on real images; the gradient reaches the container through all T steps.
With v_0 = 0 (torch's SGD: the first buffer is the gradient itself)::

    g_t = dCE(theta_t; X_t)/dtheta + wd theta_t,   v_{t+1} = mu v_t + g_t,   theta_{t+1} = theta_t - lr v_{t+1}

``memory='unrolled'`` keeps the whole graph. ``memory='recompute'`` (Maclaurin et al. 2015, with stored
snapshots instead of exact reversal) keeps the T flat parameter vectors (T x P floats, no activations), each
step's generator state, and then goes backwards rebuilding one step's graph at a time. With adjoints
(A_theta, A_v) of (theta_{t+1}, v_{t+1}) and A = A_v - lr A_theta, the adjoint of v_{t+1}::

    A_theta <- A_theta + H_t^T A  (H_t = dg_t/dtheta_t, a Hessian-vector product),   A_v <- mu A,
    dL/dX_t = (dg_t/dX_t)^T A                (accumulated into the container's .grad).

v_t's value is not needed going backwards: the step is linear in it.

``truncate = K`` (truncated BPTT, the baseline RTP argues against): the gradient reaches only the last K
inner steps' images; the first T - K steps run as constants (in both memory modes; 0: all T steps).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import OBJECTIVES, Objective
from .trajectory import FunctionalNetwork, parameter_dtype, trainable

MEMORY_MODES = ("unrolled", "recompute")


@dataclass(frozen=True)
class BackpropagationThroughTimeConfig:
    """Defaults: RTP (docs/methods.md, Recipe `rtp`): T = 150, inner SGD lr 0.01 momentum 0.9, 32 generated
    and 64 real images per class. Inner augmentation is off (the official README command passes none)."""

    network: str = "convnet"
    network_settings: dict = field(default_factory=dict)
    inner_steps: int = 150  # T
    inner_learning_rate: float = 0.01
    inner_momentum: float = 0.9
    inner_weight_decay: float = 0.0
    synthetic_per_class: int = 32  # per inner step (all of a class's images when it has fewer)
    real_per_class: int = 64  # for the outer loss
    dsa: bool = False  # DSA single mode on each inner batch
    flip_rule: str = "always"
    memory: str = "recompute"  # "recompute" (one step's graph at a time) or "unrolled" (the whole graph)
    truncate: int = 0  # K > 0: back-propagate through the last K inner steps only (truncated BPTT); 0: all T


@OBJECTIVES.register("bptt")
class BackpropagationThroughTime(Objective):
    config_class = BackpropagationThroughTimeConfig
    per_class = False

    def __init__(self, spec, config: BackpropagationThroughTimeConfig, device="cpu"):
        super().__init__(spec, config, device)
        if config.memory not in MEMORY_MODES:
            raise ConfigError(f"bptt memory must be one of: {', '.join(MEMORY_MODES)}; got '{config.memory}'")
        if config.inner_steps < 1 or config.synthetic_per_class < 1 or config.real_per_class < 1:
            raise ConfigError("bptt needs inner_steps, synthetic_per_class and real_per_class >= 1")
        if not 0 <= config.truncate <= config.inner_steps:
            raise ConfigError(f"bptt truncate must be in [0, inner_steps = {config.inner_steps}] (0: no truncation), "
                              f"got {config.truncate}")
        if config.inner_learning_rate <= 0 or not 0 <= config.inner_momentum < 1:
            raise ConfigError("bptt needs inner_learning_rate > 0 and 0 <= inner_momentum < 1")
        self.augment = self.make_augment(config.dsa, "single")
        self.functional: FunctionalNetwork | None = None

    def begin_iteration(self, iteration, generator):
        network = self.fresh_network(generator, self.config.network, **self.config.network_settings)
        self.functional = FunctionalNetwork(network)

    # ---------------------------------------------------------------------------------------- pieces
    def _batch(self, container, classes: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``synthetic_per_class`` generated images of each class (random subset), augmented."""
        count, parts = self.config.synthetic_per_class, []
        for c in classes:
            indices = container.class_indices(c)
            if count < len(indices):
                indices = indices[torch.randperm(len(indices), generator=generator)[:count]]
            parts.append(indices)
        batch = container.generate(torch.cat(parts), generator)
        images = batch.images if self.augment is None else self.augment(batch.images, generator)
        return images, batch.labels

    def _gradient(self, theta, images, labels, create_graph: bool) -> torch.Tensor:
        gradient = self.functional.gradient(theta, images, labels, create_graph)
        wd = self.config.inner_weight_decay
        return gradient + wd * theta if wd else gradient

    def _outer(self, theta, real, classes, generator) -> torch.Tensor:
        images, labels = real.sample_classes(classes, self.config.real_per_class, generator)
        return F.cross_entropy(self.functional(theta, images.to(theta.dtype)), labels)

    def _start(self, container) -> torch.Tensor:
        return self.functional.flatten().to(self.device, parameter_dtype(container))  # (P,)

    # ----------------------------------------------------------------------------------------- hooks
    def loss(self, container, real, classes, generator):
        """The whole unrolled graph (the reference the recompute sweep must equal)."""
        lr, mu = self.config.inner_learning_rate, self.config.inner_momentum
        theta = self._start(container).requires_grad_(True)
        velocity = torch.zeros_like(theta)
        first = self._first_differentiated_step()
        for t in range(self.config.inner_steps):
            if t == first and first > 0:  # truncation: what came before is a constant start
                theta, velocity = theta.detach().requires_grad_(True), velocity.detach()
            images, labels = self._batch(container, classes, generator)
            if t < first:
                images = images.detach()
            velocity = mu * velocity + self._gradient(theta, images, labels, create_graph=t >= first)
            theta = theta - lr * velocity
        return self._outer(theta, real, classes, generator)

    def _first_differentiated_step(self) -> int:
        """The first inner step whose images get a gradient: 0, or T - K under truncation."""
        return self.config.inner_steps - self.config.truncate if self.config.truncate else 0

    def backward(self, container, real, classes, generator):
        if self.config.memory == "unrolled":
            return super().backward(container, real, classes, generator)
        lr, mu = self.config.inner_learning_rate, self.config.inner_momentum

        # forward without graph: keep theta_t and the generator state that regenerates step t's batch
        snapshots, states = [], []
        theta = self._start(container)
        velocity = torch.zeros_like(theta)
        for _ in range(self.config.inner_steps):
            states.append(generator.get_state())
            snapshots.append(theta)
            with torch.no_grad():
                images, labels = self._batch(container, classes, generator)
            leaf = theta.detach().requires_grad_(True)
            velocity = mu * velocity + self._gradient(leaf, images, labels, create_graph=False).detach()
            theta = theta - lr * velocity
        final = theta.detach().requires_grad_(True)
        outer = self._outer(final, real, classes, generator)
        adjoint_theta = torch.autograd.grad(outer, final)[0]  # (P,)
        adjoint_velocity = torch.zeros_like(adjoint_theta)

        # backward sweep: one step's graph at a time
        parameters, replay = trainable(container), torch.Generator()
        first = self._first_differentiated_step()
        for t in reversed(range(first, self.config.inner_steps)):
            total = adjoint_velocity - lr * adjoint_theta  # adjoint of v_{t+1}
            replay.set_state(states[t])
            images, labels = self._batch(container, classes, replay)
            leaf = snapshots[t].detach().requires_grad_(True)
            gradient = self._gradient(leaf, images, labels, create_graph=True)
            inputs = parameters + ([leaf] if t > first else [])
            torch.autograd.backward((gradient * total).sum(), inputs=inputs)
            if t > first:
                adjoint_theta = adjoint_theta + leaf.grad
            adjoint_velocity = mu * total
            snapshots[t] = None
        return outer.detach()
