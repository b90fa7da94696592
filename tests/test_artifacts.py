import json

import pytest
import torch

from condensation.artifacts import METADATA_DIGEST, load_artifact, load_results, metadata_digest, save_artifact
from condensation.exports import export_dc, export_mtt
from condensation.cli import markdown_table
from condensation.containers import create_container
from condensation.data import Preprocessing
from condensation.errors import ArtifactError

from .conftest import tiny_real


@pytest.fixture
def artifact_dir(gray_spec, tmp_path):
    real, pre = tiny_real(gray_spec)
    container = create_container("multi_formation", gray_spec, 1, pre)
    container.initialize(real, torch.Generator().manual_seed(0))
    return save_artifact(tmp_path / "run", container, {"recipe": "test", "dataset": "x", "ipc": 1, "seed": 0,
                                                        "objective_values": {"learned_learning_rate": 0.02}})


def test_round_trip_regenerates_the_same_images_bit_for_bit(artifact_dir):
    artifact = load_artifact(artifact_dir)
    regenerated = artifact.container.generate_all(torch.Generator().manual_seed(0))
    assert torch.equal(regenerated.images, artifact.generated_images)
    assert torch.equal(regenerated.labels, artifact.generated_labels)
    meta = json.loads((artifact_dir / "metadata.json").read_text())
    assert meta["storage"]["stored_floats"] == 3 * 64 and meta["storage"]["generated_images_per_class"] == 4
    assert meta["container"]["name"] == "multi_formation"
    assert (artifact_dir / "grid.png").stat().st_size > 0


def test_zca_preprocessing_travels_with_the_artifact(gray_spec, tmp_path):
    real, _ = tiny_real(gray_spec)
    pre = Preprocessing("zca").fit(real.raw)
    container = create_container("pixels", gray_spec, 1, pre)
    path = save_artifact(tmp_path / "zca", container, {"recipe": "t", "dataset": "x", "ipc": 1, "seed": 0})
    loaded = load_artifact(path).container.preprocessing
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(loaded(x), pre(x))
    torch.testing.assert_close(loaded.inverse(loaded(x)), x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["container.safetensors", "generated.safetensors", "preprocessing.safetensors"])
def test_tampered_or_truncated_files_are_refused(artifact_dir, name):
    path = artifact_dir / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact(artifact_dir)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact(artifact_dir)


def test_missing_metadata_is_refused(artifact_dir):
    (artifact_dir / "metadata.json").unlink()
    with pytest.raises(ArtifactError, match="not an artifact"):
        load_artifact(artifact_dir)


def test_exporters_write_the_field_layouts(artifact_dir, tmp_path):
    artifact = load_artifact(artifact_dir)
    dc = torch.load(export_dc(artifact, tmp_path / "res_test.pt"))
    images, labels = dc["data"][0]
    assert torch.equal(images, artifact.generated_images) and torch.equal(labels, artifact.generated_labels)
    images_path, labels_path = export_mtt(artifact, tmp_path / "mtt")
    assert torch.equal(torch.load(images_path), artifact.generated_images)
    assert float(torch.load(tmp_path / "mtt" / "syn_lr_best.pt")) == pytest.approx(0.02)


# ------------------------------------------------------------------------------ metadata.json is not trusted
def _edit(artifact_dir, change, sign: str = "kept") -> None:
    """Apply ``change`` (dict -> new value) to metadata.json. sign 'kept': the old digest stays (an edit by
    hand); 're-signed': a fresh digest, so only the schema check can refuse it; 'old format': schema 1, as
    written before the digest existed."""
    path = artifact_dir / "metadata.json"
    meta = change(json.loads(path.read_text()))
    if isinstance(meta, dict) and sign == "re-signed":
        meta[METADATA_DIGEST] = metadata_digest(meta)
    elif isinstance(meta, dict) and sign == "old format":
        meta.pop(METADATA_DIGEST)
        meta["schema_version"] = 1
    path.write_text(json.dumps(meta, indent=2))


