"""Trajectory matching (MTT, Cazenavette et al. 2022; HaBa's objective).
docs/methods.md, Trajectory matching (MTT).

GeorgeCazenavette/mtt-distillation distill.py was read, not copied. Each iteration: pick an expert and a
start epoch t ~ U[0, T+); a student starts at the expert's parameters theta*_t and takes N SGD steps on
generated batches with a learned step size alpha (``syn_lr``); the loss is

    ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2.

Three ways to get the gradient (``memory``):

``'unrolled'`` keeps the graph of all N steps (MTT). ``'recompute'`` gives the same gradient with the graph
of one step at a time and N parameter snapshots (TESLA's idea, Cui et al. 2023, made exact): with
theta_{i+1} = theta_i - alpha g_i(theta_i, X_i) and a_i = dL/dtheta_i,

    a_N = 2 (theta_N - theta*) / D,   a_i = a_{i+1} - alpha H_i a_{i+1}   (H_i = dg_i/dtheta_i, an HVP)
    dL/dX_i = -alpha (dg_i/dX_i)^T a_{i+1},   dL/dalpha = -sum_i g_i . a_{i+1}.

A forward pass without graph stores the N flat parameter vectors (N x P floats, no activations) and each
step's batch indices and generator state; a backward sweep then rebuilds one step's graph at a time, from
the same images, and applies the three formulas above with one double-backward call per step. Measured on
Fashion-MNIST (ConvNet-3, P = 317,706, IPC 1, N = 20, one CPU core): 'unrolled' peaks 290-390 MiB above a
one-step run, 'recompute' at no measurable extra (its 20 snapshots are 25 MiB); the times were within the noise
of a loaded machine (6-9 s per iteration each; 'recompute' does one extra forward and first-order backward).

``'tesla'`` is TESLA's gradient (justincui03/tesla distill.py; Cui et al. 2023, section 3): writing
theta_N = theta_0 - alpha sum_i g_i, it takes dL/dX_i = -alpha (dg_i/dX_i)^T dL/dtheta_N and
dL/dalpha = -sum_i g_i . dL/dtheta_N, i.e. the exact gradient of L(theta_0 - alpha sum_i g_i(sg(theta_i), X_i))
with the student's path held fixed (sg: stop-gradient). It drops the terms through H_i = dg_i/dtheta_i, so it
equals the unrolled gradient only for N = 1. Memory is constant in N: one forward pass without graph gives
theta_N (nothing kept but each step's generator state), a second pass replays the same steps and
back-propagates each step's graph alone. Two forwards and one first-order backward per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..engine.experts import ExpertBuffer, build_network, parameter_layout
from ..errors import ConfigError
from .base import OBJECTIVES, Objective


class FunctionalNetwork:
    """A network evaluated at a flat parameter vector theta (P,) instead of its own parameters."""

    def __init__(self, network: nn.Module):
        for p in network.parameters():
            p.requires_grad_(False)  # only theta carries gradients
        self.network = network
        self.names = [name for name, _ in network.named_parameters()]
        self.shapes = [p.shape for p in network.parameters()]
        self.sizes = [p.numel() for p in network.parameters()]
        self.buffers = dict(network.named_buffers())

    @property
    def parameter_count(self) -> int:
        return sum(self.sizes)

    def flatten(self) -> torch.Tensor:
        """(P,) the module's own parameters (a fresh network's initialization)."""
        return torch.cat([p.detach().reshape(-1) for p in self.network.parameters()])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: part.view(shape) for name, part, shape in zip(self.names, theta.split(self.sizes), self.shapes)}

    def __call__(self, theta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """theta (P,), inputs (N, C, H, W) -> logits (N, classes)."""
        return functional_call(self.network, {**self.unflatten(theta), **self.buffers}, (inputs,))

    def gradient(self, theta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, create_graph: bool) -> torch.Tensor:
        """(P,) gradient of the mean cross-entropy at theta (which must require grad)."""
        loss = F.cross_entropy(self(theta, images), labels)
        return torch.autograd.grad(loss, theta, create_graph=create_graph)[0]


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The dtype the container computes in (float32 unless a test made it float64)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def trainable(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.requires_grad]


MEMORY_MODES = ("unrolled", "recompute", "tesla")


@dataclass(frozen=True)
class TrajectoryMatchingConfig:
    """Defaults: MTT's CIFAR-10 IPC 1 settings. The network is the experts' (from their manifest)."""

    experts: str = ""  # a directory written by `condense experts` (required)
    syn_steps: int = 50  # N student steps per iteration
    expert_epochs: int = 2  # M: the target is theta*_{t+M}
    max_start_epoch: int = 2  # T+: t ~ U[0, T+)
    batch_syn: int = 0  # images per student step; 0: the container's whole distillation_order (HaBa: every basis)
    syn_lr: float = 0.01  # initial learned step size alpha (MTT's lr_teacher)
    lr_lr: float = 1e-7  # learning rate of alpha
    lr_momentum: float = 0.5  # momentum of alpha's SGD (MTT 0.5, HaBa 0.9)
    min_syn_lr: float = 0.001  # alpha is clamped to >= this after every iteration (HaBa's clip)
    dsa: bool = True  # DSA, single mode, a fresh draw per step and per image (not siamese)
    flip_rule: str = "always"  # MTT distill.py: the full DSA string for every dataset
    # "unrolled" (MTT), "recompute" (one step's graph at a time + N snapshots, same gradient), "tesla" (TESLA's
    # first-order gradient, memory constant in N)
    memory: str = "unrolled"


@dataclass
class Episode:
    """One iteration's draw: start and target parameters and each student step's indices."""

    start: torch.Tensor  # (P,) theta*_t
    target: torch.Tensor  # (P,) theta*_{t+M}
    steps: list[torch.Tensor]  # N index tensors, each (batch,)


def matching_loss(theta: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||theta - target||^2 / ||start - target||^2 (MTT's division by P cancels)."""
    return (theta - target).pow(2).sum() / (start - target).pow(2).sum()


