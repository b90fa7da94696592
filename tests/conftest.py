"""Shared fixtures. Tests that need ../shared/data fail loudly when it is missing (never skip)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from condensation.data import DataSpec, Preprocessing, Split
from condensation.engine.real import RealPool

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "FashionMNIST" / "raw").exists():
        pytest.fail(f"the real datasets are missing: expected them under {SHARED_DATA} (../shared/data)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)  # the suite runs on 2-core machines; keep runs reproducible and light
    yield


def tiny_real(spec: DataSpec, per_class: int = 12, seed: int = 0) -> tuple[RealPool, Preprocessing]:
    """A small random 'real' pool of any shape, fitted preprocessing included."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(spec.num_classes * per_class, spec.channels, spec.height, spec.width, generator=generator)
    labels = torch.arange(spec.num_classes).repeat_interleave(per_class)
    preprocessing = Preprocessing("normalize").fit(images)
    return RealPool(Split(images, labels), spec.num_classes, preprocessing), preprocessing


@pytest.fixture
def gray_spec() -> DataSpec:
    return DataSpec(1, 8, 8, 3, ("a", "b", "c"), flip_allowed=False)


@pytest.fixture
def rgb_spec() -> DataSpec:
    return DataSpec(3, 16, 16, 3, ("a", "b", "c"))
