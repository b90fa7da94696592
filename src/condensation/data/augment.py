"""Differentiable siamese augmentation (DSA, Zhao & Bilen 2021) and CutMix.

All randomness comes from an explicit CPU ``torch.Generator``. ``shared=True`` draws one parameter set for
the whole batch; restoring the generator state and calling again with ``shared=True`` reproduces the same
transform on another batch of any size: that is the siamese use (see ``siamese``).
Parameters follow DC's ParamDiffAug (docs/methods.md, DSA parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError

OPERATIONS = ("color", "crop", "cutout", "flip", "scale", "rotate")
AUGMENT_MODES = ("single", "each", "chain", "idc")
GEOMETRIC = ("crop", "scale", "rotate")  # IDC's training augmentation draws one of these per call


@dataclass(frozen=True)
class DSAConfig:
    strategy: str = "color_crop_cutout_flip_scale_rotate"
    # "single": one operation drawn per call (DC, DSA, MTT); "each": one drawn per image (DC's augment() for
    # its MNIST evaluation); "chain": all in order (IDC's matching);
    # "idc": IDC's training augmentation: flip, color, then one of crop/scale/rotate drawn per call, then cutout
    mode: str = "single"
    flip_probability: float = 0.5
    scale_ratio: float = 1.2
    scale_low: float = 0.0  # lower end of the scale factor; 0: 1 / scale_ratio (DSA); DC's get_daparam: 0.8
    rotate_degrees: float = 15.0
    crop_pad_ratio: float = 0.125
    cutout_ratio: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        unknown = [op for op in self.operations if op not in OPERATIONS]
        if unknown:
            raise ConfigError(f"unknown augmentation(s) {unknown}; choose from: {', '.join(OPERATIONS)}")
        if self.mode not in AUGMENT_MODES:
            raise ConfigError(f"augmentation mode must be one of {', '.join(AUGMENT_MODES)}, got '{self.mode}'")

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(op for op in self.strategy.split("_") if op)


FLIP_RULES = ("always", "dataset")


def flips_allowed(flip_rule: str, dataset_allows_flips: bool) -> bool:
    """"always": flips for every dataset (DC/DSA strategy strings, DM, MTT); "dataset": not for digit datasets
    (MNIST, SVHN: IDC and the DSA README), where a flipped digit is another digit or none."""
    if flip_rule not in FLIP_RULES:
        raise ConfigError(f"flip_rule must be one of {', '.join(FLIP_RULES)}, got '{flip_rule}'")
    return dataset_allows_flips if flip_rule == "dataset" else True


class DSA:
    """Callable augmentation: ``dsa(x, generator, shared=False)``; differentiable w.r.t. ``x``."""

    def __init__(self, config: DSAConfig | None = None, flip_allowed: bool = True):
        config = config or DSAConfig()
        ops = config.operations if flip_allowed else tuple(o for o in config.operations if o != "flip")
        self.config = config
        self.operations = ops

    def __call__(self, x: torch.Tensor, generator: torch.Generator, shared: bool = False) -> torch.Tensor:
        if not self.operations:
            return x
        if self.config.mode == "single":
            choice = int(torch.randint(len(self.operations), (1,), generator=generator))
            ops = (self.operations[choice],)
        elif self.config.mode == "each":
            return self._one_per_image(x, generator, 1 if shared else x.shape[0])
        elif self.config.mode == "idc":
            geometric = [op for op in GEOMETRIC if op in self.operations]
            ops = [op for op in ("flip", "color") if op in self.operations]
            if geometric:
                ops.append(geometric[int(torch.randint(len(geometric), (1,), generator=generator))])
            if "cutout" in self.operations:
                ops.append("cutout")
        else:
            ops = self.operations
        for op in ops:
            x = getattr(self, f"_{op}")(x, generator, 1 if shared else x.shape[0])
        return x

    def _one_per_image(self, x, generator, n):
        """Every image gets one operation of its own (drawn first), each operation's parameters per image."""
        choice = torch.randint(len(self.operations), (n,), generator=generator).to(x.device).view(-1, 1, 1, 1)
        out = x
        for index, op in enumerate(self.operations):
            out = torch.where(choice == index, getattr(self, f"_{op}")(x, generator, n), out)
        return out

    # Each operation draws (n, ...) parameters on the CPU generator; n == 1 broadcasts to the batch.
    def _uniform(self, n: int, generator: torch.Generator, device) -> torch.Tensor:
        return torch.rand(n, generator=generator).to(device)

    def _color(self, x, generator, n):
        c = self.config
        shape = (-1, 1, 1, 1)
        x = x + (self._uniform(n, generator, x.device).view(shape) - 0.5) * c.brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (self._uniform(n, generator, x.device).view(shape) * c.saturation) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (self._uniform(n, generator, x.device).view(shape) + c.contrast) + mean

    def _affine(self, x, theta):  # theta: (n, 2, 3)
        theta = theta.expand(x.shape[0], 2, 3).to(dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def _scale(self, x, generator, n):
        r = self.config.scale_ratio
        low = self.config.scale_low or 1.0 / r
        sx = torch.rand(n, generator=generator) * (r - low) + low
        sy = torch.rand(n, generator=generator) * (r - low) + low
        zeros = torch.zeros(n)
        theta = torch.stack([torch.stack([sx, zeros, zeros], 1), torch.stack([zeros, sy, zeros], 1)], 1)
        return self._affine(x, theta.to(x.device))

    def _rotate(self, x, generator, n):
        angle = (torch.rand(n, generator=generator) - 0.5) * 2 * self.config.rotate_degrees / 180 * math.pi
        cos, sin, zeros = angle.cos(), angle.sin(), torch.zeros(n)
        theta = torch.stack([torch.stack([cos, sin, zeros], 1), torch.stack([-sin, cos, zeros], 1)], 1)
        return self._affine(x, theta.to(x.device))

    def _flip(self, x, generator, n):
        flip = (torch.rand(n, generator=generator) < self.config.flip_probability).to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(3), x)

    def _crop(self, x, generator, n):
        """Integer translation by up to crop_pad_ratio of the size, zero fill (DC's rand_crop)."""
        _, _, h, w = x.shape
        shift_h, shift_w = int(h * self.config.crop_pad_ratio + 0.5), int(w * self.config.crop_pad_ratio + 0.5)
        ty = torch.randint(-shift_h, shift_h + 1, (n,), generator=generator).to(x.device)
        tx = torch.randint(-shift_w, shift_w + 1, (n,), generator=generator).to(x.device)
        ty, tx = ty.expand(x.shape[0]), tx.expand(x.shape[0])
        rows = (torch.arange(h, device=x.device)[None, :] + ty[:, None] + 1).clamp(0, h + 1)  # (N, H)
        cols = (torch.arange(w, device=x.device)[None, :] + tx[:, None] + 1).clamp(0, w + 1)  # (N, W)
        padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (N, H+2, W+2, C)
        batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
        return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def _cutout(self, x, generator, n):
        _, _, h, w = x.shape
        size_h, size_w = int(h * self.config.cutout_ratio + 0.5), int(w * self.config.cutout_ratio + 0.5)
        cy = torch.randint(0, h + (1 - size_h % 2), (n,), generator=generator).to(x.device)
        cx = torch.randint(0, w + (1 - size_w % 2), (n,), generator=generator).to(x.device)
        ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_y = (ys[None, :] >= cy[:, None] - size_h // 2) & (ys[None, :] < cy[:, None] - size_h // 2 + size_h)
        in_x = (xs[None, :] >= cx[:, None] - size_w // 2) & (xs[None, :] < cx[:, None] - size_w // 2 + size_w)
        keep = ~(in_y[:, :, None] & in_x[:, None, :])  # (n, H, W)
        return x * keep.unsqueeze(1).to(x.dtype)


def siamese(augment: DSA | None, batches: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """Apply one shared draw of ``augment`` to every batch (real and synthetic see the same transform)."""
    if augment is None:
        return batches
    state = generator.get_state()
    out = []
    for batch in batches:
        generator.set_state(state)
        out.append(augment(batch, generator, shared=True))
    return out


def cutmix(x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, beta: float = 1.0):
    """CutMix (Yun et al. 2019) as IDC uses it in evaluation. Returns (images, labels_a, labels_b, lam)."""
    n, _, h, w = x.shape
    lam = _beta(beta, generator)
    permutation = torch.randperm(n, generator=generator).to(x.device)
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(h, (1,), generator=generator)), int(torch.randint(w, (1,), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[permutation, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    return mixed, labels, labels[permutation], lam


def _beta(beta: float, generator: torch.Generator) -> float:
    """Beta(beta, beta) from the explicit generator; only beta = 1 (uniform, IDC's value) is offered."""
    if beta != 1.0:
        raise ConfigError("cutmix supports beta = 1.0 only (IDC's setting)")
    return float(torch.rand(1, generator=generator))


EVALUATION_AUGMENTATIONS = ("dsa", "dc_digits", "none")


def make_evaluation_augment(augmentation: str, mode: str, flip_allowed: bool,
                            strategy: str = DSAConfig.strategy) -> DSA | None:
    """A protocol's training augmentation: "dsa" (DSA's operations; ``mode`` and ``strategy`` as the
    protocol says), "dc_digits" (DC's MNIST evaluation, utils.get_daparam: each image gets one of crop by up
    to 4 px, scale in [0.8, 1.2], rotate by up to 45 degrees; fills are zero, the mean of normalized images), or
    "none"."""
    if augmentation == "none":
        return None
    if augmentation == "dc_digits":
        return DSA(DSAConfig(strategy="crop_scale_rotate", mode="each", scale_low=0.8, rotate_degrees=45.0))
    return DSA(DSAConfig(mode=mode, strategy=strategy), flip_allowed=flip_allowed)
