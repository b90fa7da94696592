"""Dataset builders: each returns RawSplits with images in [0, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .datasets import DATASETS, RawSplits, Split


def _require_root(root, name: str) -> Path:
    if root is None:
        raise DataError(f"dataset '{name}' needs a root folder (--data-root)")
    path = Path(root)
    if not path.exists():
        raise DataError(f"dataset root '{root}' does not exist")
    return path


def _uint8_to_split(data, labels) -> Split:
    images = torch.as_tensor(np.asarray(data))
    if images.ndim == 3:  # (N, H, W) grayscale
        images = images.unsqueeze(1)
    elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):  # (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    return Split(images.contiguous().float().div_(255.0), torch.as_tensor(np.asarray(labels), dtype=torch.long))


@DATASETS.register("digits")
def digits(root=None, download: bool = False) -> RawSplits:
    """scikit-learn's bundled 8x8 digits (1,797 images): a fixed stratified 80/20 split, no download."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    train_x, test_x, train_y, test_y = train_test_split(
        images, bunch.target, test_size=0.2, stratify=bunch.target, random_state=0
    )
    to_split = lambda x, y: Split(torch.from_numpy(x).unsqueeze(1).contiguous(), torch.from_numpy(y).long())
    return RawSplits(to_split(train_x, train_y), to_split(test_x, test_y), tuple(str(i) for i in range(10)), False)


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) as torchvision lays MNIST out; no extraction, no writes."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {shape}, found {array.size} values")
    return array.reshape(shape)


def _find_idx(raw: Path, stem: str) -> Path:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise DataError(f"missing '{stem}(.gz)' under '{raw}'")


def _torchvision_mnist(cls_name: str, root, download: bool, flip_allowed: bool) -> RawSplits:
    """MNIST-layout data: ``root/<cls_name>/raw/*-idx?-ubyte[.gz]`` (torchvision's own layout)."""
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    if download:
        cls(str(root or "."), train=True, download=True)
        cls(str(root or "."), train=False, download=True)
    raw = _require_root(root, cls_name) / cls_name / "raw"
    if not raw.exists():
        raise DataError(f"{cls_name} not found: expected the folder '{raw}' (torchvision layout)")
    splits = {}
    for split, (images_stem, labels_stem) in _IDX_FILES.items():
        images = _read_idx(_find_idx(raw, images_stem))
        labels = _read_idx(_find_idx(raw, labels_stem))
        splits[split] = _uint8_to_split(images.copy(), labels.astype(np.int64))
    return RawSplits(splits["train"], splits["test"], tuple(cls.classes), flip_allowed)


@DATASETS.register("mnist")
def mnist(root=None, download: bool = False) -> RawSplits:
    return _torchvision_mnist("MNIST", root, download, flip_allowed=False)


@DATASETS.register("fashion_mnist")
def fashion_mnist(root=None, download: bool = False) -> RawSplits:
    # IDC keeps flips for Fashion-MNIST (clothes are left-right symmetric)
    return _torchvision_mnist("FashionMNIST", root, download, flip_allowed=True)
