"""Run directories: everything needed to regenerate, view and evaluate a condensed set.

Files: container.safetensors, generated.safetensors, preprocessing.safetensors, metadata.json (with the
sha256 of every tensor file and of its own content), grid.png, metrics.jsonl, results.json, and one line per
``condense evaluate`` in evaluations.jsonl. Every file is written atomically, with an ordinary file's mode
(0o666 less the umask). ``export_artifact`` writes the generated set in other fields' layouts (DC, MTT, an
image folder, a Hugging Face dataset), each beside its preprocessing and a README saying how to use it.
Nothing read back is trusted: metadata.json and results.json are checked against a schema before use, and
every fault comes out as one ArtifactError line.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import __version__
from .containers.base import Container, create_container
from .data.datasets import DataSpec
from .data.preprocessing import Preprocessing
from .errors import ArtifactError, CondensationError, ConfigError
from .io import atomic_save_tensors, atomic_write_bytes, atomic_write_json, sha256  # noqa: F401  (re-exported)

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
        raise ArtifactError(f"cannot read artifact tensors in '{directory}': {_one_line(error)}") from None
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
        raise ArtifactError(f"{meta_path}: {_one_line(error)}") from None
    # values from the file reach container code written for trusted callers: whatever it raises, the file is at fault
    except Exception as error:  # noqa: BLE001
        raise ArtifactError(f"{meta_path}: container '{info['name']}' cannot be built from its config "
                            f"({type(error).__name__}: {_one_line(error)})") from None
    return container


def read_json(path: Path) -> Any:
    """A JSON file's value; a file that is not UTF-8 or not JSON (e.g. truncated) is an ArtifactError."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ArtifactError(f"'{path}' is not UTF-8 text (damaged or not a JSON file)") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError; so are over-long integers
        raise ArtifactError(f"'{path}' is not valid JSON (truncated or damaged): {_one_line(error)}") from None
    except OSError as error:
        raise ArtifactError(f"cannot read '{path}': {error.strerror or error}") from None


def check_metadata(metadata: Any, meta_path: Path) -> None:
    """Refuse an edited metadata.json (digest) or one whose fields are missing or of the wrong type."""
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{meta_path} must hold a JSON object, got {_brief(metadata)}")
    version = metadata.get("schema_version")
    if not _is_int(version) or version not in READABLE_SCHEMAS:
        raise ArtifactError(f"{meta_path}: artifact schema {_brief(version)} is not one of "
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


# ------------------------------------------------------------------------------------------------ schemas
# A schema is a Kind (a test on one value), a dict (a JSON object with at least these keys; values are
# schemas, OptionalField ones may be absent) or MapOf (an object with any keys, every value of one schema).


@dataclass(frozen=True)
class Kind:
    expected: str
    test: Callable[[Any], bool]


@dataclass(frozen=True)
class OptionalField:
    schema: Any


@dataclass(frozen=True)
class MapOf:
    schema: Any


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a count


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


STRING = Kind("a string", lambda v: isinstance(v, str))
STRING_OR_NULL = Kind("a string or null", lambda v: v is None or isinstance(v, str))
BOOLEAN = Kind("true or false", lambda v: isinstance(v, bool))
INTEGER = Kind("an integer", _is_int)
COUNT = Kind("an integer >= 0", lambda v: _is_int(v) and v >= 0)
POSITIVE = Kind("an integer >= 1", lambda v: _is_int(v) and v >= 1)
NUMBER = Kind("a number", _is_number)
OBJECT = Kind("an object", lambda v: isinstance(v, dict))
HEX_DIGEST = Kind("a sha256 hex digest (64 hex digits)",
                   lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v))
