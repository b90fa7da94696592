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

Reused memories (ours; continual learning, docs/continual.md): ``reused_bases`` > 0 memories that another
container already stores (read from ``reuse_from`` when the container is initialized) are addressed as well,
frozen. Addresses then have K' + K entries (K' reused first), the reused memories are a buffer (not trained,
not counted in this container's stored floats: their owner counts them), and
r = floor((B - K C H W / ds^2) / (classes (K' + K))). With ``bases = 0`` the budget goes to addresses alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
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
    reused_bases: int = 0  # K': frozen memories stored by another container, addressed first (0: none)
    reuse_from: str = ""  # that container's container.safetensors: its whole table (its reused, then its own)


def memories_images_per_class(spec: DataSpec, images_per_class: int, bases: int, downsample: int,
                              reused_bases: int = 0) -> int:
    """r = floor((B - K C H W / ds^2) / (classes (K' + K))) (RTP utils/Img_per_Cls_budget.py, with K' = 0);
    the K' reused memories are stored elsewhere and cost only their address entries. Refuses r < 1."""
    budget = spec.budget_floats(images_per_class)
    memory_floats = bases * spec.channels * (spec.height // downsample) * (spec.width // downsample)
    address = bases + reused_bases
    r = (budget - memory_floats) // (spec.num_classes * address)
    if r < 1:
        reused = f" (+ {reused_bases} reused)" if reused_bases else ""
        raise BudgetError(
            f"memories with bases={bases}{reused} and downsample={downsample} need {memory_floats:,} floats for the "
            f"memories plus {spec.num_classes * address:,} per image of every class, over the budget B = {budget:,} "
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
        if config.bases < 0 or config.reused_bases < 0 or config.bases + config.reused_bases < 1:
            raise ConfigError("memories needs bases >= 0, reused_bases >= 0 and at least one memory in all; got "
                              f"bases={config.bases}, reused_bases={config.reused_bases}")
        if config.pca_real_per_class < 1:
            raise ConfigError("memories needs pca_real_per_class >= 1")
        if bool(config.reused_bases) != bool(config.reuse_from):
            raise ConfigError("memories reused_bases and reuse_from go together: the number of reused memories and "
                              f"the container.safetensors holding them (got {config.reused_bases} and "
                              f"'{config.reuse_from}')")
        if ds < 1 or spec.height % ds or spec.width % ds:
            raise ConfigError(f"memories downsample {ds} must be >= 1 and divide the image size {spec.height}x{spec.width}")
        if config.images_per_class_override < 0:
            raise ConfigError("memories images_per_class_override must be >= 0 (0: from the budget)")
        self.r = config.images_per_class_override or memories_images_per_class(
            spec, images_per_class, config.bases, ds, config.reused_bases)
        self.low_size = (spec.height // ds, spec.width // ds)  # (h, w)
        # a fixed-seed start so that an uninitialized container is usable; initialize() redraws from the run
        start = torch.Generator().manual_seed(0)
        memory_size = spec.channels * self.low_size[0] * self.low_size[1]  # C*h*w
        self.memories = nn.Parameter(xavier_uniform((config.bases, memory_size), start))
        addressed = config.reused_bases + config.bases
        self.coefficients = nn.Parameter(xavier_uniform((spec.num_classes * self.r, addressed), start))
        if config.reused_bases:  # a buffer: saved with the container (it regenerates alone), never trained
            self.register_buffer("reused_memories", torch.zeros(config.reused_bases, memory_size))

    def generated_per_class(self) -> int:
        return self.r

    def floats_per_part(self) -> dict[str, int]:
        return {"memories": self.memories.numel(), "addresses": self.coefficients.numel()}

    def memory_table(self) -> torch.Tensor:
        """(K' + K, C*h*w): what addresses combine, the reused memories first."""
        if not self.config.reused_bases:
            return self.memories
        return torch.cat([self.reused_memories, self.memories])

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
        images = (coefficients @ self.memory_table()).view(-1, self.spec.channels, h, w)  # (N, C, h, w)
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
        if self.config.reused_bases:
            self.reused_memories.copy_(read_memory_table(self.config.reuse_from, tuple(self.reused_memories.shape)))
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
        images, restricted to what the upsampling can produce, so decoded memories are orthonormal; with reused
        memories, the leading directions of what the reused ones do not span. Addresses: the least-squares
        coefficients of one random real image of the class per address, over every addressed memory."""
        c, (h, w), k = self.spec.channels, self.low_size, self.config.bases
        device = self.memories.device
        # U^T = Q R: Q (HW, hw) orthonormal basis of the decoder's range; coordinates of x are x Q
        q, r_factor = torch.linalg.qr(self._upsampling_matrix(device).double().T)

        def coordinates(images: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C*h*w)
            return (images.double().reshape(len(images), c, -1) @ q).reshape(len(images), -1)

        # a low-resolution memory m decodes to m U per channel, whose coordinates are m U Q = m R^T
        reused = (self.reused_memories.double().reshape(-1, h * w) @ r_factor.T).reshape(-1, c * h * w) \
            if self.config.reused_bases else torch.zeros(0, c * h * w, dtype=torch.float64, device=device)
        spanned = torch.linalg.qr(reused.T).Q if len(reused) else None  # (C*h*w, K'): what reuse already spans
        memories, directions = self._principal_memories(real, generator, coordinates, r_factor, spanned)
        solve = torch.linalg.pinv(torch.cat([reused, directions]))  # (C*h*w, K'+K): least squares, every memory
        coefficients = torch.cat([coordinates(real.sample(cls, self.r, generator, replace_if_short=True)) @ solve
                                  for cls in range(self.num_classes)])  # (classes*r, K'+K), one class at a time
        # balance the new memories' scale against their address entries (products unchanged): SGD then moves
        # both at similar rates; the reused memories are frozen, their entries keep their scale
        if k:
            own = coefficients[:, self.config.reused_bases:]  # a view: dividing it divides their columns
            scale = (own.pow(2).mean().sqrt() / memories.pow(2).mean().sqrt()).sqrt()
            memories = memories * scale
            own /= scale
        return memories.float(), coefficients.float()

    def _principal_memories(self, real, generator, coordinates, r_factor, spanned) -> tuple[torch.Tensor, torch.Tensor]:
        """The K new memories (low resolution, (K, C*h*w)) and their decoded coordinates (K, C*h*w): the leading
        principal directions of the real images' coordinates outside ``spanned`` (None: all of them)."""
        c, (h, w), k = self.spec.channels, self.low_size, self.config.bases
        device = r_factor.device
        if k == 0:
            empty = torch.zeros(0, c * h * w, dtype=torch.float64, device=device)
            return empty, empty
        covariance = torch.zeros(c * h * w, c * h * w, dtype=torch.float64, device=device)
        for cls in range(self.num_classes):
            z = coordinates(real.sample(cls, self.config.pca_real_per_class, generator))
            if spanned is not None:
                z = z - (z @ spanned) @ spanned.T
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
        return memories, directions


def read_memory_table(path: str, shape: tuple[int, int]) -> torch.Tensor:
    """The whole memory table (its reused memories, then its own) of the memories container saved in ``path``
    (a container.safetensors, or the run directory holding one), checked against ``shape``."""
    file = Path(path)
    file = file / "container.safetensors" if file.is_dir() else file
    if not file.is_file():
        raise ConfigError(f"memories reuse_from '{path}' is not a container.safetensors (nor a run directory "
                          "holding one)")
    with safe_open(str(file), framework="pt") as tensors:
        names = set(tensors.keys())
        if "memories" not in names:
            raise ConfigError(f"memories reuse_from '{file}' holds no memories (tensors: {', '.join(sorted(names))})")
        parts = [tensors.get_tensor(name) for name in ("reused_memories", "memories") if name in names]
    table = torch.cat(parts)
    if tuple(table.shape) != shape:
        raise ConfigError(f"memories reuse_from '{file}' holds {table.shape[0]} memories of {table.shape[1]} floats; "
                          f"this container reuses {shape[0]} of {shape[1]} (reused_bases and the image size must match)")
    return table
