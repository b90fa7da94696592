"""Embedding-distribution matching: DM (first moment) and ECHO/M3D (MMD with Gaussian kernels).

Both compare, per class, the embeddings of real and generated images in a random network's feature space
(the network is never trained). DM: VICO-UoE/DatasetCondensation main_DM.py; ECHO: docs/methods.md,
Higher-order distribution matching (ECHO).
Real images of all classes in a group go through the network in one forward pass, with no graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributed import stream_of, world_size
from ..errors import ConfigError
from ..networks import batch_norm_layers
from ..runtime import forward_in_chunks, no_grad_forward
from .base import OBJECTIVES, Objective, freeze

KERNELS = ("mean", "linear", "gaussian", "polynomial")
GAUSSIAN_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def kernel_matrix(kind: str, x: torch.Tensor, y: torch.Tensor, bandwidth: torch.Tensor | None = None) -> torch.Tensor:
    """(n, d), (m, d) -> (n, m)."""
    if kind == "linear":
        return x @ y.T
    if kind == "polynomial":  # degree 2, inputs scaled by their dimension so values stay O(1)
        return (x @ y.T / x.shape[1] + 1.0) ** 2
    if kind == "gaussian":
        squared = torch.cdist(x, y).pow(2)
        return sum(torch.exp(-squared / (bandwidth * m)) for m in GAUSSIAN_MULTIPLIERS)
    raise ConfigError(f"unknown kernel '{kind}'; choose one of: {', '.join(KERNELS)}")


def mmd_squared(synthetic: torch.Tensor, real: torch.Tensor, kernel: str) -> torch.Tensor:
    """Biased MMD^2 = mean K_ss - 2 mean K_sr + mean K_rr. Gaussian bandwidth: mean pairwise squared
    distance of the joint batch, with no gradient through it."""
    if kernel == "mean":  # DM: squared distance of the means (== the linear-kernel MMD)
        return (synthetic.mean(0) - real.mean(0)).pow(2).sum()
    bandwidth = None
    if kernel == "gaussian":
        with torch.no_grad():
            joint = torch.cat([synthetic, real])
            n = joint.shape[0]
            bandwidth = torch.cdist(joint, joint).pow(2).sum() / (n * n - n)
    return (
        kernel_matrix(kernel, synthetic, synthetic, bandwidth).mean()
        - 2 * kernel_matrix(kernel, synthetic, real, bandwidth).mean()
        + kernel_matrix(kernel, real, real, bandwidth).mean()
    )


@dataclass(frozen=True)
class DistributionMatchingConfig:
    kernel: str = "mean"
    network: str = "convnet"
    real_per_class: int = 256
    synthetic_per_class: int = 0  # 0: every generated image of the class
    renew_every: int = 1  # a fresh random network every k iterations
    per_class_step: bool = False  # False: one optimizer step for all classes (DM); True: one per class (ECHO)
    dsa: bool = True
    augment_mode: str = "single"  # "single" (DM) or "chain" (ECHO/IDC: color, crop, cutout)
    real_chunk: int = 256  # real images per forward chunk (memory only; ignored for batch-norm networks)
    augment_strategy: str = "color_crop_cutout_flip_scale_rotate"
    flip_rule: str = "always"  # DM's code flips for every dataset (main_DM.py's strategy string)


@OBJECTIVES.register("dm")
class DistributionMatching(Objective):
    config_class = DistributionMatchingConfig
    decomposes_over_classes = True

    def __init__(self, spec, config: DistributionMatchingConfig, device="cpu"):
        super().__init__(spec, config, device)
        if config.kernel not in KERNELS:
            raise ConfigError(f"unknown kernel '{config.kernel}'; choose one of: {', '.join(KERNELS)}")
        if config.renew_every < 1:
            raise ConfigError("renew_every must be >= 1")
        if config.real_per_class < 1 or config.synthetic_per_class < 0 or config.real_chunk < 1:
            raise ConfigError(f"{self.__class__.__name__} needs real_per_class >= 1, synthetic_per_class >= 0 "
                              f"(0: all) and real_chunk >= 1; got {config.real_per_class}, "
                              f"{config.synthetic_per_class}, {config.real_chunk}")
        self.per_class = config.per_class_step
        self.augment = self.make_augment(config.dsa, config.augment_mode, config.augment_strategy)
        self.network = None

    def begin_iteration(self, iteration, generator):
        if self.network is None or iteration % self.config.renew_every == 0:
            self.network = freeze(self.fresh_network(generator, self.config.network))
            if world_size() > 1 and batch_norm_layers(self.network):
                raise ConfigError(f"network '{self.config.network}' has batch norm, whose statistics span every "
                                  "class's real images in one forward: a class-sharded run would change them; use a "
                                  "network without batch norm (convnet) or one process")

    def loss(self, container, real, classes, generator):
        count = self.config.synthetic_per_class or None
        synthetic = container.generate_classes(classes, count, generator).images
        per_class_syn = len(synthetic) // len(classes)
        real_parts, syn_parts = [], []
        for k, c in enumerate(classes):
            stream = stream_of(generator, c)
            real_c = real.sample(c, self.config.real_per_class, stream)
            syn_c = synthetic[k * per_class_syn:(k + 1) * per_class_syn]
            if self.augment is not None:
                real_c, syn_c = siamese_pair(self.augment, real_c, syn_c, stream)
            real_parts.append(real_c)
            syn_parts.append(syn_c)
        real_images = torch.cat(real_parts)
        # chunks only where images do not interact: batch norm's statistics span one forward pass, and DM's
        # code passes every class's real images together
        chunk = len(real_images) if batch_norm_layers(self.network) else self.config.real_chunk
        with no_grad_forward(self.precision, self.device):  # one pass for every class's real images, in chunks
            real_features = forward_in_chunks(self.network.embed, real_images, chunk)
        # a normal tensor again (inference tensors cannot be saved for backward, e.g. by the Gaussian kernel)
        real_features = real_features.clone().split([len(p) for p in real_parts])
        syn_features = self.network.embed(torch.cat(syn_parts)).split([len(p) for p in syn_parts])
        return sum(mmd_squared(s, r, self.config.kernel) for s, r in zip(syn_features, real_features))

    def state_dict(self):
        return {"network": None if self.network is None else self.network.state_dict()}

    def load_state_dict(self, state):
        if state.get("network") is not None:
            throwaway = torch.Generator().manual_seed(0)  # the weights are overwritten just below
            self.network = freeze(self.fresh_network(throwaway, self.config.network))
            self.network.load_state_dict(state["network"])


def siamese_pair(augment, real_images, syn_images, generator):
    from ..data.augment import siamese

    return tuple(siamese(augment, [real_images, syn_images], generator))


@dataclass(frozen=True)
class EchoConfig(DistributionMatchingConfig):
    """ECHO/M3D defaults (docs/methods.md, Higher-order distribution matching (ECHO)): Gaussian MMD, network
    renewed every 5 iterations, per-class steps, 128 real vs up to 200 generated per class, chained
    color/crop/cutout augmentation."""

    kernel: str = "gaussian"
    real_per_class: int = 128
    synthetic_per_class: int = 200
    renew_every: int = 5
    per_class_step: bool = True
    augment_mode: str = "chain"
    augment_strategy: str = "color_crop_cutout"


@OBJECTIVES.register("echo")
class HigherOrderMatching(DistributionMatching):
    config_class = EchoConfig