STRINGS = Kind("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
NUMBERS = Kind("a list of numbers", lambda v: isinstance(v, list) and all(_is_number(x) for x in v))
LIST = Kind("a list", lambda v: isinstance(v, list))
ACCURACY = MapOf({"mean": NUMBER, "std": NUMBER, "n": COUNT})  # architecture -> accuracy over its networks

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


def check_schema(value: Any, schema: Any, where: str, file: Path) -> None:
    """Raise one ArtifactError line naming the first field of ``value`` that does not fit ``schema``."""
    if isinstance(schema, Kind):
        if not schema.test(value):
            raise ArtifactError(f"{file}: {where} must be {schema.expected}, got {_brief(value)}")
        return
    if not isinstance(value, dict):
        raise ArtifactError(f"{file}: {where} must be an object, got {_brief(value)}" if where else
                            f"{file} must hold a JSON object, got {_brief(value)}")
    fields = {key: schema.schema for key in value} if isinstance(schema, MapOf) else schema
    for key, field_schema in fields.items():
        shown = key if key.isprintable() and key else json.dumps(key)  # a key from the file may hold a newline
        path = f"{where}.{shown}" if where else shown
        if isinstance(field_schema, OptionalField):
            if key not in value:
                continue
            field_schema = field_schema.schema
        if key not in value:
            raise ArtifactError(f"{file}: {path} is missing")
        check_schema(value[key], field_schema, path, file)


def _brief(value: Any) -> str:
    """A value as JSON when short, else what it is: what an error line can show of it."""
    text = json.dumps(value)
    if len(text) <= 40:
        return text
    if isinstance(value, (list, dict)):
        return f"a list of {len(value)} item(s)" if isinstance(value, list) else f"an object with {len(value)} keys"
    return text[:37] + "..."


def _one_line(error: BaseException) -> str:
    """An error's message on one line (torch's state-dict errors span several; a value may hold a newline)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return (text if len(text) <= 300 else text[:297] + "...") or type(error).__name__


# ------------------------------------------------------------------------------------------------ exports
# Each format writes a directory of its own: the tensors in the field's layout, preprocessing.json and
# preprocessing.safetensors (the transform the images went through), classes.json and a README.md saying in
# which space the images are and how to give real test images the same transform. The directory is built
# under a temporary name beside it and renamed into place, so a failed export leaves nothing behind.

EXPORT_FORMATS = ("dc", "mtt", "image_folder", "hf")
HF_INSTALL_HINT = "pip install 'condensation[hf]'"


def export_artifact(artifact: Artifact, format: str, directory: str | Path) -> Path:
    """Write ``artifact``'s generated set into the new directory ``directory`` in ``format`` (one of
    EXPORT_FORMATS); returns the directory. A missing parent is created; an existing file or non-empty
    directory is refused."""
    writers = {"dc": export_dc, "mtt": export_mtt, "image_folder": export_image_folder, "hf": export_hf}
    if format not in writers:
        raise ConfigError(f"unknown export format '{format}'; choose one of: {', '.join(EXPORT_FORMATS)}")
    writers[format](artifact, directory)
    return Path(directory)


def export_dc(artifact: Artifact, directory: str | Path) -> Path:
    """DC/DSA/DM layout (VICO-UoE/DatasetCondensation saves res_<method>_<dataset>_<model>_<ipc>ipc.pt):
    DIR/res.pt holding {'data': [[images, labels]], 'accs_all_exps': {}}; returns the path of res.pt."""
    with _export_directory(directory) as work:
        torch.save({"data": [[artifact.generated_images.clone(), artifact.generated_labels.clone()]],
                    "accs_all_exps": {}}, work / "res.pt")
        _write_export_notes(work, artifact, "dc")
    return Path(directory) / "res.pt"


def export_mtt(artifact: Artifact, directory: str | Path) -> tuple[Path, Path]:
    """MTT layout (GeorgeCazenavette/mtt-distillation): DIR/images_best.pt, DIR/labels_best.pt and
    DIR/syn_lr_best.pt when a step size was learned; returns the paths of the images and labels."""
    with _export_directory(directory) as work:
        torch.save(artifact.generated_images.clone(), work / "images_best.pt")
        torch.save(artifact.generated_labels.clone(), work / "labels_best.pt")
        if artifact.learned_learning_rate is not None:
            torch.save(torch.tensor(artifact.learned_learning_rate), work / "syn_lr_best.pt")
        _write_export_notes(work, artifact, "mtt")
    directory = Path(directory)
    return directory / "images_best.pt", directory / "labels_best.pt"


def export_image_folder(artifact: Artifact, directory: str | Path) -> Path:
    """ImageFolder layout: DIR/<class>/<index>.png, one 8-bit PNG per generated image in [0, 1] pixel space
    (``preprocessing.inverse``, clipped to [0, 1]), plus labels.csv (file, label, class). Class folders sort in
    label order (torchvision's ImageFolder and the library's image_folder dataset number sorted folders); where
    the class names would not, each folder name starts with the label's index."""
    from PIL import Image

    folders = image_folder_names(artifact.spec.class_names or tuple(map(str, range(artifact.spec.num_classes))))
    pixels = artifact.container.preprocessing.inverse(artifact.generated_images.to(_preprocessing_device(artifact)))
    array = pixels.clamp(0, 1).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    labels = artifact.generated_labels.tolist()
    digits = max(4, len(str(max(1, int(torch.bincount(artifact.generated_labels).max())) - 1)))
    rows = [("file", "label", "class")]
    with _export_directory(directory) as work:
        seen = [0] * artifact.spec.num_classes
        for image, label in zip(array, labels):
            (work / folders[label]).mkdir(exist_ok=True)
            name = f"{folders[label]}/{seen[label]:0{digits}d}.png"
            seen[label] += 1
            Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image, "L" if image.shape[2] == 1 else "RGB") \
                .save(work / name)
            rows.append((name, label, artifact.spec.class_names[label] if artifact.spec.class_names else str(label)))
        with open(work / "labels.csv", "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)
        _write_export_notes(work, artifact, "image_folder", folders=folders)
    return Path(directory)


def export_hf(artifact: Artifact, directory: str | Path) -> Path:
    """A Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (read it with
    ``datasets.load_from_disk(DIR)``): columns pixel_values (float32 C x H x W network inputs, exact),
    image (the [0, 1] pixels as an 8-bit image, for viewing) and label (a ClassLabel with the class names).
    Needs the optional ``datasets`` package: pip install 'condensation[hf]'."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"--format hf needs the Hugging Face 'datasets' package, which is not installed: "
                          f"{HF_INSTALL_HINT}") from None
    from PIL import Image

    spec = artifact.spec
    names = list(spec.class_names) or [str(c) for c in range(spec.num_classes)]
    pixels = artifact.container.preprocessing.inverse(artifact.generated_images.to(_preprocessing_device(artifact)))
    array = pixels.clamp(0, 1).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    images = [Image.fromarray(a[:, :, 0], "L") if a.shape[2] == 1 else Image.fromarray(a, "RGB") for a in array]
    features = datasets.Features({
        "pixel_values": datasets.Array3D(shape=(spec.channels, spec.height, spec.width), dtype="float32"),
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=names),
    })
    table = datasets.Dataset.from_dict({"pixel_values": artifact.generated_images.numpy(), "image": images,
                                        "label": artifact.generated_labels.tolist()}, features=features)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # "Saving the dataset" bars would bury the one line condense prints
    try:
        with _export_directory(directory) as work:
            table.save_to_disk(str(work))
            _write_export_notes(work, artifact, "hf")
    finally:
        if bars:
            datasets.enable_progress_bars()
    return Path(directory)


def image_folder_names(class_names: tuple[str, ...] | list[str]) -> list[str]:
    """Folder names for the classes, in label order, that sort in label order and are valid file names."""
    names = []
    for name in class_names:
        cleaned = "".join("_" if ch in '/\\:*?"<>|' or not ch.isprintable() else ch for ch in str(name)).strip()
        names.append(cleaned.lstrip(".") or "_")
    if sorted(names) != names or len(set(names)) != len(names):
        width = len(str(len(names) - 1))
        names = [f"{index:0{width}d}_{name}" for index, name in enumerate(names)]
    return names


def _preprocessing_device(artifact: Artifact) -> torch.device:
    tensors = artifact.container.preprocessing.tensors
    return next(iter(tensors.values())).device if tensors else torch.device("cpu")


@contextlib.contextmanager
def _export_directory(directory: str | Path):
    """Yield a fresh temporary directory beside ``directory``, renamed to ``directory`` when the block ends
    without error (and removed when it fails). ``directory`` must not exist, or be an empty directory."""
    directory = Path(os.path.abspath(directory))
    if directory == Path(os.path.abspath(os.curdir)) or directory.parent == directory:
        raise ConfigError(f"'{directory}' is the current or root directory; --out must name a new directory")
    if directory.is_symlink():
        raise ConfigError(f"'{directory}' is a symbolic link; --out must name a new directory")
    if directory.exists():
        if not directory.is_dir():
            raise ConfigError(f"'{directory}' is a file; --out must name a directory for the export (it is created)")
        if any(directory.iterdir()):
            raise ConfigError(f"'{directory}' already exists and is not empty; choose a new --out (the export "
                              f"creates it) or empty it first")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"cannot create '{directory}': a part of its parent path is a file") from None
    except OSError as error:
        raise ConfigError(f"cannot create '{directory.parent}': {error.strerror or error}") from None
    work = directory.with_name(f".{directory.name}.{os.getpid()}.export-tmp")
    shutil.rmtree(work, ignore_errors=True)
    try:
        work.mkdir()
    except OSError as error:
        raise ConfigError(f"cannot write in '{directory.parent}': {error.strerror or error}") from None
    try:
        yield work
        if directory.is_dir():
            directory.rmdir()  # empty (checked above); a rename over it is not portable
        os.replace(work, directory)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


SPACE_TEXT = {
    "normalize": ("normalized", "per-channel normalized pixels: x = (p - mean) / std, where p are the pixels in "
                                "[0, 1] and mean, std (per channel) come from the real training split"),
    "none": ("pixels", "plain pixels in [0, 1] (no transform): x = p"),
    "zca": ("zca_whitened", "ZCA-whitened pixels: x = W (v - m), where v is the flattened image ({input}), "
                            "m the mean and W the whitening matrix fitted on the real training split "
                            "(eps {epsilon})"),
}


def preprocessing_description(preprocessing: Preprocessing) -> dict:
    """preprocessing.json's content: the transform that maps [0, 1] pixels to the network inputs."""
    space, text = SPACE_TEXT[preprocessing.kind]
    state = preprocessing.state_dict()
    description = {
        "kind": preprocessing.kind, "space": space,
        "input": "float pixels in [0, 1], shape (N, C, H, W), as torchvision's ToTensor() gives them",
        "mean": [float(v) for v in state["mean"]], "std": [float(v) for v in state["std"]],
    }
    if preprocessing.kind == "zca":
        whitened = "the raw [0, 1] pixels" if preprocessing.zca_input == "pixels" else \
            "the per-channel normalized pixels (p - mean) / std"
        text = text.format(input=whitened, epsilon=preprocessing.zca_epsilon)
        if preprocessing.zca_input == "pixels":
            text += "; the per-channel mean and std are recorded but not applied"
        description.update(zca_epsilon=preprocessing.zca_epsilon, zca_input=preprocessing.zca_input,
                           zca_file="preprocessing.safetensors",
                           zca_tensors={"zca_mean": "m, shape (C*H*W,)", "zca_matrix": "W, shape (C*H*W, C*H*W)",
                                        "zca_inverse": "W^-1 (network inputs back to pixels)"})
    description["transform"] = text
    description["tensors_file"] = "preprocessing.safetensors"  # every tensor, as the library's Preprocessing holds them
    return description


def preprocessing_snippet(preprocessing: Preprocessing) -> str:
    """Python that defines ``preprocess(pixels)``, the artifact's preprocessing, from the export's files only."""
    lines = ["import json", "", "import torch"]
    if preprocessing.kind == "zca":
        lines.append("from safetensors.torch import load_file")
    lines += ["", 'config = json.load(open("preprocessing.json"))',
              'mean = torch.tensor(config["mean"]).view(1, -1, 1, 1)',
              'std = torch.tensor(config["std"]).view(1, -1, 1, 1)']
    if preprocessing.kind == "zca":
        lines += ['zca = load_file("preprocessing.safetensors")  # zca_mean (D,), zca_matrix (D, D), D = C*H*W', "",
                  "", "def preprocess(pixels):  # float (N, C, H, W) in [0, 1] -> network inputs",
                  "    x = pixels" if preprocessing.zca_input == "pixels" else "    x = (pixels - mean) / std",
                  '    flat = x.reshape(x.shape[0], -1) - zca["zca_mean"]',
                  '    return (flat @ zca["zca_matrix"].T).reshape(x.shape)']
    else:
        lines += ["", "", "def preprocess(pixels):  # float (N, C, H, W) in [0, 1] -> network inputs",
                  "    return (pixels - mean) / std"]
    return "\n".join(lines)


def _write_export_notes(work: Path, artifact: Artifact, format: str, folders: list[str] | None = None) -> None:
    preprocessing = artifact.container.preprocessing
    atomic_write_json(work / "preprocessing.json", preprocessing_description(preprocessing))
    atomic_save_tensors(work / "preprocessing.safetensors", preprocessing.state_dict())
    spec = artifact.spec
    names = list(spec.class_names) or [str(c) for c in range(spec.num_classes)]
    atomic_write_json(work / "classes.json", names)
    atomic_write_bytes(work / "README.md", export_readme(artifact, format, folders).encode())


def export_readme(artifact: Artifact, format: str, folders: list[str] | None = None) -> str:
    meta, spec = artifact.metadata, artifact.spec
    preprocessing = artifact.container.preprocessing
    names = list(spec.class_names) or [str(c) for c in range(spec.num_classes)]
    count = int(artifact.generated_labels.numel())
    per_class = meta.get("storage", {}).get("generated_images_per_class", "?")
    space = SPACE_TEXT[preprocessing.kind][0]
    transform = preprocessing_description(preprocessing)["transform"]
    space_name = {"normalized": "normalized network inputs", "pixels": "[0, 1] pixels (no transform)",
                  "zca_whitened": "ZCA-whitened network inputs"}[space]
    lr = artifact.learned_learning_rate
    files = {
        "dc": [f"`res.pt`: `{{'data': [[images, labels]], 'accs_all_exps': {{}}}}`, as the official code of DC, "
               f"DSA and DM saves its `res_<method>_<dataset>_<model>_<ipc>ipc.pt`. Load it with "
               f"`images, labels = torch.load(\"res.pt\")[\"data\"][0]`: images float32 {_shape(artifact)}, "
               f"labels int64 ({count},), in the space below."],
        "mtt": ["`images_best.pt`, `labels_best.pt`: the images (float32 " + _shape(artifact) + ", in the space "
                "below) and labels (int64), each saved with `torch.save` as MTT's distill.py saves them; "
                "`torch.load(\"images_best.pt\")`."]
               + ([f"`syn_lr_best.pt`: the learned learning rate ({lr:g}), a 0-d tensor; MTT's evaluation trains "
                   f"on the images with it."] if lr is not None else
                  ["No `syn_lr_best.pt`: this artifact learned no learning rate."]),
        "image_folder": ["`<class>/<index>.png`: one 8-bit PNG per generated image, in **[0, 1] pixel space**: the "
                         "images were mapped back through the inverse of the preprocessing below, clipped to "
                         "[0, 1] and rounded to 1/255, so they are for viewing and for tools that read image "
                         "files, not the exact training inputs (those are in the artifact's "
                         "generated.safetensors, or `--format dc`). To train on the PNGs, load them with "
                         "`ToTensor()` and apply `preprocess` below, exactly as for real test images.",
                         "`labels.csv`: file, label (class index), class name, one row per image. "
                         "`torchvision.datasets.ImageFolder(\"<this folder>\")` numbers the sorted class folders "
                         "in the same order as these labels."],
        "hf": ["A Hugging Face `datasets` dataset (`save_to_disk`): `datasets.load_from_disk(\"<this folder>\")`. "
               f"Columns: `pixel_values` (float32 {tuple(artifact.generated_images.shape[1:])} each, "
               "the exact network inputs, in the space below), `image` (the same image in [0, 1] pixel space, "
               "clipped and rounded to 8 bits, for viewing), `label` (a ClassLabel with the class names). "
               "`.with_format(\"torch\")` gives tensors."],
    }[format]
    if folders is not None and folders != names:
        files.append("Class folders carry the label's index in front of the class name (`"
                     + "`, `".join(folders[:3]) + "`, ...) so that their sorted order is the label order.")
    files += ["`preprocessing.json`: the transform (kind, per-channel mean and std"
              + (", ZCA epsilon and input" if preprocessing.kind == "zca" else "") + ").",
              "`preprocessing.safetensors`: the transform's tensors (mean, std"
              + (", and the ZCA mean `zca_mean`, whitening matrix `zca_matrix` and its inverse `zca_inverse`"
                 if preprocessing.kind == "zca" else "") + ").",
              "`classes.json`: the class names in label order."]
    snippet = preprocessing_snippet(preprocessing)
    in_space = ("The PNG files are [0, 1] pixels (see above). A network trained as this library (and DC's and "
                "MTT's code) trains sees each image after the transform below, as " if format == "image_folder"
                else "The images are ")
    text = [
        f"# Condensed {meta.get('dataset', 'dataset')}: {meta.get('recipe', '?')}, IPC {meta.get('ipc', '?')}, "
        f"seed {meta.get('seed', '?')}",
        "",
        f"Exported with `condense export --format {format}` (condensation {__version__}) from the artifact "
        f"`{artifact.path}`: {count} generated images ({per_class} per class), "
        f"{spec.channels}x{spec.height}x{spec.width}, {spec.num_classes} classes.",
        "",
        "## Files",
        "",
        *[f"- {line}" for line in files],
        "",
        "## In which space the images are",
        "",
        f"{in_space}**{space_name}**: {transform}.",
        "",
        "## Give real test images the same transform",
        "",
        "A network trained on these images expects every input in that space: real test images must go through "
        "the same transform before the network sees them. Start from float pixels in [0, 1] of shape "
        "(N, C, H, W) (torchvision's `ToTensor()` gives them), then, from this folder:",
        "",
        "```python",
        snippet,
        "",
        "",
        "inputs = preprocess(pixels)  # what the network sees",
        "```",
        "",
    ]
    if preprocessing.kind == "normalize":
        text += ["This is `torchvision.transforms.Normalize(mean, std)` applied after `ToTensor()`.", ""]
    text += ["With the library and the artifact: "
             "`condensation.load_artifact(ARTIFACT).container.preprocessing(pixels)` gives the same values.", "",
             "## Labels", "",
             f"Hard class indices 0..{spec.num_classes - 1} (int64), in the order of `classes.json`: "
             + ", ".join(f"{i} = {name}" for i, name in enumerate(names[:20]))
             + (", ..." if len(names) > 20 else "") + ".",
             "There are no soft labels: this container stores none, every generated image has exactly one class.",
             ""]
    if artifact.container.random_per_epoch:
        text += ["## Note", "", f"Container `{meta['container']['name']}` draws new images every epoch when the "
                 "library evaluates it; this export holds one fixed draw (the one in generated.safetensors).", ""]
    return "\n".join(text)


def _shape(artifact: Artifact) -> str:
    return str(tuple(artifact.generated_images.shape))
