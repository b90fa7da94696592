"""Run directories: everything needed to regenerate, view and evaluate a condensed set.

Files: container.safetensors, generated.safetensors, preprocessing.safetensors, metadata.json (with the
sha256 of every tensor file and of its own content), grid.png, metrics.jsonl, results.json, and one line per
``condense evaluate`` in evaluations.jsonl. Every file is written atomically, with an ordinary file's mode
(0o666 less the umask). Exports to other fields' layouts live in exports.py. Nothing read back is trusted:
metadata.json and results.json are checked against a schema (schema.py) before use, and every fault comes
out as one ArtifactError line.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import __version__
from .containers.base import Container, create_container
from .data.datasets import DataSpec
from .data.preprocessing import Preprocessing
from .errors import ArtifactError, CondensationError
from .io import atomic_save_tensors, atomic_write_bytes, atomic_write_json, sha256
from .schema import (ACCURACY, BOOLEAN, COUNT, HEX_DIGEST, INTEGER, NUMBER, NUMBERS, OBJECT, POSITIVE, STRING,
                     STRING_OR_NULL, STRINGS, MapOf, OptionalField, brief, check_schema, one_line, read_json)

# 2: metadata.json carries METADATA_DIGEST, the sha256 of its own content. 1 (before that) still loads,
# with the schema check but without the digest.
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
METADATA_DIGEST = "metadata_sha256"
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

    def dataset(self) -> torch.utils.data.TensorDataset:
        """The generated images and their labels as a ``torch.utils.data.Dataset`` of ``(image, label)``
        pairs: images float32 (C, H, W) in network-input space (normalized or ZCA-whitened, as the
        artifact's preprocessing makes them), labels int64 hard class indices (no soft labels).

        A model trained on these images expects every input in that space: pass real test images, float
        pixels in [0, 1] of shape (N, C, H, W), through the artifact's preprocessing first::

            inputs = artifact.container.preprocessing(pixels)   # the same transform the generated images had
            logits = model(inputs)

        ``artifact.container.preprocessing.inverse(images)`` maps generated images back to [0, 1] pixels
        for viewing. Containers that draw new images every epoch (``container.random_per_epoch``, HaBa) give
        one fixed draw here, the one saved in generated.safetensors."""
        from torch.utils.data import TensorDataset

        return TensorDataset(self.generated_images, self.generated_labels)


def save_artifact(directory: str | Path, container: Container, metadata: dict, grid_images_per_class: int = 10) -> Path:
    """Write the artifact files; metadata.json goes last, so a directory with it is complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generated = container.generate_all(torch.Generator().manual_seed(0), mode="evaluate")  # on its own device
    generated.images, generated.labels = generated.images.cpu(), generated.labels.cpu()
    atomic_save_tensors(directory / "container.safetensors", container.state_dict())
    atomic_save_tensors(directory / "generated.safetensors", {"images": generated.images, "labels": generated.labels})
    atomic_save_tensors(directory / "preprocessing.safetensors", container.preprocessing.state_dict())
    spec = container.spec
    grid = save_grid(directory / "grid.png", container.preprocessing.inverse(generated.images), generated.labels,
                     container.num_classes, grid_images_per_class, spec.class_names)
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
        "grid": grid,
    }
    # the digest covers what a reader gets back (tuples become lists, keys strings), so take the JSON round trip;
    # it lives inside metadata.json, which keeps "metadata.json is written last, so a directory with it is complete"
    full = json.loads(json.dumps(full))
    full[METADATA_DIGEST] = metadata_digest(full)
    atomic_write_json(directory / "metadata.json", full)
    return directory


