"""Factorization into bases and hallucinators (HaBa, Liu et al. 2022).
docs/methods.md, Factorization (HaBa).

Storage: bases (classes, nb, Cb, H/d, W/d) and n_h hallucinators, each (Huage001/DatasetFactorization
utils.py: StyleTranslator, read, not copied)::

    x = ConvTranspose3x3( scale * Conv3x3(upsample_d(b)) + shift )      scale, shift: (C, H-2, W-2)

with C the data's channel count (single-channel bases, Cb = 1, reach C channels through the first conv, as
in the official single-channel path). Bases live in network-input space (initialized from preprocessed real
images; single-channel: their channel mean), so hallucinations are network inputs directly.

Index layout: image i of class c is the pair (hallucinator i // nb, basis i % nb): n_h * nb per class.
- mode 'evaluate': the pair named by the index (``generate_all`` = every pair in this fixed order: the
  artifact's generated set).
- mode 'distill': one offset o is drawn per batch and index i uses hallucinator (i // nb + o) mod n_h. A batch
  of bases (indices i < nb, what ``generate_class(es)`` and ``distillation_order`` give) thus goes through ONE
  random hallucinator, the official rule; a batch of all pairs is still every pair once.
- evaluation epochs (``evaluation_source``): every basis once, each through a fresh random hallucinator.

The adversarial contrastive term (contrastive_loss.py, distill_fac.py), once per outer iteration over every
class whatever the objective's grouping: ``regularization`` embeds two hallucinations h0(b), h1(b) of all
bases with an adversary (a ConvNet, kept outside the module tree: not stored, not counted) and returns
w * mean((cos + 1) / 2); after the container's step, ``after_optimizer_steps`` draws a fresh hallucinator pair
over the updated bases and takes one adversary SGD step on CE + 0.1 mean((1 - cos) / 2) + 0.1 SupCon.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import DSA, DSAConfig, flips_allowed
from ..data.datasets import DataSpec
from ..distributed import stream_of
from ..errors import BudgetError, ConfigError
from ..networks import seeded_network
from .base import CONTAINERS, Batch, Container

BUDGET_MODES = ("strict", "paper")
PAPER_HALLUCINATORS = 5  # n_style in every official script


@dataclass(frozen=True)
class FactorizationConfig:
    budget_mode: str = "strict"  # "strict": everything fits in B; "paper": the official scripts' sizes (> B)
    hallucinators: int = 0  # n_h; 0: chosen by budget_mode (5, fewer only where 5 cannot fit)
    bases_per_class: int = 0  # nb; 0: chosen by budget_mode (paper: IPC)
    base_channels: int = 0  # Cb; 0: chosen (data channels, else 1)
    base_downsample: int = 0  # d; 0: chosen (1 = full size)
    hallucinator_share: float = 0.5  # strict sizing: hallucinators take at most this share of B (unless given)
    init: str = "real"  # "real": preprocessed real images of the class; "noise": standard normal
    adversarial: bool = True  # the adversarial contrastive term (off: the same-objective ablation)
    contrastive_weight: float = 0.1  # lambda_club_content: the container's term
    adversary_network: str = "convnet"
    adversary_learning_rate: float = 0.001
    adversary_momentum: float = 0.9
    adversary_similarity_weight: float = 0.1  # lambda_likeli_content
    adversary_contrast_weight: float = 0.1  # lambda_contrast_content
    adversary_temperature: float = 0.07
    adversary_dsa: bool = True  # the views are DSA-augmented before the adversary (official)
    # distill_fac.py augments the adversary's views with the full DSA string (flips included) on every dataset;
    # "dataset" drops flips on digit datasets
    adversary_flip_rule: str = "always"
    # lr of the hallucinators (official lr_style: the same 100 as the bases); 0: the container's lr. Their few
    # conv weights collect gradient from every pixel of every image, so at small CPU budgets they need far less
    hallucinator_learning_rate: float = 0.0


# ----------------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class HabaSizes:
    hallucinators: int
    bases_per_class: int
    base_channels: int
    base_downsample: int


def hallucinator_floats(spec: DataSpec, base_channels: int) -> int:
    """Conv3x3 (Cb -> C) + scale and shift (C, H-2, W-2) + ConvTranspose3x3 (C -> C), biases included."""
    c = spec.channels
    return (c * base_channels * 9 + c) + 2 * c * (spec.height - 2) * (spec.width - 2) + (c * c * 9 + c)


def haba_floats(spec: DataSpec, sizes: HabaSizes) -> tuple[int, int]:
    """(bases, hallucinators) stored floats."""
    d = sizes.base_downsample
    bases = spec.num_classes * sizes.bases_per_class * sizes.base_channels * (spec.height // d) * (spec.width // d)
    return bases, sizes.hallucinators * hallucinator_floats(spec, sizes.base_channels)


def _downsamples(spec: DataSpec) -> list[int]:
    """Powers of two dividing the image size that leave bases of at least 2 x 2."""
    return [d for d in (1, 2, 4, 8, 16)
            if spec.height % d == 0 and spec.width % d == 0 and min(spec.height, spec.width) // d >= 2]


def default_haba_sizes(spec: DataSpec, images_per_class: int, mode: str = "strict", hallucinators: int = 0,
                       bases_per_class: int = 0, base_channels: int = 0, base_downsample: int = 0,
                       minimum_hallucinators: int = 2, hallucinator_share: float = 0.5) -> HabaSizes:
    """Sizes for the given budget; fields passed as non-zero are kept.

    paper: n_h = 5, nb = IPC full-size bases with the data's channels (the official scripts' --ipc is nb).
    strict, a rule that keeps class content before hallucinator variety:
      1. basis formats from the richest (most floats per basis: data channels before one channel, full size
         before downsampled); the first format for which step 2 finds room wins;
      2. the most hallucinators (5 down to ``minimum_hallucinators``) whose floats stay within
         ``hallucinator_share`` of B (the official CIFAR-10 IPC 1 script spends 48% of what it stores on
         them) and leave room for one basis per class;
      3. as many bases of that format as fit in the rest.
    Fashion-MNIST IPC 1 (B = 7,840): 2 hallucinators (2,744 floats) and 2 bases of 14 x 14 per class (3,920),
    where trying 5 hallucinators first left 2 bases of 7 x 7 (980 floats, 12.5% of B) for all class content.
    """
    if mode not in BUDGET_MODES:
        raise ConfigError(f"factorization budget_mode must be one of: {', '.join(BUDGET_MODES)}; got '{mode}'")
    if mode == "paper":
        return HabaSizes(hallucinators or PAPER_HALLUCINATORS, bases_per_class or images_per_class,
                         base_channels or spec.channels, base_downsample or 1)
    if not 0 < hallucinator_share <= 1:
        raise ConfigError(f"factorization hallucinator_share must be in (0, 1], got {hallucinator_share}")
    budget = spec.budget_floats(images_per_class)
    formats = [(cb, d) for d in ([base_downsample] if base_downsample else _downsamples(spec))
               for cb in ([base_channels] if base_channels else sorted({spec.channels, 1}, reverse=True))]
    formats.sort(key=lambda f: -f[0] * (spec.height // f[1]) * (spec.width // f[1]))  # richest first (stable)
    counts = [hallucinators] if hallucinators else range(PAPER_HALLUCINATORS, minimum_hallucinators - 1, -1)
    for cb, d in formats:
        per_class = spec.num_classes * cb * (spec.height // d) * (spec.width // d)
        for n_h in counts:
            spent = n_h * hallucinator_floats(spec, cb)
            if not hallucinators and spent > hallucinator_share * budget:
                continue
            nb = bases_per_class or (budget - spent) // per_class
            if nb >= 1 and nb * per_class <= budget - spent:
                return HabaSizes(n_h, nb, cb, d)
    fixed = {"bases_per_class": bases_per_class, "base_channels": base_channels, "base_downsample": base_downsample}
    fixed = ", ".join(f"{k}={v}" for k, v in fixed.items() if v)
    raise BudgetError(
        f"factorization cannot fit in the budget B = {budget:,} (IPC {images_per_class}): "
        f"{'/'.join(str(n) for n in counts)} hallucinator(s) of {hallucinator_floats(spec, 1):,}+ floats each "
        f"(at most {hallucinator_share:g} of B unless hallucinators is given) plus "
        f"{bases_per_class or 1} basis(es) per class{' (' + fixed + ')' if fixed else ''} exceed it; use "
        "budget_mode='paper' with an explicit budget_ratio, fewer or smaller bases, or a larger IPC"
    )


# ------------------------------------------------------------------------------------------ adversary
def supervised_contrastive(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020; contrastive_loss.py, contrast_mode 'all', base temperature = temperature).
    first, second: (B, D) L2-normalized views; labels (B,)."""
    features = torch.cat([first, second])  # (2B, D)
    both = torch.cat([labels, labels])
    logits = features @ features.T / temperature
    self_mask = torch.eye(len(both), dtype=torch.bool, device=logits.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    positive = (both[:, None] == both[None, :]) & ~self_mask
    return -(log_prob * positive).sum(1).div(positive.sum(1)).mean()


class Adversary:
    """The adversary feature extractor, its SGD and its augmentation. A plain object, not an nn.Module, so the
    container's parameters, state_dict and stored floats never include it (not stored, not counted)."""

    def __init__(self, spec: DataSpec, config: FactorizationConfig, generator: torch.Generator, device):
        self.config = config
        self.network = seeded_network(config.adversary_network, spec, generator, device)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=config.adversary_learning_rate,
                                         momentum=config.adversary_momentum)
        flip = flips_allowed(config.adversary_flip_rule, spec.flip_allowed)
        self.augment = DSA(DSAConfig(), flip_allowed=flip) if config.adversary_dsa else None

    def to(self, device: torch.device) -> None:
        self.network.to(device)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.to(device)

    def embed_frozen(self, views: torch.Tensor) -> torch.Tensor:
        """Embeddings with a graph to the views only (the adversary's weights get no gradient)."""
        for p in self.network.parameters():
            p.requires_grad_(False)
        try:
            return self.network.embed(views)
        finally:
            for p in self.network.parameters():
                p.requires_grad_(True)

    def step(self, views: torch.Tensor, labels: torch.Tensor) -> float:
        """One SGD step: CE + w_s mean((1 - cos) / 2) + w_c SupCon over both views (views: (2B, ...))."""
        c = self.config
        features = self.network.embed(views)
        first, second = features.chunk(2)
        both = torch.cat([labels, labels])
        loss = (F.cross_entropy(self.network.classify(features), both)
                + c.adversary_similarity_weight * ((1 - F.cosine_similarity(first, second)) / 2).mean()
                + c.adversary_contrast_weight * supervised_contrastive(
                    F.normalize(first), F.normalize(second), labels, c.adversary_temperature))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> dict:
        return {"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])


# ------------------------------------------------------------------------------------------ container
@CONTAINERS.register("factorization")
class Factorization(Container):
    """Bases x hallucinators; n_h * nb images per class, random hallucinator per basis in evaluation."""

    config_class = FactorizationConfig
    random_per_epoch = True
    # a query mixes the classes' bases slot by slot and hallucinates the mixture; hallucinators are affine
    # (conv, scale and shift, transposed conv: no nonlinearity) and query weights sum to 1, so that equals the
    # same mixture of the classes' images
    supports_queries = linear_queries = True

    def __init__(self, spec, images_per_class, preprocessing, config: FactorizationConfig):
        super().__init__(spec, images_per_class, preprocessing, config)
        if config.init not in ("real", "noise"):
            raise ConfigError(f"factorization init must be 'real' or 'noise', got '{config.init}'")
        if min(spec.height, spec.width) < 3:
            raise ConfigError("factorization needs images of at least 3 x 3 (3x3 valid convolutions)")
        if config.base_channels not in (0, 1, spec.channels):
            raise ConfigError(f"factorization base_channels must be 1 or {spec.channels} (0: chosen), "
                              f"got {config.base_channels}")
        d = config.base_downsample
        if d < 0 or (d and (spec.height % d or spec.width % d)):
            raise ConfigError(f"factorization base_downsample {d} must divide the image size {spec.height}x{spec.width}")
        if min(config.hallucinators, config.bases_per_class) < 0:
            raise ConfigError("factorization hallucinators and bases_per_class must be >= 0 (0: chosen)")
        flips_allowed(config.adversary_flip_rule, spec.flip_allowed)  # an unknown rule fails here, by name
        if config.hallucinator_learning_rate < 0:
            raise ConfigError("factorization hallucinator_learning_rate must be >= 0 (0: the container's lr)")
        minimum = 2 if config.adversarial else 1
        if config.adversarial and config.hallucinators == 1:
            raise ConfigError("the adversarial term needs hallucinators >= 2 (two views); set adversarial=false")
        sizes = default_haba_sizes(spec, images_per_class, config.budget_mode, config.hallucinators,
                                   config.bases_per_class, config.base_channels, config.base_downsample, minimum,
                                   config.hallucinator_share)
        self.sizes = sizes
        c, cb, n_h = spec.channels, sizes.base_channels, sizes.hallucinators
        h, w = spec.height // sizes.base_downsample, spec.width // sizes.base_downsample
        inner = (spec.height - 2, spec.width - 2)
        self.bases = nn.Parameter(torch.randn(spec.num_classes, sizes.bases_per_class, cb, h, w,
                                              generator=torch.Generator().manual_seed(0)))
        # the n_h hallucinators, stacked: (n_h, ...) per official parameter
        self.encoder_weight = nn.Parameter(torch.empty(n_h, c, cb, 3, 3))  # Conv2d(Cb, C, 3)
        self.encoder_bias = nn.Parameter(torch.empty(n_h, c))
        self.scale = nn.Parameter(torch.ones(n_h, c, *inner))
        self.shift = nn.Parameter(torch.zeros(n_h, c, *inner))
        self.decoder_weight = nn.Parameter(torch.empty(n_h, c, c, 3, 3))  # ConvTranspose2d(C, C, 3): (in, out, k, k)
        self.decoder_bias = nn.Parameter(torch.empty(n_h, c))
        self._draw_hallucinators(torch.Generator().manual_seed(0))  # redrawn from the run by initialize()
        self._adversary: Adversary | None = None  # created on first use, from the run generator

    # ------------------------------------------------------------------------------------------ sizes
    def generated_per_class(self) -> int:
        return self.sizes.hallucinators * self.sizes.bases_per_class

    def construction(self) -> dict:
        """Records the resolved sizes, so the artifact rebuilds the same shapes whatever the sizing rule."""
        built = super().construction()
        built["config"].update(hallucinators=self.sizes.hallucinators, bases_per_class=self.sizes.bases_per_class,
                               base_channels=self.sizes.base_channels, base_downsample=self.sizes.base_downsample)
        return built

    def floats_per_part(self) -> dict[str, int]:
        bases, hallucinators = haba_floats(self.spec, self.sizes)
        return {"bases": bases, "hallucinators": hallucinators}

    def budget_ratio(self) -> float:
        """Stored floats / B: 1 or less in strict mode, more in paper mode."""
        return self.stored_floats() / self.budget_floats

    @property
    def declared_budget_ratio(self) -> float:
        return self.budget_ratio() if self.config.budget_mode == "paper" else 1.0

    def budget_statement(self) -> str | None:
        if self.config.budget_mode != "paper":
            return None
        s = self.sizes
        h, w = self.spec.height // s.base_downsample, self.spec.width // s.base_downsample
        return (f"{self.budget_ratio():.2f}x B, as the paper: {s.hallucinators} hallucinators and {s.bases_per_class} "
                f"basis(es) of {s.base_channels}x{h}x{w} per class (DatasetFactorization's scripts, n_style 5); "
                "budget_mode=strict fits B")

    # ------------------------------------------------------------------------------------- generation
    def hallucinate(self, bases: torch.Tensor, hallucinator: int | torch.Tensor) -> torch.Tensor:
        """bases (N, Cb, h, w) -> images (N, C, H, W). ``hallucinator``: one index for the whole batch, or
        (N,) indices (all hallucinators run as one wider convolution, then each image keeps its own)."""
        if self.sizes.base_downsample > 1:
            bases = F.interpolate(bases, size=(self.spec.height, self.spec.width), mode="bilinear", align_corners=False)
        if isinstance(hallucinator, int):
            k = hallucinator
            hidden = F.conv2d(bases, self.encoder_weight[k], self.encoder_bias[k])  # (N, C, H-2, W-2)
            return F.conv_transpose2d(self.scale[k] * hidden + self.shift[k], self.decoder_weight[k], self.decoder_bias[k])
        n_h, c = self.sizes.hallucinators, self.spec.channels
        rows = torch.arange(len(bases), device=bases.device)
        hidden = F.conv2d(bases, self.encoder_weight.flatten(0, 1), self.encoder_bias.flatten())  # (N, n_h*C, H-2, W-2)
        hidden = hidden.unflatten(1, (n_h, c))[rows, hallucinator]  # (N, C, H-2, W-2)
        hidden = self.scale[hallucinator] * hidden + self.shift[hallucinator]
        weight = self.decoder_weight.permute(1, 0, 2, 3, 4).flatten(1, 2)  # (C, n_h*C, 3, 3)
        out = F.conv_transpose2d(hidden, weight, self.decoder_bias.flatten())  # (N, n_h*C, H, W)
        return out.unflatten(1, (n_h, c))[rows, hallucinator]

    def _split(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """global indices -> (class, hallucinator, basis)."""
        nb = self.sizes.bases_per_class
        classes = torch.div(indices, self.generated_per_class(), rounding_mode="floor")
        within = indices - classes * self.generated_per_class()
        return classes, torch.div(within, nb, rounding_mode="floor"), within % nb

    def _generate(self, indices, generator, mode):
        classes, hallucinators, basis = self._split(indices)
        if mode == "distill":
            offset = int(torch.randint(self.sizes.hallucinators, (1,), generator=generator)) if generator is not None else 0
            hallucinators = (hallucinators + offset) % self.sizes.hallucinators
        first = int(hallucinators[0]) if len(indices) else 0
        same = bool((hallucinators == first).all())  # one hallucinator for the batch: the cheap path
        return self.hallucinate(self.bases[classes, basis], first if same else hallucinators)

    def _query(self, weights):
        """Image i = j * nb + b of a query (the artifact's fixed order): hallucinator j of sum_c w_c bases[c, b]."""
        count, n_h, nb = len(weights), self.sizes.hallucinators, self.sizes.bases_per_class
        mixed = torch.einsum("qc,cb...->qb...", weights.to(self.bases), self.bases)  # (Q, nb, Cb, h, w)
        bases = mixed.unsqueeze(1).expand(count, n_h, *mixed.shape[1:]).flatten(0, 2)  # (Q * n_h * nb, Cb, h, w)
        hallucinators = torch.arange(n_h, device=bases.device).repeat_interleave(nb).repeat(count)  # j per image
        images = self.hallucinate(bases, hallucinators)
        return images.view(count, n_h * nb, *images.shape[1:])

    def _basis_indices(self, class_index: int, count: int | None, generator: torch.Generator) -> torch.Tensor:
        """Global indices of up to ``count`` random bases of a class (hallucinator part 0)."""
        nb = self.sizes.bases_per_class
        chosen = torch.arange(nb)
        if count is not None and count < nb:
            chosen = torch.randperm(nb, generator=generator)[:count]
        return class_index * self.generated_per_class() + chosen

    def generate_class(self, class_index, count, generator):
        """Up to ``count`` bases of the class (never a basis twice), through one random hallucinator."""
        return self.generate(self._basis_indices(class_index, count, generator), generator)

    def generate_classes(self, classes, count, generator):
        """Up to ``count`` bases of each class, all through one random hallucinator (official distillation);
        one per class under ``ClassStreams`` (class-sharded runs)."""
        return self.generate_parts(classes, [self._basis_indices(c, count, stream_of(generator, c)) for c in classes],
                                   generator)

    def distillation_order(self, generator):
        """Every basis of every class once, in random order, as the index of its pair with hallucinator 0:
        ``_generate`` then shifts the whole batch to one random hallucinator."""
        bases = torch.cat([self._basis_indices(c, None, generator) for c in range(self.num_classes)])
        return bases[torch.randperm(len(bases), generator=generator)]

    def evaluation_source(self):
        """Per epoch: every basis once, each through a fresh random hallucinator (nb images per class)."""
        def epoch(generator: torch.Generator):
            with torch.no_grad():
                classes = torch.arange(self.num_classes).repeat_interleave(self.sizes.bases_per_class)
                basis = torch.arange(self.sizes.bases_per_class).repeat(self.num_classes)
                drawn = torch.randint(self.sizes.hallucinators, (len(classes),), generator=generator)
                device = self.device
                classes, basis, drawn = classes.to(device), basis.to(device), drawn.to(device)
                images = torch.cat([self.hallucinate(self.bases[cl, bs], hl) for cl, bs, hl in
                                    zip(classes.split(1024), basis.split(1024), drawn.split(1024))])
            return Batch(images, classes)

        return epoch

    # -------------------------------------------------------------------------------- initialization
    @torch.no_grad()
    def _draw_hallucinators(self, generator: torch.Generator) -> None:
        """torch's Conv2d / ConvTranspose2d defaults (bounds 1/sqrt(fan_in)); scale 1 and shift 0 (official)."""
        def uniform(tensor: torch.Tensor, fan_in: int) -> None:
            bound = 1.0 / math.sqrt(fan_in)
            tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound)

        cb, c = self.sizes.base_channels, self.spec.channels
        uniform(self.encoder_weight, cb * 9)
        uniform(self.encoder_bias, cb * 9)
        uniform(self.decoder_weight, c * 9)  # ConvTranspose2d's fan_in is its weight.size(1) * k * k = C * 9
        uniform(self.decoder_bias, c * 9)
        self.scale.fill_(1.0)
        self.shift.fill_(0.0)

    @torch.no_grad()
    def initialize(self, real, generator) -> None:
        """Bases from preprocessed real images of their class (single-channel: the channel mean; downsampled:
        2-D average pooling), or standard normal noise; hallucinators redrawn from the run generator."""
        self._draw_hallucinators(generator)
        if self.config.init == "noise":
            self.bases.copy_(torch.randn(self.bases.shape, generator=generator))
            return
        nb, d = self.sizes.bases_per_class, self.sizes.base_downsample
        for c in range(self.num_classes):
            images = real.sample(c, nb, generator, replace_if_short=True)  # (nb, C, H, W), network-input space
            if self.sizes.base_channels == 1:
                images = images.mean(dim=1, keepdim=True)
            if d > 1:
                images = F.avg_pool2d(images, d)
            self.bases[c] = images

    # ------------------------------------------------------------------------------ adversarial term
    def _two_views(self, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Every basis of every class through two distinct random hallucinators, DSA-augmented as the adversary
        sees them: (2B, C, H, W) views and (B,) labels (distill_fac.py: all classes' bases, batch_syn = all)."""
        pair = torch.randperm(self.sizes.hallucinators, generator=generator)[:2].tolist()
        bases = self.bases.flatten(0, 1)  # (B, Cb, h, w), B = classes * nb
        labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(self.sizes.bases_per_class)
        views = torch.cat([self.hallucinate(bases, pair[0]), self.hallucinate(bases, pair[1])])
        if self._adversary.augment is not None:
            views = self._adversary.augment(views, generator)
        return views, labels

    def _ensure_adversary(self, generator) -> Adversary:
        if self._adversary is None:
            self._adversary = Adversary(self.spec, self.config, generator, self.device)
        elif next(self._adversary.network.parameters()).device != self.device:
            self._adversary.to(self.device)
        return self._adversary

    def regularization(self, generator):
        """w * mean((cos(e0, e1) + 1) / 2) over two hallucinations of every class's bases (push them apart),
        seen by the current adversary, whose weights get no gradient. Once per iteration, as distill_fac.py."""
        if not self.config.adversarial:
            return None
        adversary = self._ensure_adversary(generator)
        views, _ = self._two_views(generator)
        first, second = adversary.embed_frozen(views).chunk(2)
        return self.config.contrastive_weight * ((F.cosine_similarity(first, second) + 1) / 2).mean()

    def after_optimizer_steps(self, generator) -> None:
        """The adversary's own SGD step after the container's, on a fresh draw of views of the updated bases
        (a new hallucinator pair, not the container's: distill_fac.py L388-417)."""
        if not self.config.adversarial:
            return
        adversary = self._ensure_adversary(generator)
        with torch.no_grad():
            views, labels = self._two_views(generator)
        adversary.step(views, labels)

    def per_class_parameters(self) -> list[torch.Tensor]:
        return [self.bases]  # the hallucinators are shared by every class

    def parameter_groups(self, learning_rate: float) -> list[dict]:
        hallucinator = [self.encoder_weight, self.encoder_bias, self.scale, self.shift, self.decoder_weight,
                        self.decoder_bias]
        rate = self.config.hallucinator_learning_rate or learning_rate
        return [{"params": [self.bases], "lr": learning_rate}, {"params": hallucinator, "lr": rate}]

    def training_state(self) -> dict:
        """What a resumed run needs beyond state_dict (the adversary and its optimizer; not stored in artifacts)."""
        return {} if self._adversary is None else {"adversary": self._adversary.state_dict()}

    def load_training_state(self, state: dict, generator: torch.Generator | None = None) -> None:
        if "adversary" in state:
            if self._adversary is None:
                generator = generator or torch.Generator().manual_seed(0)  # the weights are overwritten below
                self._adversary = Adversary(self.spec, self.config, generator, self.device)
            self._adversary.load_state_dict(state["adversary"])

    @property
    def adversary(self) -> Adversary | None:
        return self._adversary


def paper_budget_ratio(spec: DataSpec, images_per_class: int) -> float:
    """Stored / B of the official scripts' sizes (5 hallucinators, IPC full bases): what a run allows."""
    sizes = default_haba_sizes(spec, images_per_class, "paper")
    return sum(haba_floats(spec, sizes)) / spec.budget_floats(images_per_class)


__all__ = ["Factorization", "FactorizationConfig", "HabaSizes", "default_haba_sizes", "haba_floats",
           "hallucinator_floats", "paper_budget_ratio", "supervised_contrastive"]
