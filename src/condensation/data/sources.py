"""Dataset builders: each returns RawSplits with images in [0, 1]."""
from __future__ import annotations

import warnings
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
    def to_split(x, y) -> Split:
        return Split(torch.from_numpy(x).unsqueeze(1).contiguous(), torch.from_numpy(y).long())

    return RawSplits(to_split(train_x, train_y), to_split(test_x, test_y), tuple(str(i) for i in range(10)), False)


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# sha256 of each canonical IDX file's decompressed content (the archives' MD5s are torchvision's
# MNIST.resources / FashionMNIST.resources; these were computed from MD5-verified copies), so that a folder
# holding the wrong dataset's files, or a damaged file, is refused instead of read as the named dataset
IDX_SHA256 = {
    ("MNIST", "train-images-idx3-ubyte"): "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ("MNIST", "train-labels-idx1-ubyte"): "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ("MNIST", "t10k-images-idx3-ubyte"): "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ("MNIST", "t10k-labels-idx1-ubyte"): "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ("FashionMNIST", "train-images-idx3-ubyte"): "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ("FashionMNIST", "train-labels-idx1-ubyte"): "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ("FashionMNIST", "t10k-images-idx3-ubyte"): "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ("FashionMNIST", "t10k-labels-idx1-ubyte"): "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def _verified_idx_bytes(path: Path, dataset: str, stem: str) -> bytes:
    """The decompressed content of an IDX file, checked against the named dataset's own file."""
    import gzip
    import hashlib

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"'{path}' cannot be read ({error}); download it again") from None
    digest = hashlib.sha256(data).hexdigest()
    expected = IDX_SHA256.get((dataset, stem))
    if expected is not None and digest != expected:
        other = [name for (name, other_stem), value in IDX_SHA256.items() if value == digest and other_stem == stem]
        why = f"it is {other[0]}'s {stem}" if other else "its content differs from the published file"
        raise DataError(f"'{path}' is not {dataset}'s {stem}: {why}; put {dataset}'s files under '{path.parent}'")
    return data


def _read_idx(path: Path, dataset: str = "", stem: str = "") -> np.ndarray:
    """Read an IDX file (gzipped or not) as torchvision lays MNIST out; no extraction, no writes."""
    data = _verified_idx_bytes(path, dataset, stem)
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
        images = _read_idx(_find_idx(raw, images_stem), cls_name, images_stem)
        labels = _read_idx(_find_idx(raw, labels_stem), cls_name, labels_stem)
        splits[split] = _uint8_to_split(images.copy(), labels.astype(np.int64))
    return RawSplits(splits["train"], splits["test"], tuple(cls.classes), flip_allowed)


@DATASETS.register("mnist")
def mnist(root=None, download: bool = False) -> RawSplits:
    return _torchvision_mnist("MNIST", root, download, flip_allowed=False)


@DATASETS.register("fashion_mnist")
def fashion_mnist(root=None, download: bool = False) -> RawSplits:
    # IDC keeps flips for Fashion-MNIST (clothes are left-right symmetric)
    return _torchvision_mnist("FashionMNIST", root, download, flip_allowed=True)


# ------------------------------------------------------------------------ torchvision: CIFAR, SVHN
def _torchvision_dataset(cls_name: str, expected: Path, root: Path, download: bool, **kwargs):
    """Build a torchvision dataset, turning its 'not found or corrupted' RuntimeError into a DataError."""
    import torchvision

    try:
        return getattr(torchvision.datasets, cls_name)(str(root), download=download, **kwargs)
    except RuntimeError as error:
        if not expected.exists():
            raise DataError(
                f"{cls_name} not found: expected '{expected}' (torchvision layout); download it there with "
                f"torchvision.datasets.{cls_name}('{root}', download=True), or call "
                "condensation.data.load_dataset(..., download=True) from Python"
            ) from None
        raise DataError(f"{cls_name} under '{expected}' is incomplete or corrupted (MD5 check): {error}") from None


def _cifar(cls_name: str, folder: str, root, download: bool) -> RawSplits:
    """CIFAR-10/100 as torchvision lays them out: pickled batches under ``root/<folder>``."""
    path = _require_root(root, cls_name)
    splits = {}
    for split in ("train", "test"):
        data = _torchvision_dataset(cls_name, path / folder, path, download, train=split == "train")
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2)  # (N, H, W, C) uint8 -> (N, C, H, W)
        splits[split] = Split(images.contiguous().float().div_(255.0), torch.as_tensor(data.targets, dtype=torch.long))
    return RawSplits(splits["train"], splits["test"], tuple(data.classes), flip_allowed=True)


