"""Expert trajectories: the documented files, snapshots per epoch, resume, verification, the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from condensation.cli import main as cli_main
from condensation.data import Preprocessing, Split
from condensation.data.datasets import Dataset
from condensation.engine import experts as experts_module
from condensation.engine.experts import (
    MANIFEST, ExpertBuffer, ExpertConfig, build_network, expert_config, flatten_parameters, load_experts,
    train_expert, train_experts,
)
from condensation.errors import ArtifactError, ConfigError
from ..conftest import tiny_real

TINY = {"network_settings": {"width": 4, "depth": 1}, "batch_size": 8, "preprocessing": "normalize"}


def tiny_dataset(spec) -> Dataset:
    real, _ = tiny_real(spec, per_class=8)
    train = Split(real.raw, real.labels)
    return Dataset("tiny", spec, train, train, train)


def test_presets_and_unknown_settings():
    assert expert_config("paper") == ExpertConfig()
    assert (ExpertConfig().experts, ExpertConfig().epochs, ExpertConfig().preprocessing) == (100, 50, "zca")
    assert expert_config("cpu").preprocessing == "normalize"
    with pytest.raises(ConfigError, match="unknown expert preset"):
        expert_config("huge")
    with pytest.raises(ConfigError, match="epochz"):
        expert_config("cpu", epochz=3)
    with pytest.raises(ConfigError, match="preprocessing"):
        ExpertConfig(preprocessing="none")


def test_train_experts_writes_the_documented_files(tmp_path, gray_spec):
    config = ExpertConfig(experts=2, epochs=2, **TINY)
    buffer = train_experts(tiny_dataset(gray_spec), config, tmp_path, torch.Generator().manual_seed(0), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expert_0000.safetensors", "expert_0001.safetensors", MANIFEST]
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    network = build_network("convnet", gray_spec, TINY["network_settings"])
    assert manifest["parameters"] == [[n, list(p.shape)] for n, p in network.named_parameters()]
    assert manifest["parameter_count"] == sum(p.numel() for p in network.parameters()) == buffer.parameter_count
    assert manifest["spec"] == {"channels": 1, "height": 8, "width": 8, "num_classes": 3}
    assert manifest["preprocessing"]["kind"] == "normalize" and manifest["dataset"] == "tiny"
    assert manifest["config"]["epochs"] == 2 and len(manifest["expert_seeds"]) == 2
    trajectory = load_file(str(tmp_path / "expert_0000.safetensors"))["trajectory"]
    assert trajectory.shape == (3, buffer.parameter_count) and trajectory.dtype == torch.float32
    assert not torch.equal(trajectory[0], trajectory[1]) and not torch.equal(trajectory[1], trajectory[2])
    assert torch.equal(buffer.rows(0, [2, 0]), trajectory[[2, 0]])
    loaded = load_experts(tmp_path)
    assert len(loaded.trajectories) == 2 and torch.equal(loaded.trajectories[0], trajectory)


def test_each_row_is_the_network_after_that_many_epochs(gray_spec):
    """Row e of a 3-epoch expert equals the final parameters of the same expert trained e epochs."""
    dataset = tiny_dataset(gray_spec)
    inputs = Preprocessing("normalize").fit(dataset.train.images)(dataset.train.images)
    long = train_expert(gray_spec, inputs, dataset.train.labels, ExpertConfig(epochs=3, momentum=0.9, **TINY), seed=7)
    short = train_expert(gray_spec, inputs, dataset.train.labels, ExpertConfig(epochs=1, momentum=0.9, **TINY), seed=7)
    initial = build_network("convnet", gray_spec, TINY["network_settings"],
                            int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(7))))
    assert torch.equal(long[0], flatten_parameters(initial))
    assert torch.equal(long[:2], short)


def test_resume_trains_only_the_missing_expert(tmp_path, gray_spec, monkeypatch):
    dataset, config = tiny_dataset(gray_spec), ExpertConfig(experts=3, epochs=1, **TINY)
    train_experts(dataset, config, tmp_path, torch.Generator().manual_seed(0), progress=False)
    original = (tmp_path / "expert_0002.safetensors").read_bytes()
    (tmp_path / "expert_0002.safetensors").unlink()  # as if killed while writing the last expert
    calls = []
    real_train = experts_module.train_expert
    monkeypatch.setattr(experts_module, "train_expert", lambda *a, **k: calls.append(a[4]) or real_train(*a, **k))
    buffer = train_experts(dataset, config, tmp_path, torch.Generator().manual_seed(0), progress=False)
    seeds = json.loads((tmp_path / MANIFEST).read_text())["expert_seeds"]
    assert calls == [seeds[2]]  # only the missing one was trained
    assert (tmp_path / "expert_0002.safetensors").read_bytes() == original  # and came out identical
    assert buffer.count == 3
    with pytest.raises(ConfigError, match="different configuration"):
        train_experts(dataset, ExpertConfig(experts=3, epochs=2, **TINY), tmp_path, torch.Generator().manual_seed(0),
                      progress=False)
    with pytest.raises(ConfigError, match="expert_seeds"):
        train_experts(dataset, config, tmp_path, torch.Generator().manual_seed(1), progress=False)


def test_load_refuses_a_tampered_or_missing_file(tmp_path, gray_spec):
    train_experts(tiny_dataset(gray_spec), ExpertConfig(experts=2, epochs=1, **TINY), tmp_path,
                  torch.Generator().manual_seed(0), progress=False)
    path = tmp_path / "expert_0001.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of one parameter
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load_experts(tmp_path)
    with pytest.raises(ArtifactError, match="checksum"):
        ExpertBuffer(tmp_path).rows(1, [0])
    path.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_experts(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="JSON"):
        ExpertBuffer(tmp_path)
    with pytest.raises(ArtifactError, match="no expert manifest"):
        ExpertBuffer(tmp_path / "elsewhere")


def test_cli_experts_command(tmp_path, capsys):
    config_file = tmp_path / "experts.json"
    config_file.write_text(json.dumps({"preset": "cpu", "network_settings": {"width": 4, "depth": 1}}))
    out = tmp_path / "experts"
    code = cli_main(["experts", "--dataset", "digits", "--out", str(out), "--config", str(config_file),
                     "--set", "experts=1", "--set", "epochs=1", "--set", "real_images=100", "--device", "cpu", "--quiet"])
    assert code == 0 and "1 experts x 1 epochs" in capsys.readouterr().out
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["dataset"] == "digits" and manifest["config"]["real_images"] == 100
    assert cli_main(["experts", "--dataset", "digits", "--out", str(out), "--set", "epochz=1"]) == 2
    assert "epochz" in capsys.readouterr().err
