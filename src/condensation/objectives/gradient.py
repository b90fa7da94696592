"""Gradient matching: DC and DSA (Zhao et al. 2021, Zhao & Bilen 2021) and IDC's batch-based variant (Kim et
al. 2022; the loss HMN uses). docs/methods.md, Gradient matching (DC, DSA) and Batch gradient
matching (IDC). Read, not copied: VICO-UoE/DatasetCondensation ``main.py`` and
``utils.py`` (``match_loss``, ``distance_wb``, ``get_loops``); snu-mllab/Efficient-Dataset-Condensation
``condense.py`` (``condense``, ``matchloss``, ``dist``), ``train.py`` (``train_epoch``), ``misc/reproduce.py``.

Per class c: the cross-entropy gradient w.r.t. the network weights of a real batch (computed without keeping a
graph) is compared with that of the class's generated images (graph kept, so the distance differentiates back
to the images and through them to any container).

How engine iterations map to the papers' loops
----------------------------------------------
The engine steps the container's optimizer once per class group per iteration, so **one engine iteration is
one synthetic update step** of the paper. The objective counts the iterations taken on its current network
(``steps_on_network``), builds a fresh network in ``begin_iteration`` when it has none, and in
``end_iteration`` either drops the network (its lifetime is over: the next iteration starts a fresh one) or
trains it before the next step.

* DC / DSA: lifetime = ``outer_loop`` engine iterations (one DC "iteration"); after every step but the last
  the network trains ``inner_loop`` epochs on a detached copy of the generated set. ``--iterations N`` runs
  ``N / outer_loop`` DC iterations: DC's 1000 iterations are 1000 engine iterations at IPC 1, 10,000 at IPC 10
  and 50,000 at IPC 50.
* IDC: lifetime = ``renew_every`` = 100 engine iterations (IDC's ``inner_loop`` with ``fix_iter`` = 1: one
  fresh network per IDC outer iteration); each engine iteration is one sweep of per-class steps followed by one
  epoch on ``real_training_images`` real images with CutMix. IDC's 2000 outer iterations are 200,000 engine
  iterations. The training epoch right before a renewal is skipped (IDC runs it, then discards the network).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..containers.base import Batch
from ..data.augment import DSA, DSAConfig, siamese
from ..engine.train import TrainSettings, make_network_optimizer, train_network
from ..distributed import shared_stream, stream_of
from ..errors import ConfigError
from ..networks import batch_norm_layers
from ..runtime import autocast
from .base import OBJECTIVES, Objective

Gradients = Sequence[torch.Tensor]
Distance = Callable[[Gradients, Gradients], torch.Tensor]

# DC's get_loops: IPC -> (outer_loop, inner_loop)
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def dc_loops(images_per_class: int) -> tuple[int, int]:
    """DC's (outer_loop, inner_loop) for an IPC; an IPC DC did not list takes the nearest listed IPC's rule
    (ties go to the smaller IPC): 2-5 -> IPC 1's (1, 1), 6-15 -> IPC 10's, ..., above 50 -> IPC 50's."""
    nearest = min(DC_LOOPS, key=lambda listed: (abs(listed - images_per_class), listed))
    return DC_LOOPS[nearest]


# ------------------------------------------------------------------------------------------- distances
def layer_cosine_distance(real_gradient: torch.Tensor, synthetic_gradient: torch.Tensor) -> torch.Tensor:
    """DC's ``distance_wb``: sum over output units of 1 - cos. Conv (out, in, k, k) -> (out, in*k*k), linear
    (out, in) as is; 1-D parameters (biases, norm affine) contribute 0."""
    if real_gradient.ndim == 1:
        return real_gradient.new_zeros(())
    real = real_gradient.reshape(real_gradient.shape[0], -1)  # (out, fan_in)
    synthetic = synthetic_gradient.reshape(synthetic_gradient.shape[0], -1)
    cosine = (real * synthetic).sum(1) / (real.norm(dim=1) * synthetic.norm(dim=1) + 1e-6)  # (out,)
    return (1 - cosine).sum()


def cosine_distance(real_gradients: Gradients, synthetic_gradients: Gradients) -> torch.Tensor:
    """DC's 'ours' distance, summed over layers."""
    return sum(layer_cosine_distance(r, s) for r, s in zip(real_gradients, synthetic_gradients))


def squared_distance(real_gradients: Gradients, synthetic_gradients: Gradients) -> torch.Tensor:
    """IDC's 'mse': sum of squared differences over every matched tensor."""
    return sum((r - s).pow(2).sum() for r, s in zip(real_gradients, synthetic_gradients))