@DATASETS.register("cifar10")
def cifar10(root=None, download: bool = False) -> RawSplits:
    return _cifar("CIFAR10", "cifar-10-batches-py", root, download)


@DATASETS.register("cifar100")
def cifar100(root=None, download: bool = False) -> RawSplits:
    return _cifar("CIFAR100", "cifar-100-python", root, download)


@DATASETS.register("svhn")
def svhn(root=None, download: bool = False) -> RawSplits:
    """SVHN cropped digits: ``root/train_32x32.mat`` and ``root/test_32x32.mat`` (torchvision's layout);
    label 10 becomes 0 as torchvision does. Digits are not mirror-symmetric: no flips (IDC's rule)."""
    path = _require_root(root, "svhn")
    splits = {}
    for split in ("train", "test"):
        data = _torchvision_dataset("SVHN", path / f"{split}_32x32.mat", path, download, split=split)
        images = torch.from_numpy(data.data)  # (N, C, H, W) uint8 already
        splits[split] = Split(images.contiguous().float().div_(255.0), torch.as_tensor(data.labels, dtype=torch.long))
    return RawSplits(splits["train"], splits["test"], tuple(str(i) for i in range(10)), flip_allowed=False)


# ------------------------------------------------------------------------------- image files on disk
_TORCHVISION_DECODES = (".jpg", ".jpeg", ".png", ".webp", ".gif")
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "F")  # Pillow's single-channel modes (alpha dropped)


def _read_image(path: Path, mode: str) -> torch.Tensor:
    """``_decode_image`` with a damaged or unreadable file named in one DataError line."""
    try:
        return _decode_image(path, mode)
    except DataError:
        raise
    except Exception as error:  # decoders raise RuntimeError, OSError, PIL's errors...: the file is at fault
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"image file '{path}' cannot be decoded ({first}); remove or replace it") from None


def _decode_image(path: Path, mode: str) -> torch.Tensor:
    """One image file -> uint8 (C, H, W). mode 'RGB' (C = 3), 'GRAY' (C = 1) or 'UNCHANGED' (1 for gray
    files, 3 otherwise, palette images included; alpha is dropped). JPEG/PNG/WebP/GIF use torchvision's fast
    decoder; other formats (BMP, TIFF, PPM/PGM) go through Pillow."""
    from PIL import Image

    if mode == "UNCHANGED":  # Pillow reads only the header here
        with Image.open(path) as handle:
            mode = "GRAY" if handle.mode in _GRAY_MODES else "RGB"
    if path.suffix.lower() in _TORCHVISION_DECODES:
        from torchvision.io import ImageReadMode, decode_image, read_file
        from torchvision.transforms.v2.functional import to_dtype

        image = decode_image(read_file(str(path)), mode=ImageReadMode[mode])
        return image if image.dtype == torch.uint8 else to_dtype(image, torch.uint8, scale=True)  # 16-bit PNG
    with Image.open(path) as handle:
        array = np.asarray(handle.convert("L" if mode == "GRAY" else "RGB"))  # (H, W) or (H, W, 3)
    return torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], -1).permute(2, 0, 1)


def _read_images(paths: list[Path], mode: str, image_size: int | None = None) -> torch.Tensor:
    """Image files of one size -> uint8 (N, C, H, W); with mode 'UNCHANGED' a gray/colour mix becomes RGB.
    ``image_size``: every image is first resized (shorter side, antialiased) and centre-cropped to a square."""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        images = [_read_image(path, mode) for path in paths]
    if image_size is not None:
        from torchvision.transforms.v2.functional import center_crop, resize

        images = [center_crop(resize(image, [image_size], antialias=True), [image_size, image_size])
                  for image in images]
    if not images:
        raise DataError("no image files found")
    for path, image in zip(paths, images):
        if image.shape[1:] != images[0].shape[1:]:
            raise DataError(
                f"images must all have the same size: '{path}' is {image.shape[1]}x{image.shape[2]}, "
                f"'{paths[0]}' is {images[0].shape[1]}x{images[0].shape[2]}"
            )
    channels = max(image.shape[0] for image in images)
    return torch.stack([image.expand(channels, -1, -1) for image in images])  # gray (1, H, W) -> (3, H, W)


def _to_split(images: torch.Tensor, labels) -> Split:
    return Split(images.float().div_(255.0), torch.as_tensor(labels, dtype=torch.long))


