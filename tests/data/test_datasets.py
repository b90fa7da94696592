"""Dataset builders: real MNIST / Fashion-MNIST / Tiny-ImageNet files from ../shared/data, scikit-learn's
digits, and tiny CIFAR-10/100 and SVHN files written here in the exact on-disk formats torchvision reads.

torchvision checks the MD5 of every CIFAR/SVHN file against the published archives. Our tiny files cannot
match those, so the CIFAR/SVHN tests replace only the *expected* checksums (class attributes
``train_list``/``test_list``/``meta`` and ``split_list``) by the MD5s of the files written here: the
integrity check itself still runs, and a corrupted file is still caught (tested below).
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from condensation.data import DATASETS, Split, load_dataset
from condensation.errors import ConfigError, DataError

TINY_IMAGENET = "tiny-imagenet-200-subset"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def dump(path: Path, entry: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)
    return path


def assert_pixels_and_labels(split) -> None:
    assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
    assert split.images.min() >= 0 and split.images.max() <= 1


# ----------------------------------------------------------------------------------------- CIFAR
def write_cifar10(root: Path, monkeypatch, per_batch: int = 2, test_size: int = 4, seed: int = 0) -> dict:
    """cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: dicts with 'data' (N, 3072) uint8
    (R, G, B planes of 32x32, row-major) and 'labels'; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    written = {"train_data": [], "train_labels": []}
    train_list = []
    for b in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        name = f"data_batch_{b}"
        path = dump(folder / name, {"batch_label": f"training batch {b} of 5", "labels": labels, "data": data,
                                    "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)]})
        train_list.append([name, md5(path)])
        written["train_data"].append(data)
        written["train_labels"] += labels
    test_data = rng.integers(0, 256, (test_size, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, test_size)]
    test = dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels,
                                        "data": test_data, "filenames": [f"t{i}.png" for i in range(test_size)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = dump(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072})
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5(test)]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(meta)})
    written.update(train_data=np.concatenate(written["train_data"]), test_data=test_data,
                   test_labels=test_labels, names=names)
    return written


def as_images(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255.0


def test_cifar10_reads_torchvision_pickled_batches(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, monkeypatch)
    dataset = load_dataset("cifar10", tmp_path, validation_fraction=0.0)
    assert dataset.spec.channels == 3 and (dataset.spec.height, dataset.spec.width) == (32, 32)
    assert dataset.spec.class_names == tuple(written["names"]) and dataset.spec.flip_allowed
    assert len(dataset.train) == 10 and len(dataset.validation) == 0 and len(dataset.test) == 4
    assert torch.equal(dataset.train.images, as_images(written["train_data"]))  # batches 1..5 in order
    assert dataset.train.labels.tolist() == written["train_labels"]
    assert torch.equal(dataset.test.images, as_images(written["test_data"]))
    assert dataset.test.labels.tolist() == written["test_labels"]
    # the layout: byte 1024 * c + 32 * y + x of a row is channel c, row y, column x
    assert dataset.train.images[3, 2, 5, 7] == written["train_data"][3, 2 * 1024 + 5 * 32 + 7] / 255.0
    assert_pixels_and_labels(dataset.train)


def test_cifar100_reads_fine_labels(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    train_data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    test_data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    fine_train, fine_test = [0, 99, 42, 42, 7, 99], [5, 99, 0]
    train = dump(folder / "train", {"filenames": ["a"] * 6, "batch_label": "training batch 1 of 1",
                                    "fine_labels": fine_train, "coarse_labels": [0] * 6, "data": train_data})
    test = dump(folder / "test", {"filenames": ["b"] * 3, "batch_label": "testing batch 1 of 1",
                                  "fine_labels": fine_test, "coarse_labels": [1] * 3, "data": test_data})
    names = [f"class_{i:02d}" for i in range(100)]
    meta = dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]})
    cls = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [["train", md5(train)]])
    monkeypatch.setattr(cls, "test_list", [["test", md5(test)]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(meta)})
    dataset = load_dataset("cifar100", tmp_path, validation_fraction=0.0)
    assert dataset.spec.num_classes == 100 and dataset.spec.class_names == tuple(names)
    assert dataset.train.labels.tolist() == fine_train and dataset.test.labels.tolist() == fine_test
    assert torch.equal(dataset.train.images, as_images(train_data))
    assert torch.equal(dataset.test.images, as_images(test_data))


