"""Addressable memories (RTP, "Remember the Past", Deng & Russakovsky 2022).
docs/methods.md, Addressable memories (RTP).

Storage: K shared memories (bases) of C x H/ds x W/ds floats and one address (K coefficients) per generated
image. Image i of class c is a plain linear combination, bilinearly upsampled (align_corners=False)::

    x_{c,i} = upsample_ds( coefficients[c * r + i] @ memories )        # no softmax, no nonlinearity

r images per class come from the budget: r = floor((B - K C H W / ds^2) / (classes K)); r < 1 is refused.
Images are produced in network-input space directly (as pixels). Read in princetonvisualai/
RememberThePast-DatasetDistillation (compressors/imgs_embedding_basis_minibatch.py, utils/Img_per_Cls_budget.py).

Initialization: ``xavier`` (the official code: both tables xavier-uniform) or ``pca`` (ours): the memories
span the leading principal directions of real images within the range of the upsampling, and each address
holds the least-squares coefficients of one real image of its class.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import DataSpec
from ..errors import BudgetError, ConfigError
from .base import CONTAINERS, Container

INITS = ("xavier", "pca")


@dataclass(frozen=True)
class MemoriesConfig:
    bases: int = 16  # K memories shared by all classes
    downsample: int = 2  # ds: memories are stored at H/ds x W/ds
    images_per_class_override: int = 0  # r; 0: the largest r the budget allows
    init: str = "xavier"  # "xavier" (official) or "pca" (leading principal components of real images)
    pca_real_per_class: int = 256  # real images per class the PCA is fitted on


def memories_images_per_class(spec: DataSpec, images_per_class: int, bases: int, downsample: int) -> int:
    """r = floor((B - K C H W / ds^2) / (classes K)) (RTP utils/Img_per_Cls_budget.py); refuses r < 1."""
    budget = spec.budget_floats(images_per_class)
    memory_floats = bases * spec.channels * (spec.height // downsample) * (spec.width // downsample)
    r = (budget - memory_floats) // (spec.num_classes * bases)
    if r < 1:
        raise BudgetError(
            f"memories with bases={bases} and downsample={downsample} need {memory_floats:,} floats for the memories "
            f"plus {spec.num_classes * bases:,} per image of every class, over the budget B = {budget:,} "
            f"(IPC {images_per_class}); use fewer bases or a larger downsample"
        )
    return int(r)


def xavier_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """torch's xavier_uniform_ for a 2-D (rows, columns) table, drawn from an explicit generator."""
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