def absolute_distance(real_gradients: Gradients, synthetic_gradients: Gradients) -> torch.Tensor:
    """IDC's 'l1' (its setting for MNIST-like data)."""
    return sum((r - s).abs().sum() for r, s in zip(real_gradients, synthetic_gradients))


IDC_DISTANCES: dict[str, Distance] = {"mse": squared_distance, "l1": absolute_distance}


def parameter_gradients(network: nn.Module, parameters: list[nn.Parameter], images: torch.Tensor, label: int,
                        create_graph: bool) -> tuple[torch.Tensor, ...]:
    """Gradients of the mean cross-entropy of ``images`` (all of class ``label``) w.r.t. ``parameters``.
    Without ``create_graph`` no graph is kept and the result is detached."""
    labels = torch.full((images.shape[0],), label, dtype=torch.long, device=images.device)
    loss = F.cross_entropy(network(images), labels)
    gradients = torch.autograd.grad(loss, parameters, create_graph=create_graph)
    return gradients if create_graph else tuple(g.detach() for g in gradients)


def matching_loss(network: nn.Module, parameters: list[nn.Parameter], real_images: torch.Tensor,
                  synthetic_images: torch.Tensor, label: int, distance: Distance, precision: str = "fp32") -> torch.Tensor:
    """One class's matching loss; differentiable w.r.t. ``synthetic_images`` only. ``precision`` 'bf16' computes
    the real gradients (the target, no graph) under bfloat16 autocast; the generated side stays float32."""
    with autocast(precision, real_images.device):  # gradients come back in the parameters' dtype
        real_gradients = parameter_gradients(network, parameters, real_images, label, create_graph=False)
    synthetic_gradients = parameter_gradients(network, parameters, synthetic_images, label, create_graph=True)
    return distance(real_gradients, synthetic_gradients)


# ---------------------------------------------------------------------------------- the shared schedule
class _GradientMatching(Objective):
    """Network lifecycle and the per-class loop; subclasses say which parameters are matched, how, how
    long a network lives and how it trains between steps."""

    distance: Distance = staticmethod(cosine_distance)
    decomposes_over_classes = True

    def __init__(self, spec, config, device="cpu"):
        super().__init__(spec, config, device)
        if config.real_per_class < 1 or config.synthetic_per_class < 0:
            raise ConfigError("real_per_class must be >= 1 and synthetic_per_class >= 0 (0: all generated images)")
        self.network: nn.Module | None = None
        self.network_optimizer: torch.optim.Optimizer | None = None
        self.steps_on_network = 0  # engine iterations taken on the current network
        self.networks_created = 0  # counters: schedule checks and logs
        self.network_trainings = 0

    # ------------------------------------------------------------------------------ to specialize
    def matched_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def network_lifetime(self, container) -> int:
        raise NotImplementedError

    def train_between_steps(self, container, real, generator: torch.Generator) -> None:
        raise NotImplementedError

    def augment_pair(self, real_images, synthetic_images, generator):
        return real_images, synthetic_images

    def _train(self, epoch_batch, settings: TrainSettings, generator: torch.Generator, augment) -> None:
        """Train the current network; its optimizer (and momentum) lives as long as the network does."""
        if self.network_optimizer is None:
            self.network_optimizer = make_network_optimizer(self.network, settings)
        train_network(self.network, epoch_batch, settings, generator, augment, optimizer=self.network_optimizer)
        self.network_trainings += 1

    # --------------------------------------------------------------------------------------- hooks
    def begin_iteration(self, iteration, generator):
        if self.network is None:
            self.network = self.fresh_network(generator, self.config.network)
            self.network_optimizer = None
            self.steps_on_network = 0
            self.networks_created += 1

    def loss(self, container, real, classes, generator):
        count = self.config.synthetic_per_class or None
        synthetic = container.generate_classes(classes, count, generator).images  # (K*S, C, H, W), class order
        per_class = synthetic.shape[0] // len(classes)
        parameters = self.matched_parameters()
        total = synthetic.new_zeros(())
        for k, c in enumerate(classes):
            stream = stream_of(generator, c)
            real_c = real.sample(c, self.config.real_per_class, stream)
            syn_c = synthetic[k * per_class:(k + 1) * per_class]
            real_c, syn_c = self.augment_pair(real_c, syn_c, stream)
            total = total + matching_loss(self.network, parameters, real_c, syn_c, c, self.distance, self.precision)
        return total

    def backward(self, container, real, classes, generator):
        """Backpropagate to the container only: the network weights need no second-order gradient."""
        loss = self.loss(container, real, classes, generator)
        inputs = [p for p in container.parameters() if p.requires_grad]
        loss.backward(inputs=inputs or None)
        return loss.detach()

    def end_iteration(self, container, real, generator):
        self.steps_on_network += 1
        if self.steps_on_network >= self.network_lifetime(container):
            self.network, self.steps_on_network = None, 0  # the next iteration starts a fresh network
        else:
            self.train_between_steps(container, real, generator)

    # --------------------------------------------------------------------------------------- state
    def state_dict(self):
        return {
            "network": None if self.network is None else self.network.state_dict(),
            "network_optimizer": None if self.network_optimizer is None else self.network_optimizer.state_dict(),
            "steps_on_network": self.steps_on_network,
            "networks_created": self.networks_created,
            "network_trainings": self.network_trainings,
        }

    def load_state_dict(self, state):
        self.network = None
        if state.get("network") is not None:
            throwaway = torch.Generator().manual_seed(0)  # the weights are overwritten just below
            self.network = self.fresh_network(throwaway, self.config.network)
            self.network.load_state_dict(state["network"])
        self.network_optimizer = None
        if state.get("network_optimizer") is not None:
            self.network_optimizer = torch.optim.SGD(self.network.parameters(), lr=0.0)
            self.network_optimizer.load_state_dict(state["network_optimizer"])  # restores lr, momentum, buffers
        self.steps_on_network = state.get("steps_on_network", 0)
        self.networks_created = state.get("networks_created", 0)
        self.network_trainings = state.get("network_trainings", 0)


