"""Run directories: everything needed to regenerate, view and evaluate a condensed set.

Files: container.safetensors, generated.safetensors, preprocessing.safetensors, metadata.json (with the
sha256 of every tensor file), grid.png, metrics.jsonl, results.json. Every file is written atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import __version__
from .containers.base import Container, create_container
from .data.datasets import DataSpec
from .data.preprocessing import Preprocessing
from .errors import ArtifactError
from .io import atomic_save_tensors, atomic_write_json, sha256  # noqa: F401  (atomic_write_json re-exported)

SCHEMA_VERSION = 1
TENSOR_FILES = ("container.safetensors", "generated.safetensors", "preprocessing.safetensors")


@dataclass
class Artifact:
    path: Path
    container: Container
    metadata: dict
    generated_images: torch.Tensor
    generated_labels: torch.Tensor

    @property
    def spec(self) -> DataSpec:
        return self.container.spec

    @property
    def learned_learning_rate(self) -> float | None:
        return self.metadata.get("objective_values", {}).get("learned_learning_rate")


def save_artifact(directory: str | Path, container: Container, metadata: dict, grid_images_per_class: int = 10) -> Path:
    """Write the artifact files; metadata.json goes last, so a directory with it is complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generated = container.generate_all(torch.Generator().manual_seed(0), mode="evaluate")  # on its own device
    generated.images, generated.labels = generated.images.cpu(), generated.labels.cpu()
    atomic_save_tensors(directory / "container.safetensors", container.state_dict())
    atomic_save_tensors(directory / "generated.safetensors", {"images": generated.images, "labels": generated.labels})
    atomic_save_tensors(directory / "preprocessing.safetensors", container.preprocessing.state_dict())
    save_grid(directory / "grid.png", container.preprocessing.inverse(generated.images), generated.labels,
              container.num_classes, grid_images_per_class)
    spec = container.spec
    full = {
        "schema_version": SCHEMA_VERSION,
        "library_version": __version__,
        "torch_version": torch.__version__,
        **metadata,
        "spec": {"channels": spec.channels, "height": spec.height, "width": spec.width,
                 "num_classes": spec.num_classes, "class_names": list(spec.class_names),
                 "flip_allowed": spec.flip_allowed},
        "container": {"name": container.registry_name, **container.construction()},
        "preprocessing": container.preprocessing.config(),
        "storage": {"stored_floats": container.stored_floats(), "stored_bytes": container.stored_bytes(),
                    "budget_floats": container.budget_floats,
                    "budget_ratio": container.stored_floats() / container.budget_floats,
                    "generated_images_per_class": container.generated_per_class(),
                    "generated_images_total": container.total_generated()},
        "sha256": {name: sha256(directory / name) for name in TENSOR_FILES},
    }
    atomic_write_json(directory / "metadata.json", full)
    return directory


def save_grid(path: Path, pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int) -> None:
    """A PNG with one row per class (up to ``per_class`` images each), in viewable [0, 1] pixel space."""
    import torchvision

    per_class = max(1, min(per_class, int(torch.bincount(labels, minlength=num_classes).max())))
    rows = []
    for c in range(num_classes):
        images = pixels[labels == c][:per_class]
        pad = per_class - len(images)
        if pad > 0:
            images = torch.cat([images, torch.ones(pad, *pixels.shape[1:])])
        rows.append(images)
    grid = torchvision.utils.make_grid(torch.cat(rows).clamp(0, 1), nrow=per_class, padding=1, pad_value=1.0)
    temporary = path.with_name(path.name + ".tmp.png")
    torchvision.utils.save_image(grid, str(temporary))
    os.replace(temporary, path)


def is_artifact(directory: str | Path) -> bool:
    return (Path(directory) / "metadata.json").exists()


def load_artifact(directory: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Load and verify an artifact (checksums, shapes); refuses anything truncated or altered."""
    directory = Path(directory)
    meta_path = directory / "metadata.json"
    if not meta_path.exists():
        raise ArtifactError(f"'{directory}' is not an artifact (no metadata.json)")
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactError(f"'{meta_path}' is not valid JSON: {error}") from None
    if metadata.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"artifact schema {metadata.get('schema_version')} is not {SCHEMA_VERSION}")
    for name in TENSOR_FILES:
        path = directory / name
        if not path.exists():
            raise ArtifactError(f"artifact file '{path}' is missing")
        if sha256(path) != metadata["sha256"].get(name):
            raise ArtifactError(f"artifact file '{path}' does not match its checksum (truncated or altered)")
    try:
        container_state = load_file(str(directory / "container.safetensors"))
        generated = load_file(str(directory / "generated.safetensors"))
        pre_state = load_file(str(directory / "preprocessing.safetensors"))
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"cannot read artifact tensors in '{directory}': {error}") from None
    s = metadata["spec"]
    spec = DataSpec(s["channels"], s["height"], s["width"], s["num_classes"], tuple(s["class_names"]), s["flip_allowed"])
    preprocessing = Preprocessing.from_state(metadata["preprocessing"], pre_state)
    info = metadata["container"]
    container = create_container(info["name"], spec, info["images_per_class"], preprocessing, **info["config"])
    try:
        container.load_state_dict(container_state, strict=True)
    except RuntimeError as error:
        raise ArtifactError(f"container state in '{directory}' does not fit its config: {error}") from None
    return Artifact(directory, container.to(device), metadata, generated["images"], generated["labels"])


def export_dc(artifact: Artifact, path: str | Path) -> Path:
    """DC layout (VICO-UoE/DatasetCondensation res_*.pt): {'data': [[images, labels]], 'accs_all_exps': {}}."""
    path = Path(path)
    torch.save({"data": [[artifact.generated_images.clone(), artifact.generated_labels.clone()]],
                "accs_all_exps": {}}, path)
    return path


def export_mtt(artifact: Artifact, directory: str | Path) -> tuple[Path, Path]:
    """MTT layout: images_best.pt, labels_best.pt (and syn_lr_best.pt when a step size was learned)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = directory / "images_best.pt", directory / "labels_best.pt"
    torch.save(artifact.generated_images.clone(), images)
    torch.save(artifact.generated_labels.clone(), labels)
    if artifact.learned_learning_rate is not None:
        torch.save(torch.tensor(artifact.learned_learning_rate), directory / "syn_lr_best.pt")
    return images, labels