def _setting(*keys_then_value):
    """A change that sets one field: _setting("spec", "channels", "three") sets meta["spec"]["channels"]."""
    *parents, last, value = keys_then_value

    def change(meta):
        target = meta
        for key in parents:
            target = target[key]
        target[last] = value
        return meta
    return change


def test_an_edited_ipc_is_refused(artifact_dir):
    _edit(artifact_dir, _setting("ipc", 2))
    with pytest.raises(ArtifactError, match="metadata.json was modified after it was written"):
        load_artifact(artifact_dir)


def test_a_removed_digest_is_refused(artifact_dir):
    _edit(artifact_dir, lambda meta: {k: v for k, v in meta.items() if k != METADATA_DIGEST})
    with pytest.raises(ArtifactError, match="modified after it was written: its metadata_sha256 is missing"):
        load_artifact(artifact_dir)


def test_the_digest_ignores_key_order_and_spacing(artifact_dir):
    path = artifact_dir / "metadata.json"
    path.write_text(json.dumps(json.loads(path.read_text()), sort_keys=True))
    assert load_artifact(artifact_dir).metadata["ipc"] == 1


def test_an_old_format_artifact_without_digest_still_loads(artifact_dir):
    _edit(artifact_dir, lambda meta: meta, sign="old format")
    artifact = load_artifact(artifact_dir)
    assert METADATA_DIGEST not in artifact.metadata
    assert torch.equal(artifact.container.generate_all(torch.Generator().manual_seed(0)).images,
                       artifact.generated_images)


CORRUPT = {  # what is changed -> what the error line names
    "a list instead of the object": (lambda meta: [meta], "must hold a JSON object, got a list of 1 item(s)"),
    "null instead of the object": (lambda meta: None, "must hold a JSON object, got null"),
    "spec as a list": (_setting("spec", [1, 8, 8, 3]), "spec must be an object, got [1, 8, 8, 3]"),
    "spec as null": (_setting("spec", None), "spec must be an object, got null"),
    "string channels": (_setting("spec", "channels", "three"), 'spec.channels must be an integer >= 1, got "three"'),
    "boolean channels": (_setting("spec", "channels", True), "spec.channels must be an integer >= 1, got true"),
    "too few class names": (_setting("spec", "class_names", ["a"]), "spec.class_names must hold spec.num_classes"),
    "sha256 as a list": (_setting("sha256", ["0" * 64]), "sha256 must be an object, got"),
    "a short sha256": (_setting("sha256", "generated.safetensors", "abc"), "sha256.generated.safetensors must be a sha256"),
    "container.config as a list": (_setting("container", "config", [2]), "container.config must be an object, got [2]"),
    "storage as a string": (_setting("storage", "big"), 'storage must be an object, got "big"'),
    "no storage.budget_ratio": (lambda meta: {**meta, "storage": {}}, "storage.stored_floats is missing"),
    "zero images per class": (_setting("container", "images_per_class", 0), "container.images_per_class must be an integer >= 1"),
    "string ipc": (_setting("ipc", "1"), 'ipc must be an integer >= 1, got "1"'),
    "list objective_values": (_setting("objective_values", [0.02]), "objective_values must be an object"),
    "unknown container": (_setting("container", "name", "jpeg"), "unknown container 'jpeg'"),
    "unknown container setting": (_setting("container", "config", "colour", 1), "unknown container 'multi_formation' setting"),
    "another container size": (_setting("container", "images_per_class", 2), "does not fit the container it describes"),
    "another image size": (_setting("spec", "height", 16), "spec does not match the images"),
    "unknown preprocessing": (_setting("preprocessing", "kind", "whiten"), "unknown preprocessing 'whiten'"),
}


