"""Exports (dc, mtt, image_folder, hf), Artifact.dataset(), the image grid, file modes and the package's top level:
round trips through the library's own readers on tiny digits artifacts made by the library."""
import csv
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import condensation
from condensation import exports as exports_module
from condensation.artifacts import load_artifact, save_artifact, save_grid
from condensation.exports import EXPORT_FORMATS, export_artifact, image_folder_names
from condensation.containers import create_container
from condensation.data import DATASETS, DataSpec, load_dataset
from condensation.data.sources import _stratified_test_mask
from condensation.errors import ConfigError
from condensation.run import RunConfig, distill

from .conftest import tiny_real


def _digits_run(out: Path, **settings) -> Path:
    config = RunConfig(recipe="dm", dataset="digits", ipc=2, iterations=2, protocol="smoke", evaluate=False,
                       out=str(out), progress=False, objective_settings={"real_per_class": 8}, **settings)
    distill(config)
    return out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return _digits_run(tmp_path_factory.mktemp("normalize") / "run")


@pytest.fixture(scope="module")
def zca_run(tmp_path_factory) -> Path:
    return _digits_run(tmp_path_factory.mktemp("zca") / "run", preprocessing="zca")


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits").test


def _readme_code(directory: Path) -> str:
    """The README's python block that defines preprocess(pixels)."""
    text = (directory / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, text
    return blocks[0]


# ---------------------------------------------------------------------------------------------- dc and mtt
def test_dc_export_is_a_directory_with_res_pt_and_its_preprocessing(digits_run, tmp_path):
    artifact = load_artifact(digits_run)
    out = tmp_path / "missing" / "parent" / "dc"
    assert export_artifact(artifact, "dc", out) == out
    images, labels = torch.load(out / "res.pt")["data"][0]
    assert torch.equal(images, artifact.generated_images) and torch.equal(labels, artifact.generated_labels)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "classes.json", "preprocessing.json",
                                                     "preprocessing.safetensors", "res.pt"]
    assert json.loads((out / "classes.json").read_text()) == [str(i) for i in range(10)]
    readme = (out / "README.md").read_text()
    assert "normalized network inputs" in readme and "no soft labels" in readme
    assert 'torch.load("res.pt")["data"][0]' in readme
    assert not list(tmp_path.glob("missing/parent/.*"))  # the temporary directory was renamed away


def test_mtt_export_keeps_mtts_file_names(digits_run, tmp_path):
    artifact = load_artifact(digits_run)
    images_path, labels_path = exports_module.export_mtt(artifact, tmp_path / "mtt")
    assert images_path == tmp_path / "mtt" / "images_best.pt"
    assert torch.equal(torch.load(images_path), artifact.generated_images)
    assert torch.equal(torch.load(labels_path), artifact.generated_labels)
    assert not (tmp_path / "mtt" / "syn_lr_best.pt").exists()  # DM learns no step size
    assert "No `syn_lr_best.pt`" in (tmp_path / "mtt" / "README.md").read_text()


@pytest.mark.parametrize("run", ["digits_run", "zca_run"])
@pytest.mark.parametrize("format", ["dc", "mtt", "image_folder"])
def test_exported_preprocessing_applied_to_real_images_equals_the_containers(run, format, request, tmp_path,
                                                                             digits_test, monkeypatch):
    """The README's own code, run from the export folder on real test images, gives what
    container.preprocessing gives (bit for bit: same tensors, same operations)."""
    artifact = load_artifact(request.getfixturevalue(run))
    out = export_artifact(artifact, format, tmp_path / format)
    preprocessing = artifact.container.preprocessing
    described = json.loads((out / "preprocessing.json").read_text())
    assert described["kind"] == preprocessing.kind
    assert described["mean"] == preprocessing.tensors["mean"].tolist()
    assert described["std"] == preprocessing.tensors["std"].tolist()
    readme = (out / "README.md").read_text()
    if preprocessing.kind == "zca":
        from safetensors.torch import load_file

        assert described["space"] == "zca_whitened" and "ZCA-whitened network inputs" in readme
        assert torch.equal(load_file(str(out / "preprocessing.safetensors"))["zca_matrix"],
                           preprocessing.tensors["zca_matrix"])
    else:
        assert described["space"] == "normalized" and "Normalize(mean, std)" in readme
    monkeypatch.chdir(out)
    namespace = {}
    exec(_readme_code(out).replace("inputs = preprocess(pixels)", ""), namespace)
    pixels = digits_test.images
    assert torch.equal(namespace["preprocess"](pixels), preprocessing(pixels))