@CONTAINERS.register("memories")
class AddressableMemories(Container):
    """``memories`` (K, C*h*w) and ``coefficients`` (classes*r, K); r images per class, hard labels."""

    config_class = MemoriesConfig
    supports_queries = linear_queries = True  # addresses mix, and decoding is linear

    def __init__(self, spec, images_per_class, preprocessing, config: MemoriesConfig):
        super().__init__(spec, images_per_class, preprocessing, config)
        ds = config.downsample
        if config.init not in INITS:
            raise ConfigError(f"memories init must be one of: {', '.join(INITS)}; got '{config.init}'")
        if config.bases < 1 or config.pca_real_per_class < 1:
            raise ConfigError("memories needs bases >= 1 and pca_real_per_class >= 1")
        if ds < 1 or spec.height % ds or spec.width % ds:
            raise ConfigError(f"memories downsample {ds} must be >= 1 and divide the image size {spec.height}x{spec.width}")
        if config.images_per_class_override < 0:
            raise ConfigError("memories images_per_class_override must be >= 0 (0: from the budget)")
        self.r = config.images_per_class_override or memories_images_per_class(spec, images_per_class, config.bases, ds)
        self.low_size = (spec.height // ds, spec.width // ds)  # (h, w)
        # a fixed-seed start so that an uninitialized container is usable; initialize() redraws from the run
        start = torch.Generator().manual_seed(0)
        memory_size = spec.channels * self.low_size[0] * self.low_size[1]  # C*h*w
        self.memories = nn.Parameter(xavier_uniform((config.bases, memory_size), start))
        self.coefficients = nn.Parameter(xavier_uniform((spec.num_classes * self.r, config.bases), start))

    def generated_per_class(self) -> int:
        return self.r

    def floats_per_part(self) -> dict[str, int]:
        return {"memories": self.memories.numel(), "addresses": self.coefficients.numel()}

    def per_class_parameters(self) -> list[torch.Tensor]:
        return [self.coefficients]  # the memories are shared by every class

    def construction(self) -> dict:
        """Records the resolved r, so that a later change of the budget rule cannot change the shapes."""
        built = super().construction()
        built["config"]["images_per_class_override"] = self.r
        return built

    # --------------------------------------------------------------------------------------- generation
    def decode(self, coefficients: torch.Tensor) -> torch.Tensor:
        """coefficients (N, K) -> images (N, C, H, W): a linear combination of the memories, upsampled."""
        h, w = self.low_size
        images = (coefficients @ self.memories).view(-1, self.spec.channels, h, w)  # (N, C, h, w)
        if self.config.downsample > 1:
            images = F.interpolate(images, size=(self.spec.height, self.spec.width), mode="bilinear", align_corners=False)
        return images

    def _generate(self, indices, generator, mode):
        return self.decode(self.coefficients[indices])

    def query(self, soft_labels: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        """Images for label mixtures (RTP's generalized queries): the label addresses the memories.

        soft_labels: (N, classes), checked and normalized as ``Container.query`` does (weights >= 0, rows
        summing to 1). The address of row n at slot i is ``sum_c w[n, c] * coefficients[c * r + i]``: the
        classes' addresses at the same slot, mixed, then decoded. Without ``slots``: every slot,
        (N, r, C, H, W), as ``Container.query``; with ``slots`` (N,): one image per row at its slot,
        (N, C, H, W). Decoding is linear, so a query equals the same mixture of the classes' images; a
        one-hot row reproduces that class's images. The graph is kept if grad is on.
        """
        if slots is None:
            return super().query(soft_labels)
        weights = self.query_weights(soft_labels).to(self.device)
        slots = torch.as_tensor(slots, device=self.device)
        if (slots.shape != (len(weights),) or slots.is_floating_point() or int(slots.min()) < 0
                or int(slots.max()) >= self.r):
            raise ConfigError(f"slots must be ({len(weights)},) integers in [0, {self.r}), one per row of soft_labels")
        return self._decode_mixture(weights, slots)

    def _query(self, weights):
        count = len(weights)
        slots = torch.arange(self.r, device=weights.device).repeat(count)  # (count * r,): 0..r-1 per query
        images = self._decode_mixture(weights.repeat_interleave(self.r, dim=0), slots)
        return images.view(count, self.r, *images.shape[1:])

    def _decode_mixture(self, weights: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """weights (N, classes), slots (N,) -> (N, C, H, W): decodes sum_c weights[n, c] * address (c, slots[n])."""
        table = self.coefficients.view(self.num_classes, self.r, -1)  # (classes, r, K)
        return self.decode(torch.einsum("nc,cnk->nk", weights.to(table), table[:, slots]))

    # ----------------------------------------------------------------------------------- initialization
    @torch.no_grad()
    def initialize(self, real, generator) -> None:
        if self.config.init == "xavier":
            self.memories.copy_(xavier_uniform(tuple(self.memories.shape), generator))
            self.coefficients.copy_(xavier_uniform(tuple(self.coefficients.shape), generator))
            return
        memories, coefficients = self._pca_start(real, generator)
        self.memories.copy_(memories)
        self.coefficients.copy_(coefficients)

    def _upsampling_matrix(self, device) -> torch.Tensor:
        """U (h*w, H*W): row j is the upsampled one-hot low-resolution image j (the decoder, per channel)."""
        h, w = self.low_size
        one_hot = torch.eye(h * w, device=device).view(h * w, 1, h, w)
        if self.config.downsample == 1:
            return one_hot.view(h * w, h * w)
        up = F.interpolate(one_hot, size=(self.spec.height, self.spec.width), mode="bilinear", align_corners=False)
        return up.view(h * w, -1)

    def _pca_start(self, real, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Memories: the leading K principal directions (uncentered: the decoder has no mean term) of real
        images, restricted to what the upsampling can produce, so decoded memories are orthonormal. Addresses:
        the least-squares coefficients of one random real image of the class per address."""
        c, (h, w), k = self.spec.channels, self.low_size, self.config.bases
        device = self.memories.device
        # U^T = Q R: Q (HW, hw) orthonormal basis of the decoder's range; coordinates of x are x Q
        q, r_factor = torch.linalg.qr(self._upsampling_matrix(device).double().T)

        def coordinates(images: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C*h*w)
            return (images.double().reshape(len(images), c, -1) @ q).reshape(len(images), -1)

        covariance = torch.zeros(c * h * w, c * h * w, dtype=torch.float64, device=device)
        for cls in range(self.num_classes):
            z = coordinates(real.sample(cls, self.config.pca_real_per_class, generator))
            covariance += z.T @ z
        _, vectors = torch.linalg.eigh(covariance)  # ascending
        count = min(k, c * h * w)
        directions = vectors[:, -count:].flip(1).T  # (count, C*h*w), orthonormal coordinates
        if count < k:  # more memories than dimensions: the rest start small and random
            extra = xavier_uniform((k - count, c * h * w), generator).to(device, torch.float64)
            directions = torch.cat([directions, extra])
        # memory in low resolution: m U = d Q^T  <=>  m R^T = d  (per channel)
        memories = torch.linalg.solve_triangular(
            r_factor, directions.reshape(k * c, h * w).T, upper=True).T.reshape(k, c * h * w)
        solve = torch.linalg.pinv(directions)  # (C*h*w, K): least squares against the decoded memories
        coefficients = torch.cat([coordinates(real.sample(cls, self.r, generator, replace_if_short=True)) @ solve
                                  for cls in range(self.num_classes)])  # (classes*r, K), one class at a time
        # balance the two factors' scales (the product is unchanged): SGD then moves both at similar rates
        scale = (coefficients.pow(2).mean().sqrt() / memories.pow(2).mean().sqrt()).sqrt()
        return (memories * scale).float(), (coefficients / scale).float()