def test_cifar_missing_or_corrupted_is_a_clear_data_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", tmp_path)
    write_cifar10(tmp_path, monkeypatch)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])  # truncated
    with pytest.raises(DataError, match="corrupted"):
        load_dataset("cifar10", tmp_path)


# ------------------------------------------------------------------------------------------ SVHN
def write_svhn(root: Path, monkeypatch, sizes=(("train", 12), ("test", 11)), seed: int = 0) -> dict:
    """train_32x32.mat / test_32x32.mat: X (32, 32, 3, N) uint8 and y (N, 1) with the digit 0 stored as 10."""
    import scipy.io

    rng = np.random.default_rng(seed)
    split_list = dict(torchvision.datasets.SVHN.split_list)
    written = {}
    for split, n in sizes:
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10
        path = root / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": x, "y": y})
        split_list[split] = [split_list[split][0], path.name, md5(path)]
        written[split] = (x, y)
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", split_list)
    return written


def test_svhn_reads_mat_files_and_maps_10_to_0(tmp_path, monkeypatch):
    written = write_svhn(tmp_path, monkeypatch)
    dataset = load_dataset("svhn", tmp_path, validation_fraction=0.0)
    assert dataset.spec.class_names == tuple(str(i) for i in range(10))
    assert not dataset.spec.flip_allowed  # digits
    for split, (x, y) in written.items():
        ours = getattr(dataset, split)
        assert len(ours) == x.shape[-1]
        assert ours.labels.tolist() == [int(v) % 10 for v in y.flatten()]  # 10 -> 0, others unchanged
        assert 0 in ours.labels.tolist() and 9 in ours.labels.tolist()
        # X[row, column, channel, n] is image n, channel, row, column
        assert torch.equal(ours.images, torch.from_numpy(x).permute(3, 2, 0, 1).float() / 255.0)
        assert_pixels_and_labels(ours)


def test_svhn_missing_or_corrupted_is_a_clear_data_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_dataset("svhn", tmp_path)
    write_svhn(tmp_path, monkeypatch)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="corrupted"):
        load_dataset("svhn", tmp_path)


# ------------------------------------------------------------------------ MNIST, Fashion-MNIST, digits
@pytest.fixture(scope="module", params=["mnist", "fashion_mnist"])
def torchvision_digits(request, shared_data):
    name = request.param
    raw = DATASETS.get(name)(root=shared_data)
    return name, raw, load_dataset(name, shared_data), load_dataset(name, shared_data)


def as_bytes(images: torch.Tensor) -> np.ndarray:
    """(N, 1, 28, 28) in [0, 1] -> (N,) sorted opaque byte strings, to compare image multisets exactly."""
    array = (images * 255).round().to(torch.uint8).reshape(len(images), -1).numpy()
    return np.sort(array.view(np.dtype((np.void, array.shape[1]))).ravel())


def test_mnist_style_splits(torchvision_digits):
    name, raw, dataset, again = torchvision_digits
    assert (dataset.spec.channels, dataset.spec.height, dataset.spec.width, dataset.spec.num_classes) == (1, 28, 28, 10)
    assert dataset.spec.flip_allowed == (name == "fashion_mnist")
    assert len(raw.train) == 60_000 and len(dataset.test) == 10_000
    assert len(dataset.train) + len(dataset.validation) == 60_000
    # the validation split is stratified: 10% of every class, rounded per class
    class_counts = torch.bincount(raw.train.labels, minlength=10)
    expected = [round(0.1 * int(count)) for count in class_counts]
    assert torch.bincount(dataset.validation.labels, minlength=10).tolist() == expected
    if name == "fashion_mnist":  # 6,000 images per class: exactly 600 of each held out
        assert expected == [600] * 10 and len(dataset.validation) == 6_000 and len(dataset.train) == 54_000
    else:  # MNIST's classes are uneven (5,421 to 6,742 images): the per-class roundings sum to 5,999
        assert len(dataset.validation) == 5_999 and len(dataset.train) == 54_001
    assert_pixels_and_labels(dataset.train)
    # the same validation split on every load
    assert torch.equal(dataset.validation.images, again.validation.images)
    assert torch.equal(dataset.validation.labels, again.validation.labels)
    # train + validation is exactly the original training set, image by image (a partition, so disjoint)
    both = torch.cat([dataset.train.images, dataset.validation.images])
    assert np.array_equal(as_bytes(both), as_bytes(raw.train.images))
    assert torch.equal(torch.bincount(torch.cat([dataset.train.labels, dataset.validation.labels])),
                       torch.bincount(raw.train.labels))