# ---------------------------------------------------------------------------------------------- image_folder
def test_image_folder_reloads_as_the_librarys_image_folder_dataset(digits_run, tmp_path):
    artifact = load_artifact(digits_run)
    out = export_artifact(artifact, "image_folder", tmp_path / "png")
    raw = DATASETS.get("image_folder")(root=out)  # the library's reader (it splits 80/20 per class)
    assert raw.class_names == artifact.spec.class_names
    # files sort by class, then by index: the generated order; the reader's fixed split picks the test images
    pixels = artifact.container.preprocessing.inverse(artifact.generated_images).clamp(0, 1)
    labels = artifact.generated_labels
    test = _stratified_test_mask(labels, artifact.spec.num_classes)
    for split, mask in ((raw.train, ~test), (raw.test, test)):
        assert torch.equal(split.labels, labels[mask])
        assert split.images.shape[1:] == pixels.shape[1:]  # one channel stays one channel
        assert (split.images - pixels[mask]).abs().max() <= 1 / 255 + 1e-6
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert [int(row["label"]) for row in rows] == labels.tolist()
    assert all((out / row["file"]).is_file() and row["file"].startswith(f"{row['class']}/") for row in rows)
    assert "[0, 1] pixel space" in (out / "README.md").read_text()


def test_image_folder_names_sort_in_label_order():
    assert image_folder_names(["0", "1", "2"]) == ["0", "1", "2"]
    assert image_folder_names(["airplane", "automobile", "bird"]) == ["airplane", "automobile", "bird"]
    named = image_folder_names(["zebra", "apple", "a/b", "apple"])
    assert named == ["0_zebra", "1_apple", "2_a_b", "3_apple"] and sorted(named) == named
    assert image_folder_names([str(i) for i in range(11)])[10] == "10_10"  # "10" < "2" would renumber them


def test_image_folder_with_unsorted_class_names_keeps_the_labels(tmp_path):
    spec = DataSpec(3, 8, 8, 3, ("zebra", "apple", "mango"))
    real, pre = tiny_real(spec)
    container = create_container("pixels", spec, 2, pre)
    container.initialize(real, torch.Generator().manual_seed(0))
    artifact = load_artifact(save_artifact(tmp_path / "run", container, {"recipe": "t", "dataset": "x"}))
    out = export_artifact(artifact, "image_folder", tmp_path / "png")
    raw = DATASETS.get("image_folder")(root=out)
    assert raw.class_names == ("0_zebra", "1_apple", "2_mango")
    mask = _stratified_test_mask(artifact.generated_labels, 3)
    assert torch.equal(raw.train.labels, artifact.generated_labels[~mask])
    assert raw.train.images.shape[1] == 3


# ---------------------------------------------------------------------------------------------- hf
def test_hf_export_without_datasets_names_the_extra(digits_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ConfigError, match=re.escape("pip install 'condensation[hf]'")):
        export_artifact(load_artifact(digits_run), "hf", tmp_path / "hf")
    assert not (tmp_path / "hf").exists() and list(tmp_path.iterdir()) == []


def test_hf_export_round_trips(digits_run, tmp_path):
    import datasets  # a test dependency (pyproject's test extra): a missing package fails here, loudly

    artifact = load_artifact(digits_run)
    previous = os.umask(0o022)
    try:
        out = export_artifact(artifact, "hf", tmp_path / "hf")
    finally:
        os.umask(previous)
    assert set(_modes(out).values()) == {0o644}
    table = datasets.load_from_disk(str(out))
    assert table.features["label"].names == list(artifact.spec.class_names)
    values = table.with_format("torch")[:]
    assert torch.equal(values["pixel_values"], artifact.generated_images)
    assert torch.equal(values["label"], artifact.generated_labels)
    first = torch.from_numpy(np.asarray(table[0]["image"], dtype=np.float32)) / 255
    expected = artifact.container.preprocessing.inverse(artifact.generated_images[:1]).clamp(0, 1)[0, 0]
    assert (first - expected).abs().max() <= 1 / 255
    assert (out / "preprocessing.json").exists() and "load_from_disk" in (out / "README.md").read_text()


# ---------------------------------------------------------------------------------------------- --out checks
def test_export_refuses_a_file_or_a_non_empty_directory_and_takes_an_empty_one(digits_run, tmp_path):
    artifact = load_artifact(digits_run)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        export_artifact(artifact, "dc", tmp_path / "file")
    with pytest.raises(ConfigError, match="part of its parent path is a file"):
        export_artifact(artifact, "dc", tmp_path / "file" / "below")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export_artifact(artifact, "mtt", tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert (export_artifact(artifact, "dc", tmp_path / "empty") / "res.pt").is_file()
    with pytest.raises(ConfigError, match="current or root directory"):
        export_artifact(artifact, "dc", ".")
    with pytest.raises(ConfigError, match="unknown export format"):
        export_artifact(artifact, "zip", tmp_path / "z")
    assert set(EXPORT_FORMATS) == {"dc", "mtt", "image_folder", "hf"}


def test_a_failing_export_leaves_nothing_behind(digits_run, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(exports_module, "_write_export_notes", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_artifact(load_artifact(digits_run), "dc", tmp_path / "dc")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- Artifact.dataset
def test_artifact_dataset_gives_the_generated_network_inputs(digits_run, digits_test):
    artifact = load_artifact(digits_run)
    dataset = artifact.dataset()
    assert isinstance(dataset, torch.utils.data.Dataset) and len(dataset) == 20
    image, label = dataset[3]
    assert torch.equal(image, artifact.generated_images[3]) and int(label) == int(artifact.generated_labels[3])
    images, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=20)))
    assert images.shape == (20, 1, 8, 8) and labels.dtype == torch.int64
    # network-input space: real images reach it through container.preprocessing (the docstring's call)
    preprocessing = artifact.container.preprocessing
    real_inputs = preprocessing(digits_test.images)
    assert abs(float(real_inputs.mean())) < 0.2 and abs(float(real_inputs.std()) - 1) < 0.2
    assert "artifact.container.preprocessing(pixels)" in type(artifact).dataset.__doc__


