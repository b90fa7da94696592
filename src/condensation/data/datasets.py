"""Labelled image datasets held in memory as tensors, each built by name.

Every dataset follows one constructor order (torchvision's): ``root, download``. Images are float32 in
[0, 1], shape (N, C, H, W); labels int64. A validation split (class-balanced, 10% by default, with a
fixed seed of its own) is carved out of the training set once, so every run sees the same split.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import ConfigError, DataError
from ..registry import Registry

DATASETS: Registry["DatasetBuilder"] = Registry("dataset")
DatasetBuilder = Callable[..., "RawSplits"]

VALIDATION_SEED = 20240817  # fixed on purpose: the same validation split for every run and every seed


@dataclass(frozen=True)
class DataSpec:
    """What a container, network or budget needs to know about a dataset."""

    channels: int
    height: int
    width: int
    num_classes: int
    class_names: tuple[str, ...] = ()
    # digit datasets turn off horizontal flips (IDC's rule); the preset says which rule it follows
    flip_allowed: bool = True

    @property
    def image_floats(self) -> int:
        return self.channels * self.height * self.width

    def budget_floats(self, images_per_class: int) -> int:
        """The field's storage budget B = classes x IPC x C x H x W."""
        return self.num_classes * images_per_class * self.image_floats


# (channels, height, width, classes) of the registered datasets with fixed shapes: what `show-recipe` needs to
# size a container without reading any data
PUBLISHED_SHAPES = {"digits": (1, 8, 8, 10), "mnist": (1, 28, 28, 10), "fashion_mnist": (1, 28, 28, 10),
                    "cifar10": (3, 32, 32, 10), "cifar100": (3, 32, 32, 100), "svhn": (3, 32, 32, 10),
                    "tiny_imagenet": (3, 64, 64, 200)}


def published_spec(name: str) -> DataSpec | None:
    """The DataSpec of a fixed-shape dataset (class names as indices), or None (image folders)."""
    if name not in PUBLISHED_SHAPES:
        return None
    c, h, w, k = PUBLISHED_SHAPES[name]
    return DataSpec(c, h, w, k, tuple(str(i) for i in range(k)))


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"bad split shapes: images {tuple(self.images.shape)}, labels {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """(image (C, H, W) in [0, 1], label): a map-style dataset, so a DataLoader can batch a split."""
        return self.images[index], int(self.labels[index])

    def class_indices(self, num_classes: int) -> list[torch.Tensor]:
        """Per-class index: element c holds the positions of class c."""
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels, minlength=num_classes).tolist()
        return list(torch.split(order, counts))


@dataclass
class RawSplits:
    """What a dataset builder returns: train and test in [0, 1] plus names."""

    train: Split
    test: Split
    class_names: tuple[str, ...]
    flip_allowed: bool = True


@dataclass
class Dataset:
    """A dataset by name with its train (validation removed), validation and test splits."""

    name: str
    spec: DataSpec
    train: Split
    validation: Split
    test: Split
    source: dict = field(default_factory=dict)

    def class_indices(self) -> list[torch.Tensor]:
        return self.train.class_indices(self.spec.num_classes)


def split_validation(train: Split, num_classes: int, fraction: float) -> tuple[Split, Split]:
    """Class-balanced validation split with its own fixed seed (independent of the run seed)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    keep, held = [], []
    for indices in train.class_indices(num_classes):
        permuted = indices[torch.randperm(len(indices), generator=generator)]
        n_val = int(round(fraction * len(indices)))
        if fraction > 0 and len(indices) > 1:
            n_val = max(1, min(n_val, len(indices) - 1))
        held.append(permuted[:n_val])
        keep.append(permuted[n_val:])
    keep_idx = torch.sort(torch.cat(keep)).values
    held_idx = torch.sort(torch.cat(held)).values
    return (
        Split(train.images[keep_idx], train.labels[keep_idx]),
        Split(train.images[held_idx], train.labels[held_idx]),
    )


def load_dataset(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    validation_fraction: float = 0.1,
    classes: list[int] | tuple[int, ...] | None = None,
    **settings,
) -> Dataset:
    """Build a dataset by name (see ``DATASETS.names()``); ``root`` is its folder; ``settings`` go to its
    builder (image_folder: ``image_size``). ``classes`` keeps only those classes (``class_subset``): a run's
    ``dataset_settings = {classes = [3, 7]}`` condenses two classes of a dataset, as continual learning does."""
    builder = DATASETS.get(name)
    if root is not None and not download and not Path(root).exists():
        raise DataError(f"dataset root '{root}' does not exist")
    accepted = set(inspect.signature(builder).parameters) - {"root", "download"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise DataError(f"dataset '{name}' takes no setting(s) {', '.join(unknown)}"
                        f"{'; it takes: ' + ', '.join(sorted(accepted)) if accepted else ''}")
    raw = builder(root=root, download=download, **settings)
    num_classes = len(raw.class_names)
    train, validation = split_validation(raw.train, num_classes, validation_fraction)
    _, c, h, w = raw.train.images.shape
    spec = DataSpec(c, h, w, num_classes, tuple(raw.class_names), raw.flip_allowed)
    dataset = Dataset(name, spec, train, validation, raw.test, {"root": str(root) if root else None})
    return dataset if classes is None else class_subset(dataset, classes)


def class_subset(dataset: Dataset, classes: list[int] | tuple[int, ...]) -> Dataset:
    """Only the images of ``classes`` (indices into ``dataset``'s classes), relabelled 0..k-1 in the order
    given. The validation split is the full dataset's, restricted: a class keeps the same training and
    validation images whichever subset it is part of."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) or not classes:
        raise ConfigError(f"dataset '{dataset.name}': classes must be a non-empty list of class indices, got {classes!r}")
    count = dataset.spec.num_classes
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < count]
    if bad:
        raise ConfigError(f"dataset '{dataset.name}': classes {bad} are not class indices 0..{count - 1}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"dataset '{dataset.name}': classes {list(classes)} name a class twice")
    relabel = torch.full((count,), -1, dtype=torch.long)  # old label -> new label, -1: dropped
    relabel[torch.tensor(classes)] = torch.arange(len(classes))

    def restricted(split: Split) -> Split:
        new_labels = relabel[split.labels]
        keep = new_labels >= 0
        return Split(split.images[keep], new_labels[keep])

    spec = dataclasses.replace(dataset.spec, num_classes=len(classes),
                               class_names=tuple(dataset.spec.class_names[c] for c in classes))
    return Dataset(dataset.name, spec, restricted(dataset.train), restricted(dataset.validation),
                   restricted(dataset.test), {**dataset.source, "classes": list(classes)})