def test_digits():
    dataset = load_dataset("digits")
    assert (dataset.spec.channels, dataset.spec.height, dataset.spec.width, dataset.spec.num_classes) == (1, 8, 8, 10)
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == 1_797
    assert len(dataset.test) == 360  # the stratified 20%
    assert not dataset.spec.flip_allowed
    assert_pixels_and_labels(dataset.train)
    assert dataset.train.images.max() == 1.0  # 16/16


# ------------------------------------------------------------------------------------ Tiny-ImageNet
@pytest.fixture(scope="module")
def tiny_imagenet(shared_data):
    return load_dataset("tiny_imagenet", shared_data / TINY_IMAGENET)


def test_tiny_imagenet_counts_shapes_and_names(tiny_imagenet, shared_data):
    dataset = tiny_imagenet
    spec = dataset.spec
    assert (spec.channels, spec.height, spec.width, spec.num_classes) == (3, 64, 64, 200)
    assert len(dataset.train) + len(dataset.validation) == 4_000 and len(dataset.test) == 10_000
    train_counts = torch.bincount(torch.cat([dataset.train.labels, dataset.validation.labels]), minlength=200)
    assert train_counts.tolist() == [20] * 200
    assert torch.bincount(dataset.test.labels, minlength=200).tolist() == [50] * 200
    root = shared_data / TINY_IMAGENET
    wnids = (root / "wnids.txt").read_text().split()
    # class order is wnids.txt; names come from words.txt
    assert dataset.spec.class_names[wnids.index("n01443537")] == "goldfish, Carassius auratus"
    assert dataset.spec.class_names[wnids.index("n01629819")] == "European fire salamander, Salamandra salamandra"
    assert_pixels_and_labels(dataset.test)


def test_tiny_imagenet_test_labels_follow_val_annotations(tiny_imagenet, shared_data):
    root = shared_data / TINY_IMAGENET
    wnids = (root / "wnids.txt").read_text().split()
    rows = [line.split("\t") for line in (root / "val" / "val_annotations.txt").read_text().splitlines()]
    assert tiny_imagenet.test.labels.tolist() == [wnids.index(row[1]) for row in rows]
    # pixels: val_10.JPEG is grayscale (three equal channels); compare two images with Pillow's decoding
    filenames = [row[0] for row in rows]
    for filename in ("val_0.JPEG", "val_10.JPEG"):
        ours = tiny_imagenet.test.images[filenames.index(filename)]
        with Image.open(root / "val" / "images" / filename) as image:
            gray = image.mode == "L"
            pillow = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        assert (ours - pillow).abs().max() <= 2 / 255  # the same image up to JPEG decoder rounding
        if gray:
            assert torch.equal(ours[0], ours[1]) and torch.equal(ours[1], ours[2])
    assert gray  # val_10.JPEG really is a grayscale JPEG


def test_tiny_imagenet_missing_pieces_are_named(tmp_path):
    with pytest.raises(DataError, match="wnids.txt"):
        load_dataset("tiny_imagenet", tmp_path)
    (tmp_path / "wnids.txt").write_text("n0001\n")
    with pytest.raises(DataError, match=r"train.n0001.images"):
        load_dataset("tiny_imagenet", tmp_path)


# ------------------------------------------------------------------------------------- image folder
def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def marked(value: int, shape=(6, 5, 3)) -> np.ndarray:
    """An image whose first pixel identifies it."""
    array = np.full(shape, 7, dtype=np.uint8)
    array.reshape(-1)[0] = value
    return array


