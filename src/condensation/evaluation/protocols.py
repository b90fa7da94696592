"""Evaluation protocol presets: data, carried with every result (docs/methods.md, Evaluation protocols)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..data.augment import DSAConfig
from ..data.augment import EVALUATION_AUGMENTATIONS
from ..errors import ConfigError
from ..registry import build_config

SCHEDULES = ("step_half", "idc", "cosine", "constant")


@dataclass(frozen=True)
class Protocol:
    name: str
    architectures: tuple[str, ...] = ("convnet",)
    networks: int = 5  # seeded networks trained per architecture
    epochs: int = 1000  # used when steps == 0
    steps: int = 0  # > 0: a fixed number of SGD steps per network, whatever the generated set's size
    batch_size: int = 256
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step_half"  # step_half: x0.1 at the middle; idc: x0.2 at 2/3 and 5/6; cosine; constant
    augmentation: str = "dsa"  # "dsa", "dc_digits" (DC's MNIST evaluation) or "none"
    augment_mode: str = "single"  # DSA: "single" (one operation per call), "idc" (IDC's train.py order), "chain"
    augment_strategy: str = "color_crop_cutout_flip_scale_rotate"
    flip_rule: str = "always"  # "always": flips for every dataset (DC/DM code); "dataset": off for digits (IDC)
    cutmix_probability: float = 0.0
    use_learned_learning_rate: bool = False  # MTT: train with the artifact's learned step size
    test_limit: int = 0  # 0: the full test set
    description: str = ""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule '{self.schedule}'; choose one of: {', '.join(SCHEDULES)}")
        if self.augmentation not in EVALUATION_AUGMENTATIONS:
            raise ConfigError(f"augmentation must be one of {', '.join(EVALUATION_AUGMENTATIONS)}, "
                              f"got '{self.augmentation}'")
        DSAConfig(strategy=self.augment_strategy, mode=self.augment_mode)  # validates both
        if self.flip_rule not in ("always", "dataset"):
            raise ConfigError(f"flip_rule must be 'always' or 'dataset', got '{self.flip_rule}'")
        if self.networks < 1 or (self.steps < 1 and self.epochs < 1) or min(self.steps, self.epochs) < 0:
            raise ConfigError("a protocol needs networks >= 1 and steps or epochs >= 1 (neither negative)")
        if not self.learning_rate > 0 or self.batch_size < 1:
            raise ConfigError(f"a protocol needs learning_rate > 0 and batch_size >= 1, got {self.learning_rate} "
                              f"and {self.batch_size}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0 or not 0 <= self.cutmix_probability <= 1:
            raise ConfigError("a protocol needs 0 <= momentum < 1, weight_decay >= 0 and 0 <= cutmix_probability <= 1")
        if self.test_limit < 0:
            raise ConfigError(f"test_limit must be >= 0 (0: the full test set), got {self.test_limit}")

    def settings(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("dc", epochs=300, augmentation="none", networks=20,
                 description="DC without augmentation: 300 epochs, lr x0.1 at the middle"),
        Protocol("dsa", epochs=1000, networks=20, description="DC/DSA/DM: 1000 epochs with DSA, lr x0.1 at the middle"),
        Protocol("mtt", epochs=1000, use_learned_learning_rate=True, networks=5,
                 description="MTT: 1000 epochs with DSA, the learned step size; no checkpoint selection"),
        # IDC test.py/train.py: per image flip (not on MNIST/SVHN), color, then one of crop/scale/rotate drawn
        # per batch; no cutout because CutMix (p = 0.5 per batch) is on
        Protocol("idc", epochs=1000, batch_size=64, schedule="idc", cutmix_probability=0.5, flip_rule="dataset",
                 augment_mode="idc", augment_strategy="color_crop_flip_scale_rotate", networks=5,
                 description="IDC/ECHO: 1000 epochs at batch 64, flip + color + one of crop/scale/rotate (IDC's "
                             "train.py), CutMix p=0.5, lr x0.2 at 2/3 and 5/6"),
        Protocol("hmn", epochs=1000, batch_size=64, schedule="cosine", cutmix_probability=0.5, flip_rule="dataset",
                 augment_mode="idc", augment_strategy="color_crop_flip_scale_rotate", networks=10,
                 description="HMN: as IDC (IDC's augmentation and CutMix) with a cosine schedule, 10 networks"),
        # RememberThePast configs/compressors_bptt_interventions.yml:10-48, tools/evaluator.py:65: the
        # evaluation augments as the inner loop did (the README: none) and has no weight decay
        Protocol("rtp", epochs=300, batch_size=640, schedule="constant", networks=10, augmentation="none",
                 weight_decay=0.0,
                 description="RTP: 300 epochs, batch 640, constant lr 0.01, no weight decay, no augmentation "
                             "(as its inner loop), 10 networks"),
        Protocol("cpu", steps=200, batch_size=128, networks=3, flip_rule="dataset",
                 description="tables made on 2-core CPUs: ConvNet, DSA, 200 SGD steps of a full batch (<=128) per network "
                             "(the same compute for every row), lr x0.1 at half, flips as IDC (off for digits), "
                             "the full test set"),
        Protocol("smoke", steps=4, batch_size=32, networks=1, flip_rule="dataset", test_limit=500,
                 description="seconds, for tests: 4 steps, 500 test images"),
    )
}


def get_protocol(name: str, **overrides) -> Protocol:
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol '{name}'; choose one of: {', '.join(sorted(PROTOCOLS))}")
    base = PROTOCOLS[name]
    if not overrides:
        return base
    fields = {**base.settings(), **overrides}
    return build_config(Protocol, fields, f"protocol '{name}'")
