"""Preprocessing fitted on the training split and saved with every artifact.

``forward`` maps [0, 1] images to network-input space; ``inverse`` maps back for viewing. ZCA follows
MTT and HaBa: with ZCA their datasets skip the per-channel normalization (``transforms.ToTensor()`` only), and
kornia's ZCAWhitening (eps 0.1, unbiased covariance) is fitted on the whole training split of raw [0, 1]
pixels. Artifacts and expert buffers made before this order was fixed whitened normalized images; their
saved config lacks ``zca_input`` and loads as ``zca_input='normalized'``, which reproduces them exactly.
"""
from __future__ import annotations

import torch

from ..errors import ArtifactError, ConfigError

KINDS = ("normalize", "zca", "none")
ZCA_INPUTS = ("pixels", "normalized")  # what ZCA whitens: raw [0, 1] pixels (MTT/HaBa) or normalized ones (legacy)


class Preprocessing:
    def __init__(self, kind: str = "normalize", zca_epsilon: float = 0.1, zca_input: str = "pixels"):
        if kind not in KINDS:
            raise ConfigError(f"unknown preprocessing '{kind}'; choose one of: {', '.join(KINDS)}")
        if zca_input not in ZCA_INPUTS:
            raise ConfigError(f"unknown zca_input '{zca_input}'; choose one of: {', '.join(ZCA_INPUTS)}")
        self.kind = kind
        self.zca_epsilon = zca_epsilon
        self.zca_input = zca_input
        self.tensors: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, images: torch.Tensor) -> "Preprocessing":
        """images: (N, C, H, W) in [0, 1]."""
        channels = images.shape[1]
        if self.kind == "none":
            mean, std = torch.zeros(channels), torch.ones(channels)
        else:
            mean = images.mean(dim=(0, 2, 3)).double()
            std = images.transpose(0, 1).reshape(channels, -1).double().std(dim=1)
            mean, std = mean.float(), std.float().clamp_min(1e-6)  # a constant channel must not divide by 0
        self.tensors = {"mean": mean, "std": std}
        if self.kind == "zca":
            flat = self._zca_input(images).reshape(images.shape[0], -1).double()
            flat_mean = flat.mean(dim=0)
            centered = flat - flat_mean
            covariance = centered.T @ centered / (flat.shape[0] - 1)
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
            scale = (eigenvalues + self.zca_epsilon).rsqrt()
            inverse_scale = (eigenvalues + self.zca_epsilon).sqrt()
            self.tensors["zca_mean"] = flat_mean.float()
            self.tensors["zca_matrix"] = ((eigenvectors * scale) @ eigenvectors.T).float()
            self.tensors["zca_inverse"] = ((eigenvectors * inverse_scale) @ eigenvectors.T).float()
        return self

    # ------------------------------------------------------------------------------------- transforms
    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = self.tensors["mean"].to(images.device).view(1, -1, 1, 1)
        std = self.tensors["std"].to(images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def _zca_input(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.zca_input == "pixels" else self._normalize(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> network-input space (differentiable)."""
        self._check_fitted()
        if self.kind != "zca":
            return self._normalize(images)
        out = self._zca_input(images)
        shape = out.shape
        flat = out.reshape(shape[0], -1) - self.tensors["zca_mean"].to(out.device)
        return (flat @ self.tensors["zca_matrix"].to(out.device).T).reshape(shape)

    __call__ = forward

    def inverse(self, inputs: torch.Tensor) -> torch.Tensor:
        """Network-input space -> [0, 1] pixels, for viewing."""
        self._check_fitted()
        out = inputs
        if self.kind == "zca":
            shape = out.shape
            flat = out.reshape(shape[0], -1) @ self.tensors["zca_inverse"].to(out.device).T
            out = (flat + self.tensors["zca_mean"].to(out.device)).reshape(shape)
            if self.zca_input == "pixels":
                return out
        mean = self.tensors["mean"].to(out.device).view(1, -1, 1, 1)
        std = self.tensors["std"].to(out.device).view(1, -1, 1, 1)
        return out * std + mean

    # ---------------------------------------------------------------------------------- serialization
    def config(self) -> dict:
        return {"kind": self.kind, "zca_epsilon": self.zca_epsilon, "zca_input": self.zca_input}

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "Preprocessing":
        # saved before zca_input existed: ZCA then whitened normalized images
        pre = cls(config["kind"], config.get("zca_epsilon", 0.1), config.get("zca_input", "normalized"))
        needed = {"mean", "std"} | ({"zca_mean", "zca_matrix", "zca_inverse"} if pre.kind == "zca" else set())
        missing = needed - set(tensors)
        if missing:
            raise ArtifactError(f"preprocessing state is missing {sorted(missing)}")
        pre.tensors = dict(tensors)
        return pre

    def _check_fitted(self) -> None:
        if not self.tensors:
            raise RuntimeError("Preprocessing used before fit()")