def test_image_folder_with_train_and_test(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for split, count in (("train", 3), ("test", 2)):
        for name in ("zebra", "apple"):
            for i in range(count):
                written[(split, name, i)] = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
                write_png(tmp_path / split / name / f"{i}.png", written[(split, name, i)])
    (tmp_path / "train" / "apple" / "notes.txt").write_text("not an image")
    dataset = load_dataset("image_folder", tmp_path, validation_fraction=0.0)
    assert dataset.spec.class_names == ("apple", "zebra")  # sorted folder names
    assert (dataset.spec.channels, dataset.spec.height, dataset.spec.width) == (3, 6, 5)
    assert dataset.train.labels.tolist() == [0, 0, 0, 1, 1, 1] and dataset.test.labels.tolist() == [0, 0, 1, 1]
    expected = torch.stack([torch.from_numpy(written[("train", name, i)]).permute(2, 0, 1)
                            for name in ("apple", "zebra") for i in range(3)]).float() / 255
    assert torch.equal(dataset.train.images, expected)  # PNG is lossless


def test_image_folder_without_splits_holds_out_a_fixed_stratified_fifth(tmp_path):
    for c, name in enumerate(("a", "b", "c")):
        for i in range(10):
            write_png(tmp_path / name / f"{i}.png", marked(10 * c + i, shape=(4, 4)))  # grayscale
    first = load_dataset("image_folder", tmp_path, validation_fraction=0.0)
    second = load_dataset("image_folder", tmp_path, validation_fraction=0.0)
    assert first.spec.channels == 1  # an all-gray tree stays single-channel
    assert torch.bincount(first.test.labels).tolist() == [2, 2, 2]
    assert torch.bincount(first.train.labels).tolist() == [8, 8, 8]
    assert torch.equal(first.test.images, second.test.images)
    def ids(split):
        return {round(v * 255) for v in split.images[:, 0, 0, 0].tolist()}

    assert ids(first.train).isdisjoint(ids(first.test)) and ids(first.train) | ids(first.test) == set(range(30))
    # labels travel with their images
    for split in (first.train, first.test):
        assert [round(v * 255) // 10 for v in split.images[:, 0, 0, 0].tolist()] == split.labels.tolist()


def test_image_folder_formats_and_a_gray_colour_mix(tmp_path):
    """Gray, gray + alpha, palette, RGBA (PNG) and BMP (read by Pillow) files together: all become RGB,
    gray is repeated over the channels, palette colours are looked up, alpha is dropped."""
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    files = {
        "gray/0.png": Image.fromarray(gray),
        "gray/1.png": Image.fromarray(gray).convert("LA"),
        "gray/2.bmp": Image.fromarray(gray),
        "colour/0.png": Image.fromarray(colour).convert("P"),
        "colour/1.png": Image.fromarray(colour).convert("RGBA"),
        "colour/2.bmp": Image.fromarray(colour),
    }
    for name, image in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        image.save(tmp_path / name)
    raw = DATASETS.get("image_folder")(root=tmp_path)
    assert raw.class_names == ("colour", "gray")
    images = torch.cat([raw.train.images, raw.test.images])
    labels = torch.cat([raw.train.labels, raw.test.labels])
    assert images.shape == (6, 3, 4, 4)
    def as_float(array):
        return torch.from_numpy(np.asarray(array).copy()).float() / 255

    for image in images[labels == 1]:
        assert all(torch.equal(image[c], as_float(gray)) for c in range(3))
    palette_rgb = as_float(files["colour/0.png"].convert("RGB")).permute(2, 0, 1)
    colours = images[labels == 0]
    assert sum(torch.equal(image, palette_rgb) for image in colours) == 1  # the palette PNG
    assert sum(torch.equal(image, as_float(colour).permute(2, 0, 1)) for image in colours) == 2  # RGBA, BMP


def test_image_folder_refuses_mixed_sizes_naming_the_file(tmp_path):
    write_png(tmp_path / "train" / "a" / "0.png", marked(1))
    write_png(tmp_path / "train" / "b" / "0.png", marked(2))
    write_png(tmp_path / "test" / "a" / "0.png", marked(3))
    write_png(tmp_path / "test" / "b" / "big.png", marked(4, shape=(8, 5, 3)))
    write_png(tmp_path / "test" / "b" / "bigger.png", marked(4, shape=(9, 5, 3)))
    with pytest.raises(DataError, match=r"test.b.big\.png' is 8x5"):
        load_dataset("image_folder", tmp_path)


def test_image_folder_bad_trees(tmp_path):
    with pytest.raises(DataError, match="class"):
        load_dataset("image_folder", tmp_path)  # no class folders at all
    write_png(tmp_path / "train" / "a" / "0.png", marked(1))
    with pytest.raises(DataError, match="needs both 'train' and 'test'"):
        load_dataset("image_folder", tmp_path)  # 'train' must not be taken for a class
    write_png(tmp_path / "test" / "a" / "0.png", marked(2))
    write_png(tmp_path / "test" / "z" / "0.png", marked(3))
    with pytest.raises(DataError, match=r"classes \['z'\]"):
        load_dataset("image_folder", tmp_path)


# ---------------------------------------------------------------------------------------- general
def test_registry_and_roots(tmp_path):
    for name in ("mnist", "fashion_mnist", "digits", "cifar10", "cifar100", "svhn", "tiny_imagenet", "image_folder"):
        assert name in DATASETS
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nowhere")
    with pytest.raises(DataError, match="needs a root"):
        load_dataset("svhn")


def test_a_folder_holding_another_datasets_files_is_refused(shared_data, tmp_path):
    """Before: a fashion_mnist root holding MNIST's files loaded silently as Fashion-MNIST."""
    import shutil

    (tmp_path / "FashionMNIST").mkdir()
    shutil.copytree(shared_data / "MNIST" / "raw", tmp_path / "FashionMNIST" / "raw")
    with pytest.raises(DataError, match="is not FashionMNIST's train-images-idx3-ubyte: it is MNIST's"):
        load_dataset("fashion_mnist", tmp_path)
    damaged = tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    shutil.copy(shared_data / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz", tmp_path / "FashionMNIST" / "raw")
    shutil.copy(shared_data / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz", tmp_path / "FashionMNIST" / "raw")
    shutil.copy(shared_data / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz", tmp_path / "FashionMNIST" / "raw")
    damaged.write_bytes((shared_data / "FashionMNIST" / "raw" / damaged.name).read_bytes()[:-40])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashion_mnist", tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_image_folder_names_an_unreadable_image(tmp_path, damage):
    for split in ("train", "test"):
        for name in ("a", "b"):
            write_png(tmp_path / split / name / "0.png", marked(1))
    bad = tmp_path / "train" / "b" / "0.png"
    bad.write_bytes(bad.read_bytes()[:30] if damage == "truncated" else b"\x89PNG not really")
    with pytest.raises(DataError, match=r"train.b.0\.png' cannot be decoded"):
        load_dataset("image_folder", tmp_path)


def test_image_folder_resizes_mixed_sizes_when_asked(tmp_path):
    """Before: mixed sizes were refused with no way out. image_size resizes the shorter side and crops."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for name, shape in (("a", (20, 30, 3)), ("b", (12, 12, 3))):
            write_png(tmp_path / split / name / "0.png", rng.integers(0, 256, shape, dtype=np.uint8))
    with pytest.raises(DataError, match="same size"):
        load_dataset("image_folder", tmp_path, validation_fraction=0.0)
    dataset = load_dataset("image_folder", tmp_path, validation_fraction=0.0, image_size=8)
    assert dataset.train.images.shape == (2, 3, 8, 8) and dataset.test.images.shape == (2, 3, 8, 8)
    with pytest.raises(DataError, match="takes no setting"):
        load_dataset("digits", None, image_size=8)
    with pytest.raises(DataError, match="image_size must be an integer"):
        load_dataset("image_folder", tmp_path, image_size="big")


def test_a_split_is_a_map_style_dataset_a_dataloader_batches():
    split = Split(torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 1, 0]))
    image, label = split[3]
    assert torch.equal(image, split.images[3]) and label == 1
    images, labels = next(iter(torch.utils.data.DataLoader(split, batch_size=4)))
    assert torch.equal(images, split.images[:4]) and labels.tolist() == [0, 1, 2, 1]