# ------------------------------------------------------------------------------------------- DC / DSA
@dataclass(frozen=True)
class GradientMatchingConfig:
    """DC defaults (main.py). ``outer_loop`` / ``inner_loop`` = 0: DC's rule for the container's IPC."""

    network: str = "convnet"
    real_per_class: int = 256
    synthetic_per_class: int = 0  # 0: every generated image of the class (DC uses all IPC images)
    outer_loop: int = 0  # synthetic steps per network
    inner_loop: int = 0  # epochs on the generated set between two steps
    network_learning_rate: float = 0.01  # DC's lr_net; plain SGD, no momentum, no weight decay
    network_batch_size: int = 256  # DC's batch_train
    batch_norm_images_per_class: int = 16  # BatchNorm networks: real images per class that fix the statistics
    dsa: bool = False
    augment_strategy: str = "color_crop_cutout_flip_scale_rotate"
    flip_rule: str = "always"  # the code's strategy string flips everywhere; the DSA README drops flips for digits


@OBJECTIVES.register("dc")
class GradientMatching(_GradientMatching):
    """DC: cosine distance over every weight matrix, one step for the sum over classes; DSA adds one shared
    siamese draw per class ('single' mode) for the real and generated batch, and DSA in the inner training."""

    config_class = GradientMatchingConfig
    per_class = False

    def __init__(self, spec, config: GradientMatchingConfig, device="cpu"):
        super().__init__(spec, config, device)
        if config.outer_loop < 0 or config.inner_loop < 0:
            raise ConfigError("outer_loop and inner_loop must be >= 0 (0: DC's rule for the IPC)")
        self.augment = self.make_augment(config.dsa, "single", config.augment_strategy)

    def loops(self, images_per_class: int) -> tuple[int, int]:
        outer, inner = dc_loops(images_per_class)
        return self.config.outer_loop or outer, self.config.inner_loop or inner

    def matched_parameters(self):
        return [p for p in self.network.parameters() if p.ndim > 1]  # 1-D ones contribute 0 to the distance

    def network_lifetime(self, container):
        return self.loops(container.images_per_class)[0]

    def augment_pair(self, real_images, synthetic_images, generator):
        return tuple(siamese(self.augment, [real_images, synthetic_images], generator))

    def loss(self, container, real, classes, generator):
        self._fix_batch_norm(real, generator)
        return super().loss(container, real, classes, generator)

    def train_between_steps(self, container, real, generator):
        """DC's inner loop: ``inner_loop`` epochs on the detached generated set (DSA-augmented for DSA)."""
        settings = TrainSettings(epochs=self.loops(container.images_per_class)[1],
                                 batch_size=self.config.network_batch_size,
                                 learning_rate=self.config.network_learning_rate, momentum=0.0, weight_decay=0.0,
                                 schedule="constant")
        self._train(container.evaluation_source(), settings, generator, self.augment)

    @torch.no_grad()
    def _fix_batch_norm(self, real, generator) -> None:
        """DC: a generated batch is too small for BatchNorm statistics, so they are computed on a real batch of
        every class and frozen (eval mode) for the step. Networks without BatchNorm are left alone."""
        norms = batch_norm_layers(self.network)
        if not norms:
            return
        images, _ = real.sample_classes(list(range(real.num_classes)), self.config.batch_norm_images_per_class,
                                        shared_stream(generator))
        self.network.train()
        self.network(images)
        for module in norms:
            module.eval()


