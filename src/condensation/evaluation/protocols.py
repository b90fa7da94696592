"""Evaluation protocol presets: data, carried with every result (METHODS.md section 3)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
    augmentation: str = "dsa"  # "dsa" or "none"
    augment_mode: str = "single"
    flip_rule: str = "always"  # "always": flips for every dataset (DC/DM code); "dataset": off for digits (IDC)
    cutmix_probability: float = 0.0
    use_learned_learning_rate: bool = False  # MTT: train with the artifact's learned step size
    test_limit: int = 0  # 0: the full test set
    description: str = ""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule '{self.schedule}'; choose one of: {', '.join(SCHEDULES)}")
        if self.augmentation not in ("dsa", "none"):
            raise ConfigError(f"augmentation must be 'dsa' or 'none', got '{self.augmentation}'")
        if self.flip_rule not in ("always", "dataset"):
            raise ConfigError(f"flip_rule must be 'always' or 'dataset', got '{self.flip_rule}'")
        if self.networks < 1 or (self.steps < 1 and self.epochs < 1):
            raise ConfigError("a protocol needs networks >= 1 and steps or epochs >= 1")

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
        Protocol("idc", epochs=1000, batch_size=64, schedule="idc", cutmix_probability=0.5, flip_rule="dataset",
                 networks=5, description="IDC/ECHO: batch 64, DSA + CutMix p=0.5, lr x0.2 at 2/3 and 5/6"),
        Protocol("hmn", epochs=1000, batch_size=64, schedule="cosine", cutmix_probability=0.5, flip_rule="dataset",
                 networks=10, description="HMN: as IDC with a cosine schedule"),
        Protocol("rtp", epochs=300, batch_size=640, schedule="constant", networks=10,
                 description="RTP: 300 epochs, batch 640, no schedule, 10 networks"),
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