@OBJECTIVES.register("mtt")
class TrajectoryMatching(Objective):
    config_class = TrajectoryMatchingConfig
    per_class = False

    def __init__(self, spec, config: TrajectoryMatchingConfig, device="cpu"):
        super().__init__(spec, config, device)
        _validate(config)
        self.buffer = ExpertBuffer(config.experts)  # reads the manifest only; trajectories are read lazily
        self._check_data_shape()
        name, settings = self.buffer.network
        network = build_network(name, spec, settings)  # its weights are never used: theta replaces them
        self._check_experts(network)
        self.functional = FunctionalNetwork(network.to(self.device))
        self.syn_lr = nn.Parameter(torch.tensor(float(config.syn_lr), device=self.device))
        self.augment = self.make_augment(config.dsa, "single")
        self._preprocessing_checked = False

    # ---------------------------------------------------------------------------------------- checks
    def _check_data_shape(self) -> None:
        spec, stored = self.spec, self.buffer.manifest["spec"]
        shape = {"channels": spec.channels, "height": spec.height, "width": spec.width, "num_classes": spec.num_classes}
        if stored != shape:
            raise ConfigError(f"experts in '{self.config.experts}' were trained on data of shape {stored}, "
                              f"this run has {shape}")

    def _check_experts(self, network: nn.Module) -> None:
        manifest, config = self.buffer.manifest, self.config
        name, settings = self.buffer.network
        if parameter_layout(network) != manifest["parameters"]:
            raise ConfigError(f"the parameters of network '{name}' {settings} do not match those stored in "
                              f"'{config.experts}' (different library version?)")
        last_needed = config.max_start_epoch - 1 + config.expert_epochs
        if last_needed > self.buffer.epochs:
            raise ConfigError(f"max_start_epoch {config.max_start_epoch} + expert_epochs {config.expert_epochs} needs "
                              f"experts trained {last_needed} epochs; '{config.experts}' has {self.buffer.epochs}")

    def _check_preprocessing(self, container) -> None:
        """Experts and container must see the same network-input space (kind, mean, std)."""
        if self._preprocessing_checked:
            return
        stored = self.buffer.manifest["preprocessing"]
        preprocessing = getattr(container, "preprocessing", None)
        if preprocessing is not None:
            # ZCA of raw pixels and of normalized ones (buffers from before the order was fixed) differ
            same_zca_input = preprocessing.kind != "zca" or preprocessing.zca_input == stored.get("zca_input", "normalized")
            same = preprocessing.kind == stored["kind"] and same_zca_input and all(
                torch.allclose(preprocessing.tensors[key].double().cpu(), torch.tensor(stored[key], dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)
                for key in ("mean", "std"))
            if not same:
                raise ConfigError(f"experts in '{self.config.experts}' were trained with '{stored['kind']}' preprocessing "
                                  f"fitted on {self.buffer.manifest['dataset']}; this run uses '{preprocessing.kind}' "
                                  "or other data: train experts with the run's preprocessing and dataset")
        self._preprocessing_checked = True

    # ---------------------------------------------------------------------------------------- pieces
    def _episode(self, container, generator: torch.Generator) -> Episode:
        config = self.config
        expert = int(torch.randint(self.buffer.count, (1,), generator=generator))
        start_epoch = int(torch.randint(config.max_start_epoch, (1,), generator=generator))
        rows = self.buffer.rows(expert, [start_epoch, start_epoch + config.expert_epochs])
        rows = rows.to(self.device, parameter_dtype(container))  # (2, P)
        steps: list[torch.Tensor] = []
        while len(steps) < config.syn_steps:  # MTT: a fresh permutation whenever the chunks run out
            order = container.distillation_order(generator)
            steps += list(order.split(config.batch_syn or len(order)))
        return Episode(rows[0], rows[1], steps[:config.syn_steps])

    def _batch(self, container, indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        batch = container.generate(indices, generator)
        images = batch.images if self.augment is None else self.augment(batch.images, generator)
        return images, batch.labels

    # ----------------------------------------------------------------------------------------- hooks
    def loss(self, container, real, classes, generator):
        """The unrolled loss (MTT): the graph of all N steps is kept."""
        self._check_preprocessing(container)
        episode = self._episode(container, generator)
        alpha = self.syn_lr.to(episode.start.dtype)
        theta = episode.start.clone().requires_grad_(True)
        for indices in episode.steps:
            images, labels = self._batch(container, indices, generator)
            theta = theta - alpha * self.functional.gradient(theta, images, labels, create_graph=True)
        return matching_loss(theta, episode.start, episode.target)

    def backward(self, container, real, classes, generator):
        if self.config.memory == "unrolled":
            return super().backward(container, real, classes, generator)
        if self.config.memory == "tesla":
            return self._backward_tesla(container, generator)
        self._check_preprocessing(container)
        episode = self._episode(container, generator)
        alpha = float(self.syn_lr.detach())

        # forward: no graph; keep theta_i and what regenerates step i's images exactly
        snapshots, states = [], []
        theta = episode.start
        for indices in episode.steps:
            states.append(generator.get_state())
            snapshots.append(theta)
            with torch.no_grad():
                images, labels = self._batch(container, indices, generator)
            leaf = theta.detach().requires_grad_(True)
            theta = theta - alpha * self.functional.gradient(leaf, images, labels, create_graph=False)
        loss = matching_loss(theta, episode.start, episode.target)
        adjoint = 2 * (theta - episode.target) / (episode.start - episode.target).pow(2).sum()  # (P,) dL/dtheta_N

        # backward sweep: one step's graph at a time
        parameters, replay = trainable(container), torch.Generator()
        for i in reversed(range(len(episode.steps))):
            replay.set_state(states[i])
            images, labels = self._batch(container, episode.steps[i], replay)
            leaf = snapshots[i].detach().requires_grad_(True)
            gradient = self.functional.gradient(leaf, images, labels, create_graph=True)
            step = -(self.syn_lr.to(leaf.dtype) * (gradient * adjoint).sum())  # a_{i+1} . (theta_{i+1} - theta_i)
            inputs = parameters + [self.syn_lr] + ([leaf] if i > 0 else [])
            torch.autograd.backward(step, inputs=inputs)
            if i > 0:
                adjoint = adjoint + leaf.grad  # a_i = a_{i+1} - alpha H_i a_{i+1}
            snapshots[i] = None
        return loss.detach()

    def _backward_tesla(self, container, generator):
        """TESLA's gradient with memory constant in N (see the module docstring)."""
        self._check_preprocessing(container)
        episode = self._episode(container, generator)
        alpha = float(self.syn_lr.detach())
        states, theta, summed = [], episode.start, torch.zeros_like(episode.start)
        for indices in episode.steps:  # pass 1: theta_N, keeping only each step's generator state
            states.append(generator.get_state())
            with torch.no_grad():
                images, labels = self._batch(container, indices, generator)
            gradient = self.functional.gradient(theta.detach().requires_grad_(True), images, labels, create_graph=False)
            summed += gradient
            theta = theta - alpha * gradient
        loss = matching_loss(theta, episode.start, episode.target)
        adjoint = 2 * (theta - episode.target) / (episode.start - episode.target).pow(2).sum()  # dL/dtheta_N
        parameters, replay, theta = trainable(container), torch.Generator(), episode.start
        for i, indices in enumerate(episode.steps):  # pass 2: the same steps, one graph at a time
            replay.set_state(states[i])
            images, labels = self._batch(container, indices, replay)
            leaf = theta.detach().requires_grad_(True)
            gradient = self.functional.gradient(leaf, images, labels, create_graph=True)
            torch.autograd.backward(-alpha * (gradient * adjoint).sum(), inputs=parameters)
            theta = theta - alpha * gradient.detach()
        step_size_gradient = -(summed * adjoint).sum()
        self.syn_lr.grad = step_size_gradient.to(self.syn_lr.dtype) if self.syn_lr.grad is None else \
            self.syn_lr.grad + step_size_gradient.to(self.syn_lr.dtype)
        return loss.detach()

    @torch.no_grad()
    def end_iteration(self, container, real, generator):
        self.syn_lr.clamp_(min=self.config.min_syn_lr)

    def extra_parameter_groups(self):
        return [{"params": [self.syn_lr], "lr": self.config.lr_lr, "momentum": self.config.lr_momentum}]

    def artifact_tensors(self):
        return {"learned_learning_rate": self.syn_lr.detach().cpu()}

    def state_dict(self):
        return {"syn_lr": self.syn_lr.detach().cpu()}

    def load_state_dict(self, state):
        if "syn_lr" in state:
            with torch.no_grad():
                self.syn_lr.copy_(state["syn_lr"])  # in place: the optimizer keeps its reference


def _validate(config: TrajectoryMatchingConfig) -> None:
    if not config.experts:
        raise ConfigError("objective 'mtt' needs experts: a directory written by `condense experts` "
                          "(e.g. --objective-set experts=runs/experts)")
    if config.memory == "constant":
        raise ConfigError("mtt memory 'constant' was renamed 'recompute' (it keeps N parameter snapshots); "
                          "'tesla' is the mode whose memory does not grow with N")
    if config.memory not in MEMORY_MODES:
        raise ConfigError(f"mtt memory must be one of: {', '.join(MEMORY_MODES)}; got '{config.memory}'")
    for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
        if getattr(config, name) < 1:
            raise ConfigError(f"mtt {name} must be >= 1, got {getattr(config, name)}")
    if config.batch_syn < 0 or config.syn_lr <= 0 or config.lr_lr < 0:
        raise ConfigError("mtt needs batch_syn >= 0, syn_lr > 0 and lr_lr >= 0")