def metadata_digest(metadata: dict) -> str:
    """sha256 of the canonical JSON of ``metadata`` without its digest field (key order and spacing ignored)."""
    body = {key: value for key, value in metadata.items() if key != METADATA_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


GRID_MIN_CELL = 64  # pixels: small images are upscaled (nearest neighbour) to at least this size in grid.png


def save_grid(path: Path, pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int,
              class_names: tuple[str, ...] | list[str] = ()) -> dict:
    """A PNG with one row per class, labelled with the class name, of up to ``per_class`` images each, in
    viewable [0, 1] pixel space. Images smaller than GRID_MIN_CELL pixels are upscaled by an integer factor
    (nearest neighbour, no smoothing), so 8x8 or 28x28 images stay visible. When a class has more images
    than the grid shows, a line under the grid (and the PNG's Comment text) says how many are left out.
    Returns what the grid shows (saved in metadata.json under "grid")."""
    import torchvision
    from PIL import Image, ImageDraw, PngImagePlugin

    counts = torch.bincount(labels, minlength=num_classes)
    most = int(counts.max()) if len(counts) else 0
    shown = max(1, min(per_class, most))
    scale = max(1, math.ceil(GRID_MIN_CELL / max(pixels.shape[-2:])))
    rows = []
    for c in range(num_classes):
        images = pixels[labels == c][:shown]
        pad = shown - len(images)
        if pad > 0:
            images = torch.cat([images, torch.ones(pad, *pixels.shape[1:], dtype=pixels.dtype)])
        rows.append(images)
    cells = torch.cat(rows).clamp(0, 1)
    if scale > 1:
        cells = cells.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)  # nearest neighbour
    grid = torchvision.utils.make_grid(cells, nrow=shown, padding=2, pad_value=1.0)
    array = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    tiles = Image.fromarray(array, "RGB")

    names = [str(class_names[c]) if c < len(class_names) else str(c) for c in range(num_classes)]
    names = [name if len(name) <= 24 else name[:21] + "..." for name in names]
    note = None
    if most > shown:
        note = (f"showing the first {shown} of {most} images per class (the grid shows at most {per_class}); "
                f"all are in generated.safetensors")
    font = _grid_font()
    draw = ImageDraw.Draw(tiles)
    label_width = 8 + max(int(math.ceil(draw.textlength(name, font=font))) for name in names)
    footer = 24 if note else 0
    note_width = 8 + int(math.ceil(draw.textlength(note, font=font))) if note else 0
    canvas = Image.new("RGB", (max(label_width + tiles.width, note_width), tiles.height + footer), "white")
    canvas.paste(tiles, (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = (tiles.height - 2) / num_classes
    for c, name in enumerate(names):
        _text_centred(draw, 2 + (c + 0.5) * row_height, name, font)
    if note:
        _text_centred(draw, tiles.height + footer / 2, note, font)
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", note or f"all {most} images per class shown")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", pnginfo=text)
    atomic_write_bytes(path, buffer.getvalue())
    return {"images_per_class_shown": shown, "images_per_class": most, "upscale": scale, "note": note}


def _text_centred(draw, middle: float, text: str, font) -> None:
    """``text`` at x = 4, centred vertically on ``middle`` (no anchors: Pillow's bitmap font lacks them)."""
    top, bottom = draw.textbbox((0, 0), text, font=font)[1::2]
    draw.text((4, round(middle - (top + bottom) / 2)), text, fill="black", font=font)


def _grid_font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=14)  # Pillow >= 10.1 with FreeType: a readable size
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def is_artifact(directory: str | Path) -> bool:
    return (Path(directory) / "metadata.json").exists()


