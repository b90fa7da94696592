import json

import pytest
import torch

from condensation.artifacts import export_dc, export_mtt, load_artifact, save_artifact
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