@pytest.mark.parametrize("sign", ["re-signed", "old format"])
@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_metadata_is_one_artifact_error(artifact_dir, case, sign):
    change, message = CORRUPT[case]
    _edit(artifact_dir, change, sign)
    with pytest.raises(ArtifactError, match="metadata.json") as raised:  # any other type fails the test
        load_artifact(artifact_dir)
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("damage", ["truncated", "not UTF-8", "empty"])
def test_unreadable_metadata_is_one_artifact_error(artifact_dir, damage):
    path = artifact_dir / "metadata.json"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "not UTF-8": b"\xff\xfe" + data, "empty": b""}[damage])
    with pytest.raises(ArtifactError, match="not UTF-8" if damage == "not UTF-8" else "not valid JSON"):
        load_artifact(artifact_dir)


# ---------------------------------------------------------------------------------------- results.json
def _results(**changes) -> dict:
    """A results.json as run.distill writes it (the keys a report reads, and a few it does not)."""
    results = {"recipe": "dm", "container": "pixels", "objective": "dm", "container_settings": {}, "dataset": "mnist",
               "ipc": 1, "seed": 0, "iterations": 10, "protocol": {"name": "cpu", "description": "short"},
               "stored_floats": 7840, "budget_floats": 7840, "budget_ratio": 1.0, "generated_images_per_class": 1,
               "accuracy": {"convnet": {"mean": 71.5, "std": 1.25, "n": 2, "values": [70.25, 72.75]}},
               "random_baseline": {"mean": 60.0, "std": 2.0, "n": 3, "values": [58, 60, 62], "draws": [58, 60, 62]},
               "wall_clock_seconds": {"distill": 12.5, "evaluate": 3.0}}
    results.update(changes)
    return results


def test_load_results_reads_a_run_directory_or_the_file(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    assert load_results(tmp_path) == load_results(tmp_path / "results.json") == _results()
    assert "| dm | mnist | 0 | pixels | dm | 1 | 10 | 7,840 (1.000)" in markdown_table([load_results(tmp_path)])
    # no objective (a selection recipe), not evaluated, no iterations or random baseline: still a report row
    sparse = _results(objective=None, accuracy={})
    del sparse["iterations"], sparse["random_baseline"]
    (tmp_path / "results.json").write_text(json.dumps(sparse))
    assert "| dm | mnist | 0 | pixels | - | 1 | - |" in markdown_table([load_results(tmp_path)])


@pytest.mark.parametrize("content, message", [
    (None, "has no results.json"),
    (b'{"recipe": "dm", "accur', "is not valid JSON (truncated or damaged)"),
    (b"\xff\xfe{}", "is not UTF-8"),
    (b"[1, 2]", "must hold a JSON object, got [1, 2]"),
    (_results(ipc="1"), 'ipc must be an integer >= 1, got "1"'),
    (_results(objective=3), "objective must be a string or null, got 3"),
    (_results(accuracy=[71.5]), "accuracy must be an object, got [71.5]"),
    (_results(accuracy={"convnet": {"mean": "71", "std": 1, "n": 2}}), 'accuracy.convnet.mean must be a number'),
    (_results(accuracy={"convnet": {"mean": 71, "std": 1}}), "accuracy.convnet.n is missing"),
    (_results(protocol="cpu"), 'protocol must be an object, got "cpu"'),
    (_results(protocol={}), "protocol.name is missing"),
    (_results(wall_clock_seconds={"distill": None}), "wall_clock_seconds.distill must be a number, got null"),
    (_results(random_baseline={"mean": 1, "std": 0}), "random_baseline.draws is missing"),
    (_results(iterations=2.5), "iterations must be an integer >= 0, got 2.5"),
    (_results(budget_ratio=True), "budget_ratio must be a number, got true"),
])
def test_load_results_refuses_missing_damaged_and_mistyped_files(tmp_path, content, message):
    if content is not None:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (tmp_path / "results.json").write_bytes(data)
    with pytest.raises(ArtifactError) as raised:
        load_results(tmp_path)
    assert message in str(raised.value) and "\n" not in str(raised.value)