# ---------------------------------------------------------------------------------------------- grid
def test_grid_is_upscaled_labelled_and_says_when_images_are_left_out(tmp_path):
    from PIL import Image

    pixels = torch.rand(3 * 12, 1, 8, 8)
    labels = torch.arange(3).repeat_interleave(12)
    info = save_grid(tmp_path / "g.png", pixels, labels, 3, 10, ("cat", "dog", "frog"))
    assert info == {"images_per_class_shown": 10, "images_per_class": 12, "upscale": 8,
                    "note": info["note"]} and "10 of 12" in info["note"]
    with Image.open(tmp_path / "g.png") as image:
        assert image.info["Comment"] == info["note"]
        assert image.height >= 3 * 64 and image.width >= 10 * 64
        gray = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32))
    tiles_left = image.width - (10 * 66 + 2)
    assert tiles_left > 10 and gray[: 3 * 66, :tiles_left].min() < 128  # dark text in the label column
    one = save_grid(tmp_path / "one.png", torch.rand(3, 1, 28, 28), torch.arange(3), 3, 10, ("a", "b", "c"))
    assert one["upscale"] == 3 and one["note"] is None
    with Image.open(tmp_path / "one.png") as image:
        assert image.width >= 84 and image.info["Comment"].startswith("all 1 images")


def test_artifact_metadata_records_the_grid(digits_run):
    grid = load_artifact(digits_run).metadata["grid"]
    assert grid["images_per_class_shown"] == 2 and grid["upscale"] == 8 and grid["note"] is None


# ---------------------------------------------------------------------------------------------- file modes
def _modes(directory: Path) -> dict:
    return {str(p.relative_to(directory)): stat.S_IMODE(p.stat().st_mode) for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664)])
def test_every_file_honours_the_umask(umask, expected, tmp_path):
    previous = os.umask(umask)
    try:
        run = _digits_run(tmp_path / "run")
        exports = [export_artifact(load_artifact(run), format, tmp_path / format) for format in ("dc", "mtt", "image_folder")]
        from condensation.io import append_line

        append_line(run / "evaluations.jsonl", "{}")
    finally:
        os.umask(previous)
    for directory in (run, *exports):
        modes = _modes(directory)
        assert modes and all(mode == expected for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
    assert "container.safetensors" in _modes(run) and "preprocessing.safetensors" in _modes(exports[0])


def test_append_line_writes_whole_lines(tmp_path):
    from condensation.io import append_line

    path = tmp_path / "log.jsonl"
    for i in range(3):
        append_line(path, json.dumps({"i": i, "text": "x" * 5000}))
    assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- package top level
def test_the_main_entry_points_are_at_the_top_level():
    from condensation import artifacts, run

    assert condensation.distill is run.distill and condensation.RunConfig is run.RunConfig
    assert condensation.evaluate_artifact is run.evaluate_artifact
    assert condensation.load_artifact is artifacts.load_artifact
    assert isinstance(condensation.__version__, str)
    assert {"distill", "RunConfig", "evaluate_artifact", "load_artifact", "__version__"} <= set(condensation.__all__)
    with pytest.raises(AttributeError):
        getattr(condensation, "no_such_name")  # noqa: B009 (the attribute protocol under test)


@pytest.mark.parametrize("code", ["from condensation import distill, RunConfig, evaluate_artifact, load_artifact",
                                  "import condensation.artifacts", "import condensation.cli"])
def test_fresh_imports_have_no_cycles(code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_python_dash_m_condensation():
    done = subprocess.run([sys.executable, "-m", "condensation", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"condense (condensation) {condensation.__version__}"


def test_the_listings_are_at_the_top_level_and_agree_with_the_command(capsys):
    from condensation.cli import main

    assert "hmn" in condensation.list_recipes() and "factorization" in condensation.list_containers()
    assert "bptt" in condensation.list_objectives() and "fashion_mnist" in condensation.list_datasets()
    assert "resnet18" in condensation.list_networks() and "cpu" in condensation.list_protocols()
    assert main(["list", "containers"]) == 0
    assert capsys.readouterr().out.split() == condensation.list_containers()