def load_artifact(directory: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Load and verify an artifact (metadata digest and schema, checksums, shapes); refuses anything
    truncated or altered with an ArtifactError."""
    directory = Path(directory)
    meta_path = directory / "metadata.json"
    if not meta_path.exists():
        raise ArtifactError(f"'{directory}' is not an artifact (no metadata.json)")
    metadata = read_json(meta_path)
    check_metadata(metadata, meta_path)
    for name in TENSOR_FILES:
        path = directory / name
        if not path.exists():
            raise ArtifactError(f"artifact file '{path}' is missing")
        if sha256(path) != metadata["sha256"][name]:
            raise ArtifactError(f"artifact file '{path}' does not match its checksum (truncated or altered)")
    try:
        container_state = load_file(str(directory / "container.safetensors"))
        generated = load_file(str(directory / "generated.safetensors"))
        pre_state = load_file(str(directory / "preprocessing.safetensors"))
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"cannot read artifact tensors in '{directory}': {one_line(error)}") from None
    s = metadata["spec"]
    spec = DataSpec(s["channels"], s["height"], s["width"], s["num_classes"], tuple(s["class_names"]), s["flip_allowed"])
    images, labels = generated.get("images"), generated.get("labels")
    if (images is None or labels is None or images.dim() != 4 or labels.shape != images.shape[:1]
            or tuple(images.shape[1:]) != (spec.channels, spec.height, spec.width)):
        raise ArtifactError(f"{meta_path}: spec does not match the images in generated.safetensors")
    container = _build_container(metadata, spec, pre_state, container_state, meta_path)
    return Artifact(directory, container.to(device), metadata, images, labels)


def _build_container(metadata: dict, spec: DataSpec, pre_state: dict, state: dict, meta_path: Path) -> Container:
    info = metadata["container"]
    try:
        preprocessing = Preprocessing.from_state(metadata["preprocessing"], pre_state)
        # shapes first on the meta device (no memory): sizes from an unsigned file must not allocate gigabytes
        with torch.device("meta"):
            shapes = create_container(info["name"], spec, info["images_per_class"], preprocessing, **info["config"])
        expected = {name: tuple(tensor.shape) for name, tensor in shapes.state_dict().items()}
        if expected != {name: tuple(tensor.shape) for name, tensor in state.items()}:
            raise ArtifactError(f"{meta_path}: container.safetensors does not fit the container it describes "
                                f"(other tensors or shapes)")
        container = create_container(info["name"], spec, info["images_per_class"], preprocessing, **info["config"])
        container.load_state_dict(state, strict=True)
    except ArtifactError:
        raise
    except CondensationError as error:
        raise ArtifactError(f"{meta_path}: {one_line(error)}") from None
    # values from the file reach container code written for trusted callers: whatever it raises, the file is at fault
    except Exception as error:  # noqa: BLE001
        raise ArtifactError(f"{meta_path}: container '{info['name']}' cannot be built from its config "
                            f"({type(error).__name__}: {one_line(error)})") from None
    return container


def check_metadata(metadata: Any, meta_path: Path) -> None:
    """Refuse an edited metadata.json (digest) or one whose fields are missing or of the wrong type."""
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{meta_path} must hold a JSON object, got {brief(metadata)}")
    version = metadata.get("schema_version")
    if not INTEGER.test(version) or version not in READABLE_SCHEMAS:
        raise ArtifactError(f"{meta_path}: artifact schema {brief(version)} is not one of "
                            f"{', '.join(map(str, READABLE_SCHEMAS))} (written by another library version?)")
    if version >= 2:
        digest = metadata.get(METADATA_DIGEST)
        if digest is None:
            raise ArtifactError(f"{meta_path} was modified after it was written: its {METADATA_DIGEST} is missing")
        try:
            actual = metadata_digest(metadata)
        except RecursionError:
            actual = None
        if digest != actual:
            raise ArtifactError(f"{meta_path} was modified after it was written: its content does not match "
                                f"its {METADATA_DIGEST}")
    check_schema(metadata, METADATA_SCHEMA, "", meta_path)
    spec = metadata["spec"]
    if len(spec["class_names"]) != spec["num_classes"]:
        raise ArtifactError(f"{meta_path}: spec.class_names must hold spec.num_classes ({spec['num_classes']}) "
                            f"names, got {len(spec['class_names'])}")


def load_results(path: str | Path) -> dict:
    """A run's results.json (``path``: the run directory or the file), checked for every key a report reads."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.exists():
        raise ArtifactError(f"'{path}' has no results.json (unfinished or not evaluated)")
    results = read_json(file)
    check_schema(results, RESULTS_SCHEMA, "", file)
    return results


# every field load_artifact, Artifact, `condense show` and evaluate_artifact read; dataset, ipc and seed are
# optional because save_artifact takes whatever metadata its caller gives (run.distill always writes them)
METADATA_SCHEMA = {
    "recipe": STRING, "dataset": OptionalField(STRING), "ipc": OptionalField(POSITIVE), "seed": OptionalField(INTEGER),
    "spec": {"channels": POSITIVE, "height": POSITIVE, "width": POSITIVE, "num_classes": POSITIVE,
             "class_names": STRINGS, "flip_allowed": BOOLEAN},
    "container": {"name": STRING, "config": OBJECT, "images_per_class": POSITIVE},
    "preprocessing": {"kind": STRING, "zca_epsilon": OptionalField(NUMBER), "zca_input": OptionalField(STRING)},
    "storage": {"stored_floats": COUNT, "stored_bytes": COUNT, "budget_floats": POSITIVE, "budget_ratio": NUMBER,
                "generated_images_per_class": POSITIVE, "generated_images_total": POSITIVE},
    "sha256": {name: HEX_DIGEST for name in TENSOR_FILES},
    "config": OptionalField({"data_root": OptionalField(STRING_OR_NULL), "validation_fraction": OptionalField(NUMBER)}),
    "objective_values": OptionalField(MapOf(NUMBER)),
}

# every key `condense report` (cli.markdown_table) reads, plus dataset and seed
RESULTS_SCHEMA = {
    "recipe": STRING, "container": STRING, "objective": STRING_OR_NULL, "dataset": STRING, "ipc": POSITIVE,
    "seed": INTEGER, "iterations": OptionalField(COUNT), "stored_floats": COUNT, "budget_ratio": NUMBER,
    "generated_images_per_class": POSITIVE,
    "accuracy": ACCURACY,
    "random_baseline": OptionalField({"mean": NUMBER, "std": NUMBER, "draws": NUMBERS}),
    "protocol": {"name": STRING}, "wall_clock_seconds": {"distill": NUMBER},
}
