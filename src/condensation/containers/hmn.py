"""Hierarchical Memory Network (HMN, Zheng et al., ECCV 2024; docs/methods.md,
Hierarchical memory network (HMN)). No official code exists: the layout below is ours.

    x_{c,i} = D( concat[ f_c(m_D), m_c, m_{c,i} ] )       (channel concatenation at h x w)

- ``m_D`` (C_D, h, w): one dataset memory shared by every class.
- ``f_c``: one 3x3 conv C_D -> C_F + LeakyReLU(0.2) per class; all classes run as one conv over ``m_D``
  (their weights stacked to (classes * C_F, C_D, 3, 3)), so a batch of mixed classes costs one call.
- ``m_c`` (C_C, h, w) per class and ``m_{c,i}`` (C_I, h, w) per generated image (the per-image cost).
- ``D``: k = log2(H / h) stages of (upsample x2 -> 3x3 conv -> per-sample norm -> ReLU), then a 3x3 conv
  to the data channels. Its output *is* the network-input image: a learned decoder absorbs the
  normalization's affine map exactly (and any fixed linear map such as ZCA up to its capacity), so decoding to
  [0, 1] pixels and normalizing would only add work; nothing has to be clamped either.

Every image depends only on its own instance memory and the shared parts (no batch statistics anywhere), so
``prune`` removes single images and leaves every other image bit for bit the same.

Budget (docs/methods.md, Hierarchical memory network (HMN)):
P_shared = |m_D| + sum_c (|f_c| + |m_c|) + |D|;
GIPC = floor(((1 + p) * B - P_shared) / (classes * |m_I|)) with p = ``over_budget``; an explicit
``instances_per_class`` (after pruning, when reloading an artifact) overrides the formula.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import DataSpec
from ..errors import BudgetError, ConfigError
from ..networks.base import make_norm
from .base import CONTAINERS, Container

NORMS = ("instance", "layer", "none")  # per-sample only: batch norm would couple the images of a batch
INITS = ("random", "reconstruct")
EXTRACTOR_SLOPE = 0.2  # LeakyReLU after f_c: a ReLU would leave dead channels of a tiny random m_D
SHARED_FRACTION = 0.3  # default sizes: the largest ladder rung whose shared parts fit in 30% of B
# (C_D, C_F, C_C, decoder width), smallest first; default_hmn_sizes picks one rung by the budget
LADDER = ((1, 1, 1, 2), (1, 1, 1, 4), (2, 2, 1, 8), (4, 4, 2, 16), (4, 4, 4, 16), (8, 8, 4, 32), (8, 8, 8, 32),
          (16, 16, 8, 48), (16, 16, 16, 48), (32, 32, 16, 64), (32, 32, 32, 96), (64, 64, 32, 128), (64, 64, 64, 128))


@dataclass(frozen=True)
class HMNConfig:
    """Sizes left at 0 come from ``default_hmn_sizes`` for the dataset and IPC; the built container keeps
    the resolved values (so an artifact's config fixes every shape)."""

    memory_size: int = 0  # h, the memories' height (width follows the aspect); 0: by image size
    dataset_channels: int = 0  # C_D
    feature_channels: int = 0  # C_F, output channels of each f_c
    class_channels: int = 0  # C_C
    instance_channels: int = 0  # C_I: one image costs C_I * h * w floats
    decoder_width: int = 0  # channels of every decoder stage
    norm: str = "instance"  # decoder norm: "instance", "layer" (both per sample) or "none"
    upsample: str = "nearest"  # "nearest" or "bilinear"
    instances_per_class: int = 0  # 0: GIPC from the budget; > 0: exactly this many (pruned, reloaded)
    over_budget: float = 0.0  # p: condense at (1 + p) * B, prune back to B afterwards (HMN uses 0.1)
    init: str = "random"  # "random"; "reconstruct": fit everything to real images of each class first
    memory_std: float = 0.5  # random memories ~ N(0, memory_std^2)
    reconstruct_steps: int = 300  # "reconstruct": Adam steps of mean squared error to real images
    reconstruct_batch_size: int = 256
    reconstruct_learning_rate: float = 0.01


@dataclass(frozen=True)
class HMNSizes:
    memory_height: int
    memory_width: int
    stages: int  # k: the decoder upsamples 2^k times
    dataset_channels: int
    feature_channels: int
    class_channels: int
    instance_channels: int
    decoder_width: int


def memory_layout(spec: DataSpec, memory_size: int = 0) -> tuple[int, int, int]:
    """(h, w, k) with H = h * 2^k. Default: the largest k <= 3 with H and W divisible by 2^k and h, w >= 2
    (32 -> 4, 28 -> 7, 64 -> 8, 8 -> 2, 16 -> 2, 128 -> 16)."""
    height, width = spec.height, spec.width
    if memory_size:
        k = round(math.log2(height / memory_size)) if 0 < memory_size < height else 0
        if k < 1 or memory_size * 2 ** k != height or width % 2 ** k:
            raise ConfigError(f"hmn memory_size {memory_size} must be the image height {height} divided by a "
                              f"power of two >= 2 that also divides the width {width}")
        return memory_size, width // 2 ** k, k
    for k in (3, 2, 1):
        if height % 2 ** k == 0 and width % 2 ** k == 0 and height >> k >= 2 and width >> k >= 2:
            return height >> k, width >> k, k
    raise ConfigError(f"hmn needs an image size divisible by 2 (got {height}x{width}); set memory_size")


def decoder_floats(sizes: HMNSizes, channels: int, norm: str) -> int:
    """k stages of 3x3 conv (bias only without a norm, which would cancel it) + norm affine, then 3x3 conv + bias."""
    total, width, inputs = 0, sizes.decoder_width, sizes.feature_channels + sizes.class_channels + sizes.instance_channels
    for _ in range(sizes.stages):
        total += inputs * width * 9 + (width if norm == "none" else 2 * width)
        inputs = width
    return total + width * channels * 9 + channels


def shared_floats(sizes: HMNSizes, spec: DataSpec, norm: str = "instance") -> int:
    """P_shared = |m_D| + classes * (|f_c| + |m_c|) + |D|."""
    plane = sizes.memory_height * sizes.memory_width
    extractor = sizes.feature_channels * sizes.dataset_channels * 9 + sizes.feature_channels
    return (sizes.dataset_channels * plane + spec.num_classes * (extractor + sizes.class_channels * plane)
            + decoder_floats(sizes, spec.channels, norm))


def instance_floats(sizes: HMNSizes) -> int:
    return sizes.instance_channels * sizes.memory_height * sizes.memory_width


def budget_instances(sizes: HMNSizes, spec: DataSpec, images_per_class: int, ratio: float, norm: str = "instance") -> int:
    """The most instances per class whose stored floats fit ``ratio`` x B (may be < 1: does not fit)."""
    available = int(ratio * spec.budget_floats(images_per_class)) - shared_floats(sizes, spec, norm)
    return available // (spec.num_classes * instance_floats(sizes))


def default_hmn_sizes(spec: DataSpec, images_per_class: int, memory_size: int = 0) -> HMNSizes:
    """Sizes that fill the budget B with many small images.

    - instance memory: about 1/96 of an image at IPC 1, 1/24 at IPC <= 10, 1/16 above (C_I >= 1);
    - shared parts: the largest ``LADDER`` rung (C_D, C_F, C_C, decoder width) whose P_shared (instance norm)
      fits in 30% of B; about 70% of B is left to instance memories.

    Results (P_shared = m_D + f_c + m_c + D; |m_I|; GIPC at p = 0 / p = 0.1):

    | dataset, IPC (B)              | h | C_D,C_F,C_C,width | C_I | P_shared                                | |m_I| | GIPC      |
    | Fashion-MNIST 1 (7,840)       | 7 | 2, 2, 1, 8        | 1   | 1,937 = 98 + 380 + 490 + 969            | 49    | 12 / 13   |
    | Fashion-MNIST 10 (78,400)     | 7 | 8, 8, 4, 32       | 1   | 21,569 = 392 + 5,840 + 1,960 + 13,377   | 49    | 115 / 131 |
    | CIFAR-10 1 (30,720)           | 4 | 4, 4, 4, 16       | 2   | 8,763 = 64 + 1,480 + 640 + 6,579        | 32    | 68 / 78   |
    | CIFAR-10 10 (307,200)         | 4 | 16, 16, 16, 48    | 8   | 86,355 = 256 + 23,200 + 2,560 + 60,339  | 128   | 172 / 196 |
    | CIFAR-10 50 (1,536,000)       | 4 | 32, 32, 32, 96    | 12  | 332,835 = 512 + 92,480 + 5,120 + 234,723 | 192  | 626 / 706 |
    """
    height, width, stages = memory_layout(spec, memory_size)
    plane = height * width
    divisor = 96 if images_per_class <= 1 else 24 if images_per_class <= 10 else 16
    instance_channels = max(1, round(spec.image_floats / divisor / plane))
    limit = SHARED_FRACTION * spec.budget_floats(images_per_class)
    chosen = None
    for rung in LADDER:
        sizes = HMNSizes(height, width, stages, *rung[:3], instance_channels, rung[3])
        if chosen is None or shared_floats(sizes, spec) <= limit:
            chosen = sizes  # the smallest rung always, then every rung that still fits
        else:
            break
    return chosen


@CONTAINERS.register("hmn")
class HMN(Container):
    """Three memory tiers + per-class extractors + one decoder; global index = class * GIPC + i."""

    can_prune_instances = True
    # a query mixes the classes' decoder inputs; the decoder (norms, ReLUs) is nonlinear, so the image of a
    # mixture is not the mixture of the classes' images
    supports_queries, linear_queries = True, False

    config_class = HMNConfig

    def __init__(self, spec, images_per_class, preprocessing, config: HMNConfig):
        config = _resolve(spec, images_per_class, config)
        super().__init__(spec, images_per_class, preprocessing, config)
        self.sizes = sizes = _sizes_of(spec, config)
        h, w, classes = sizes.memory_height, sizes.memory_width, spec.num_classes
        self.dataset_memory = nn.Parameter(torch.zeros(sizes.dataset_channels, h, w))  # (C_D, h, w)
        self.extractor_weight = nn.Parameter(torch.zeros(classes, sizes.feature_channels, sizes.dataset_channels, 3, 3))
        self.extractor_bias = nn.Parameter(torch.zeros(classes, sizes.feature_channels))  # (classes, C_F)
        self.class_memory = nn.Parameter(torch.zeros(classes, sizes.class_channels, h, w))  # (classes, C_C, h, w)
        # (classes * GIPC, C_I, h, w), class-major: row = global index
        self.instance_memory = nn.Parameter(torch.zeros(classes * config.instances_per_class, sizes.instance_channels, h, w))
        self.decoder = _build_decoder(sizes, spec.channels, config.norm, config.upsample)
        self.pruning_record: dict | None = None  # set by pruning; saved in the artifact's metadata
        self.reset_parameters(torch.Generator().manual_seed(0))

    # ------------------------------------------------------------------------------------ the interface
    def generated_per_class(self) -> int:
        return self.config.instances_per_class

    def floats_per_part(self) -> dict[str, int]:
        """The paper's parts: where the budget goes (results.json, the HTML report)."""
        return {"dataset memory": self.dataset_memory.numel(),
                "class extractors": self.extractor_weight.numel() + self.extractor_bias.numel(),
                "class memories": self.class_memory.numel(), "instance memories": self.instance_memory.numel(),
                "decoder": sum(p.numel() for p in self.decoder.parameters())}

    def per_class_parameters(self) -> list[torch.Tensor]:
        # the dataset memory and the decoder are shared by every class
        return [self.extractor_weight, self.extractor_bias, self.class_memory, self.instance_memory]

    def class_features(self) -> torch.Tensor:
        """f_c(m_D) for every class at once: (classes, C_F, h, w)."""
        weight = self.extractor_weight.flatten(0, 1)  # (classes * C_F, C_D, 3, 3)
        features = F.conv2d(self.dataset_memory.unsqueeze(0), weight, self.extractor_bias.flatten(), padding=1)
        features = F.leaky_relu(features, EXTRACTOR_SLOPE)  # (1, classes * C_F, h, w)
        return features.view(self.num_classes, self.sizes.feature_channels, *features.shape[2:])

    def codes(self, indices: torch.Tensor) -> torch.Tensor:
        """The decoder input for global indices (N,): (N, C_F + C_C + C_I, h, w)."""
        classes = self.labels_of(indices)
        return torch.cat([self.class_features()[classes], self.class_memory[classes], self.instance_memory[indices]], 1)

    def _generate(self, indices, generator, mode):
        return self.decode(self.codes(indices))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (N, C_F + C_C + C_I, h, w) -> images (N, C, H, W), network-input space."""
        if len(codes) == 1:
            # CPU convolutions take another code path for a batch of one, which rounds differently (~1e-7);
            # decoding a pair keeps an image bit for bit the same alone and within any batch
            return self.decoder(codes.expand(2, *codes.shape[1:]))[:1]
        return self.decoder(codes)

    def _query(self, weights):
        """Image i of a query decodes sum_c w_c code_{c,i}: every class's decoder input for its image i (class
        features f_c(m_D), class memory m_c, instance memory m_{c,i}) mixed before the one shared decoder."""
        per_class = self.generated_per_class()
        codes = self.codes(torch.arange(self.total_generated(), device=self.device))  # (classes * GIPC, D, h, w)
        codes = codes.view(self.num_classes, per_class, *codes.shape[1:])
        mixed = torch.einsum("qc,cn...->qn...", weights.to(codes), codes)  # (Q, GIPC, D, h, w)
        images = self.decode(mixed.flatten(0, 1))
        return images.view(len(weights), per_class, *images.shape[1:])

    # ------------------------------------------------------------------------------------------ storage
    @property
    def instance_floats(self) -> int:
        return instance_floats(self.sizes)

    def shared_floats(self) -> int:
        return self.stored_floats() - self.instance_memory.numel()

    @property
    def over_budget_ratio(self) -> float:
        """The budget ratio this container was built to condense at: 1 + p (run.py checks against it)."""
        return 1.0 + self.config.over_budget

    def instances_within_budget(self, ratio: float = 1.0) -> int:
        """The largest class-balanced instance count whose stored floats fit ``ratio`` x B."""
        available = int(ratio * self.budget_floats) - self.shared_floats()
        return available // (self.num_classes * self.instance_floats)

    def construction(self) -> dict:
        built = super().construction()
        if self.pruning_record is not None:
            built["pruning"] = self.pruning_record  # provenance only; loading ignores it
        return built

    # ------------------------------------------------------------------------------------------ pruning
    def prune(self, keep: torch.Tensor) -> "HMN":
        """A new container holding only the instance memories ``keep`` (global indices, the same count for
        every class); its images equal those images of this container, in increasing index order."""
        per_class = self.generated_per_class()
        keep = torch.as_tensor(keep).flatten().long().cpu()
        if keep.numel() == 0 or int(keep.min()) < 0 or int(keep.max()) >= self.total_generated():
            raise ValueError(f"keep must hold global indices in [0, {self.total_generated()}), got {keep.numel()} "
                             f"indices{'' if keep.numel() == 0 else f' in [{int(keep.min())}, {int(keep.max())}]'}")
        unique = torch.unique(keep)  # sorted
        if len(unique) != len(keep):
            raise ValueError(f"keep holds {len(keep) - len(unique)} repeated indices")
        keep = unique
        counts = torch.bincount(torch.div(keep, per_class, rounding_mode="floor"), minlength=self.num_classes)
        if not bool((counts == counts[0]).all()):
            raise ValueError(f"pruning must keep the same number of images in every class, got {counts.tolist()}")
        config = dataclasses.replace(self.config, instances_per_class=int(counts[0]))
        pruned = type(self)(self.spec, self.images_per_class, self.preprocessing, config)
        pruned.registry_name = self.registry_name
        state = dict(self.state_dict())
        state["instance_memory"] = self.instance_memory.detach()[keep.to(self.instance_memory.device)]
        pruned.load_state_dict(state)
        return pruned.to(self.device)

    # ----------------------------------------------------------------------------------- initialization
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Random start drawn from ``generator`` on the CPU (device-independent): memories N(0, std^2),
        convolutions as PyTorch's default (uniform within 1/sqrt(fan_in)), norms identity."""
        std = self.config.memory_std
        for memory in (self.dataset_memory, self.class_memory, self.instance_memory):
            memory.copy_(torch.randn(memory.shape, generator=generator) * std)
        bound = 1.0 / math.sqrt(self.sizes.dataset_channels * 9)
        for tensor in (self.extractor_weight, self.extractor_bias):
            tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound)
        for module in self.decoder.modules():
            if isinstance(module, nn.Conv2d):
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                module.weight.copy_((torch.rand(module.weight.shape, generator=generator) * 2 - 1) * bound)
                if module.bias is not None:
                    module.bias.copy_((torch.rand(module.bias.shape, generator=generator) * 2 - 1) * bound)
            elif isinstance(module, nn.GroupNorm):
                module.reset_parameters()

    def initialize(self, real, generator) -> None:
        self.reset_parameters(generator)
        if self.config.init == "reconstruct":
            self.reconstruct(real, generator)

    def reconstruct(self, real, generator: torch.Generator) -> None:
        """Fit every part so that image (c, i) reproduces a random real image of class c (mean squared error
        in network-input space, Adam), so condensation starts from real-looking images."""
        per_class = self.generated_per_class()
        chosen_real = []  # positions in real.inputs: one target per instance, without copying the images
        for c in range(self.num_classes):
            available = real.indices[c]
            positions = (torch.randperm(len(available), generator=generator)[:per_class] if per_class <= len(available)
                         else torch.randint(len(available), (per_class,), generator=generator))
            chosen_real.append(available[positions.to(available.device)])
        target_positions = torch.cat(chosen_real)  # (classes * GIPC,)
        optimizer = torch.optim.Adam(self.parameters(), lr=self.config.reconstruct_learning_rate)
        count = len(target_positions)
        batch = min(self.config.reconstruct_batch_size, count)
        order = torch.randperm(count, generator=generator)
        position = 0
        with torch.enable_grad():
            for _ in range(self.config.reconstruct_steps):
                if position + batch > count:  # a fresh permutation every epoch: each image is visited alike
                    order, position = torch.randperm(count, generator=generator), 0
                chosen = order[position:position + batch].to(self.device)
                position += batch
                target = real.inputs[target_positions[chosen].to(real.inputs.device)].to(self.device)
                loss = F.mse_loss(self._generate(chosen, None, "distill"), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()


def _build_decoder(sizes: HMNSizes, channels: int, norm: str, upsample: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    inputs = sizes.feature_channels + sizes.class_channels + sizes.instance_channels
    for _ in range(sizes.stages):
        layers += [nn.Upsample(scale_factor=2, mode=upsample),
                   nn.Conv2d(inputs, sizes.decoder_width, 3, padding=1, bias=norm == "none"),
                   make_norm(norm, sizes.decoder_width), nn.ReLU()]
        inputs = sizes.decoder_width
    layers.append(nn.Conv2d(inputs, channels, 3, padding=1))
    return nn.Sequential(*layers)


def _sizes_of(spec: DataSpec, config: HMNConfig) -> HMNSizes:
    height, width, stages = memory_layout(spec, config.memory_size)
    return HMNSizes(height, width, stages, config.dataset_channels, config.feature_channels, config.class_channels,
                    config.instance_channels, config.decoder_width)


def _resolve(spec: DataSpec, images_per_class: int, config: HMNConfig) -> HMNConfig:
    """Fill every 0 size from the defaults, check the settings, compute GIPC from the budget if not given."""
    if config.norm not in NORMS:
        raise ConfigError(f"hmn norm must be one of {', '.join(NORMS)} (never batch norm: images would depend on "
                          f"their batch), got '{config.norm}'")
    if config.upsample not in ("nearest", "bilinear"):
        raise ConfigError(f"hmn upsample must be 'nearest' or 'bilinear', got '{config.upsample}'")
    if config.init not in INITS:
        raise ConfigError(f"hmn init must be one of {', '.join(INITS)}, got '{config.init}'")
    if config.over_budget < 0:
        raise ConfigError(f"hmn over_budget must be >= 0, got {config.over_budget}")
    if config.instances_per_class < 0:
        raise ConfigError(f"hmn instances_per_class must be >= 0 (0: from the budget), got {config.instances_per_class}")
    defaults = default_hmn_sizes(spec, images_per_class, config.memory_size)
    names = ("dataset_channels", "feature_channels", "class_channels", "instance_channels", "decoder_width")
    for name in names:
        if getattr(config, name) < 0:
            raise ConfigError(f"hmn {name} must be >= 1 (0: default), got {getattr(config, name)}")
    filled = {name: getattr(config, name) or getattr(defaults, name) for name in names}
    config = dataclasses.replace(config, memory_size=defaults.memory_height, **filled)
    if config.instances_per_class == 0:
        sizes = _sizes_of(spec, config)
        count = budget_instances(sizes, spec, images_per_class, 1.0 + config.over_budget, config.norm)
        if count < 1:
            shared = shared_floats(sizes, spec, config.norm)
            raise BudgetError(
                f"hmn shared parts need {shared:,} floats and one instance per class "
                f"{spec.num_classes * instance_floats(sizes):,} "
                f"more, over the budget of {int((1 + config.over_budget) * spec.budget_floats(images_per_class)):,} "
                f"({1 + config.over_budget:g} x B, IPC {images_per_class}): GIPC would be {count}; lower "
                f"dataset_channels, feature_channels, class_channels, instance_channels or decoder_width, or raise the IPC")
        config = dataclasses.replace(config, instances_per_class=count)
    return config