@dataclass(frozen=True)
class DifferentiableSiameseConfig(GradientMatchingConfig):
    dsa: bool = True


@OBJECTIVES.register("dsa")
class DifferentiableSiameseMatching(GradientMatching):
    config_class = DifferentiableSiameseConfig


# ------------------------------------------------------------------------------------------------ IDC
@dataclass(frozen=True)
class BatchGradientMatchingConfig:
    """IDC defaults (argument.py, misc/reproduce.py). ``distance``: 'mse' (CIFAR, SVHN) or 'l1' (MNIST,
    Fashion-MNIST); ``real_training_images``: IDC's n_data, 2000 for CIFAR."""

    network: str = "convnet"
    real_per_class: int = 64  # batch_real
    synthetic_per_class: int = 128  # batch_syn_max: a random subset when a class generates more
    distance: str = "mse"
    renew_every: int = 100  # engine iterations per network (IDC's inner_loop)
    augment_strategy: str = "color_crop_cutout"  # one chained draw shared by the real and generated batch
    real_training_images: int = 500
    network_batch_size: int = 64
    network_learning_rate: float = 0.01
    network_momentum: float = 0.9
    network_weight_decay: float = 5e-4
    cutmix_probability: float = 0.5  # IDC's mix_p for CIFAR, SVHN, MNIST, Fashion-MNIST
    training_augment_strategy: str = "color_crop"  # per-image draws; CutMix replaces cutout (IDC's aug_rand)


@OBJECTIVES.register("idc")
class BatchGradientMatching(_GradientMatching):
    """IDC: per class 64 real vs up to 128 generated images augmented together; only conv weights are
    matched; one optimizer step per class; the network trains one epoch on real data after each sweep.

    The pixels are clamped by the container (multi_formation's clamp_every: the idc recipe clamps every 100
    engine iterations, as IDC's outer loop does). The network's SGD momentum lives as long as the network, as
    in IDC."""

    config_class = BatchGradientMatchingConfig
    per_class = True

    def __init__(self, spec, config: BatchGradientMatchingConfig, device="cpu"):
        super().__init__(spec, config, device)
        if config.distance not in IDC_DISTANCES:
            raise ConfigError(f"unknown idc distance '{config.distance}'; choose one of: {', '.join(IDC_DISTANCES)}")
        if config.renew_every < 1 or config.real_training_images < 0:
            raise ConfigError("renew_every must be >= 1 and real_training_images >= 0 (0: never train)")
        self.distance = IDC_DISTANCES[config.distance]
        self.augment = self.make_augment(True, "chain", config.augment_strategy)
        self.training_augment = DSA(DSAConfig(strategy=config.training_augment_strategy, mode="chain"),
                                    flip_allowed=spec.flip_allowed)

    def matched_parameters(self):
        return [p for p in self.network.parameters() if p.ndim == 4]  # conv weights only (IDC: no bias, no fc)

    def network_lifetime(self, container):
        return self.config.renew_every

    def augment_pair(self, real_images, synthetic_images, generator):
        joint = self.augment(torch.cat([real_images, synthetic_images]), generator, shared=True)  # one draw
        return joint[:real_images.shape[0]], joint[real_images.shape[0]:]

    def train_between_steps(self, container, real, generator):
        """One epoch of SGD (lr 0.01, momentum 0.9, wd 5e-4) on ``real_training_images`` random real images."""
        if self.config.real_training_images == 0:
            return
        settings = TrainSettings(epochs=1, batch_size=self.config.network_batch_size,
                                 learning_rate=self.config.network_learning_rate,
                                 momentum=self.config.network_momentum,
                                 weight_decay=self.config.network_weight_decay, schedule="constant",
                                 cutmix_probability=self.config.cutmix_probability)
        count = self.config.real_training_images
        self._train(lambda g: Batch(*real.sample_any(count, g)), settings, generator, self.training_augment)
