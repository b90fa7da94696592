"""Plain pixels (DC/DSA/DM/MTT) and multi-formation (IDC's factor, used by ECHO/M3D)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import CONTAINERS, Container


@dataclass(frozen=True)
class PixelsConfig:
    init: str = "real"  # "real": random real images of each class; "noise": standard normal


@CONTAINERS.register("pixels")
class Pixels(Container):
    """(classes * IPC, C, H, W) learnable images in network-input space; budget exactly B."""

    config_class = PixelsConfig
    supports_queries = linear_queries = True  # a query blends the classes' stored images

    def __init__(self, spec, images_per_class, preprocessing, config: PixelsConfig):
        super().__init__(spec, images_per_class, preprocessing, config)
        if config.init not in ("real", "noise"):
            raise ConfigError(f"pixels init must be 'real' or 'noise', got '{config.init}'")
        shape = (spec.num_classes * images_per_class, spec.channels, spec.height, spec.width)
        self.images = nn.Parameter(torch.randn(shape))

    def generated_per_class(self) -> int:
        return self.images_per_class

    def per_class_parameters(self) -> list[torch.Tensor]:
        return [self.images]

    def _generate(self, indices, generator, mode):
        return self.images[indices]

    @torch.no_grad()
    def initialize(self, real, generator) -> None:
        if self.config.init == "real":
            for c in range(self.num_classes):
                chosen = real.sample(c, self.images_per_class, generator, replace_if_short=True)
                self.images[c * self.images_per_class:(c + 1) * self.images_per_class] = chosen

    @torch.no_grad()
    def set_images(self, images: torch.Tensor) -> None:
        """Set the stored images (class-major order), e.g. from a selection method such as herding."""
        if images.shape != self.images.shape:
            raise ConfigError(f"expected images of shape {tuple(self.images.shape)}, got {tuple(images.shape)}")
        self.images.copy_(images)

    def _query(self, weights):
        return self.mix_generated(weights)

    def prune(self, keep: torch.Tensor) -> "Pixels":
        raise NotImplementedError("pixels are pruned by choosing a smaller IPC")


@dataclass(frozen=True)
class MultiFormationConfig:
    factor: int = 2  # each stored image decodes into factor^2 images
    init: str = "mosaic"  # "mosaic": factor^2 downscaled real images per stored image; "real"; "noise"
    # how the mosaic start shrinks real images: IDC condense.py L80 calls F.interpolate without a mode (nearest)
    mosaic_interpolation: str = "nearest"  # or "bilinear" (antialiased)
    # clamp the pixels to [0, 1] after every clamp_every-th engine iteration; IDC clamps once per outer
    # iteration of 100 inner passes (condense.py L521), i.e. every 100 engine iterations (the idc recipe's value)
    clamp_every: int = 1


@CONTAINERS.register("multi_formation")
class MultiFormation(Container):
    """Stored [0, 1] pixels; each image is split into f x f crops, each upsampled to full size (IDC's
    decode_zoom), then normalized. f^2 * IPC images per class at the budget of IPC."""

    config_class = MultiFormationConfig
    # crops, bilinear upsampling and the preprocessing are affine and the weights sum to 1, so blending the
    # generated images equals blending the stored pixels before decoding
    supports_queries = linear_queries = True

    def __init__(self, spec, images_per_class, preprocessing, config: MultiFormationConfig):
        super().__init__(spec, images_per_class, preprocessing, config)
        f = config.factor
        if f < 1 or spec.height % f or spec.width % f:
            raise ConfigError(f"multi_formation factor {f} must be >= 1 and divide the image size {spec.height}x{spec.width}")
        if config.init not in ("mosaic", "real", "noise"):
            raise ConfigError(f"multi_formation init must be 'mosaic', 'real' or 'noise', got '{config.init}'")
        if config.mosaic_interpolation not in ("nearest", "bilinear"):
            raise ConfigError("multi_formation mosaic_interpolation must be 'nearest' or 'bilinear', got "
                              f"'{config.mosaic_interpolation}'")
        if config.clamp_every < 1:
            raise ConfigError(f"multi_formation clamp_every must be >= 1, got {config.clamp_every}")
        self.iterations_since_clamp = 0
        shape = (spec.num_classes * images_per_class, spec.channels, spec.height, spec.width)
        self.pixels = nn.Parameter(torch.rand(shape))  # [0, 1] pixel space

    def generated_per_class(self) -> int:
        return self.images_per_class * self.config.factor ** 2

    def per_class_parameters(self) -> list[torch.Tensor]:
        return [self.pixels]

    def _generate(self, indices, generator, mode):
        f, (c, h, w) = self.config.factor, (self.spec.channels, self.spec.height, self.spec.width)
        per_stored = f * f
        classes = torch.div(indices, self.generated_per_class(), rounding_mode="floor")
        within = indices - classes * self.generated_per_class()
        stored = self.pixels[classes * self.images_per_class + torch.div(within, per_stored, rounding_mode="floor")]
        if f > 1:
            crops = stored.view(-1, c, f, h // f, f, w // f).permute(0, 2, 4, 1, 3, 5).reshape(-1, per_stored, c, h // f, w // f)
            chosen = crops[torch.arange(len(indices), device=indices.device), within % per_stored]  # (N, C, h/f, w/f)
            stored = F.interpolate(chosen, size=(h, w), mode="bilinear", align_corners=False)
        return self.preprocessing(stored)

    def _query(self, weights):
        return self.mix_generated(weights)

    @torch.no_grad()
    def initialize(self, real, generator) -> None:
        f, ipc = self.config.factor, self.images_per_class
        if self.config.init == "noise":
            return
        count = ipc * f * f if self.config.init == "mosaic" else ipc
        h, w = self.spec.height, self.spec.width
        for c in range(self.num_classes):
            images = real.sample_raw(c, count, generator, replace_if_short=True)
            if self.config.init == "mosaic" and f > 1:
                small = (F.interpolate(images, size=(h // f, w // f), mode="nearest")
                         if self.config.mosaic_interpolation == "nearest" else
                         F.interpolate(images, size=(h // f, w // f), mode="bilinear", align_corners=False, antialias=True))
                small = small.view(ipc, f, f, self.spec.channels, h // f, w // f).permute(0, 3, 1, 4, 2, 5)
                images = small.reshape(ipc, self.spec.channels, h, w)
            self.pixels[c * ipc:(c + 1) * ipc] = images.clamp(0, 1)

    @torch.no_grad()
    def after_iteration(self) -> None:
        self.iterations_since_clamp += 1
        if self.iterations_since_clamp >= self.config.clamp_every:
            self.pixels.clamp_(0.0, 1.0)
            self.iterations_since_clamp = 0

    def training_state(self) -> dict:
        return {"iterations_since_clamp": self.iterations_since_clamp}

    def load_training_state(self, state: dict) -> None:
        self.iterations_since_clamp = int(state.get("iterations_since_clamp", 0))