@DATASETS.register("tiny_imagenet")
def tiny_imagenet(root=None, download: bool = False) -> RawSplits:
    """Tiny-ImageNet-200 in its original layout (64x64 RGB; grayscale JPEGs become RGB):
    ``root/wnids.txt`` (class order), ``root/words.txt`` (wnid -> names), ``root/train/<wnid>/images/*.JPEG``,
    ``root/val/images/*.JPEG`` labelled by ``root/val/val_annotations.txt``. The test split is the val split,
    in the order of val_annotations.txt. Not downloadable here: fetch and unzip
    http://cs231n.stanford.edu/tiny-imagenet-200.zip yourself."""
    path = _require_root(root, "tiny_imagenet")
    wnids = _read_lines(path / "wnids.txt")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    words = path / "words.txt"
    names = dict(line.partition("\t")[::2] for line in _read_lines(words)) if words.exists() else {}
    train_paths, train_labels = [], []
    for wnid in wnids:
        folder = path / "train" / wnid / "images"
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpeg", ".jpg")) if folder.is_dir() else []
        if not files:
            raise DataError(f"tiny_imagenet: no JPEG files in '{folder}'")
        train_paths += files
        train_labels += [index[wnid]] * len(files)
    test_paths, test_labels = [], []
    for line in _read_lines(path / "val" / "val_annotations.txt"):
        filename, wnid = line.split("\t")[:2]
        if wnid not in index:
            raise DataError(f"tiny_imagenet: val_annotations.txt names '{wnid}', which is not in wnids.txt")
        test_paths.append(path / "val" / "images" / filename)
        test_labels.append(index[wnid])
    train = _to_split(_read_images(train_paths, "RGB"), train_labels)
    test = _to_split(_read_images(test_paths, "RGB"), test_labels)
    if train.images.shape[1:] != test.images.shape[1:]:
        shapes = tuple(train.images.shape[1:]), tuple(test.images.shape[1:])
        raise DataError(f"tiny_imagenet: train images are {shapes[0]}, val images {shapes[1]}")
    return RawSplits(train, test, tuple(names.get(wnid, wnid) for wnid in wnids), flip_allowed=True)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"missing file '{path}'")
    return [line.rstrip("\r\n") for line in path.read_text().splitlines() if line.strip()]


IMAGE_FOLDER_SEED = 20240818  # the fixed 80/20 split of a folder without train/test subfolders
IMAGE_FOLDER_TEST_FRACTION = 0.2


@DATASETS.register("image_folder")
def image_folder(root=None, download: bool = False, image_size: int | None = None) -> RawSplits:
    """Any ImageFolder-style tree: ``root/train/<class>/*`` and ``root/test/<class>/*`` (``val`` is accepted
    for ``test``), or only ``root/<class>/*``, split once into 80/20 per class with a fixed seed. Classes
    are the sorted folder names of the training tree. Images must share one size unless ``image_size`` is
    given (``--dataset-set image_size=32``): then each is resized on its shorter side and centre-cropped."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 3):
        raise DataError(f"image_folder: image_size must be an integer >= 3, got {image_size!r}")
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    path = _require_root(root, "image_folder")
    test_dir = next((path / name for name in ("test", "val") if (path / name).is_dir()), None)
    if (path / "train").is_dir() != (test_dir is not None):
        raise DataError(f"image_folder: '{path}' needs both 'train' and 'test' (or 'val') folders, or neither")
    train_dir = path / "train" if test_dir is not None else path
    try:
        classes, class_to_idx = find_classes(train_dir)
        train_samples = make_dataset(train_dir, class_to_idx, IMG_EXTENSIONS)
        test_samples = []
        if train_dir != path:
            extra = sorted(set(find_classes(test_dir)[0]) - set(classes))
            if extra:
                raise DataError(f"image_folder: '{test_dir}' has classes {extra} that '{train_dir}' lacks")
            test_samples = make_dataset(test_dir, class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError as error:
        raise DataError(f"image_folder: {error} (under '{path}')") from None
    samples = train_samples + test_samples
    images = _read_images([Path(p) for p, _ in samples], "UNCHANGED", image_size)
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    if train_dir != path:
        n = len(train_samples)
        return RawSplits(_to_split(images[:n], labels[:n]), _to_split(images[n:], labels[n:]), tuple(classes))
    test_mask = _stratified_test_mask(labels, len(classes))
    train = _to_split(images[~test_mask], labels[~test_mask])
    return RawSplits(train, _to_split(images[test_mask], labels[test_mask]), tuple(classes))


def _stratified_test_mask(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,) bool: IMAGE_FOLDER_TEST_FRACTION of each class (at least one, never a whole class) held out."""
    generator = torch.Generator().manual_seed(IMAGE_FOLDER_SEED)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_classes):
        indices = torch.nonzero(labels == c).flatten()
        n_test = min(max(1, round(IMAGE_FOLDER_TEST_FRACTION * len(indices))), len(indices) - 1)
        mask[indices[torch.randperm(len(indices), generator=generator)[:n_test]]] = True
    return mask
