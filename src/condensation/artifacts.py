"""Run directories: everything needed to regenerate, view and evaluate a condensed set.

Files: container.safetensors, generated.safetensors, preprocessing.safetensors, metadata.json (with the
sha256 of every tensor file and of its own content), grid.png, metrics.jsonl, results.json. Every file is
written atomically. Nothing read back is trusted: metadata.json and results.json are checked against a schema
before use, and every fault comes out as one ArtifactError line.
"""
from __future__ import annotations

import hashlib
import json
import os
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
from .errors import ArtifactError, CondensationError
from .io import atomic_save_tensors, atomic_write_json, sha256  # noqa: F401  (atomic_write_json re-exported)

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
    _check(metadata, METADATA_SCHEMA, "", meta_path)
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
    _check(results, RESULTS_SCHEMA, "", file)
    return results


# ------------------------------------------------------------------------------------------------ schemas
# A schema is a _Kind (a test on one value), a dict (a JSON object with at least these keys; values are
# schemas, _Optional ones may be absent) or _MapOf (an object with any keys, every value of one schema).


@dataclass(frozen=True)
class _Kind:
    expected: str
    test: Callable[[Any], bool]


@dataclass(frozen=True)
class _Optional:
    schema: Any


@dataclass(frozen=True)
class _MapOf:
    schema: Any


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a count


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


STRING = _Kind("a string", lambda v: isinstance(v, str))
STRING_OR_NULL = _Kind("a string or null", lambda v: v is None or isinstance(v, str))
BOOLEAN = _Kind("true or false", lambda v: isinstance(v, bool))
INTEGER = _Kind("an integer", _is_int)
COUNT = _Kind("an integer >= 0", lambda v: _is_int(v) and v >= 0)
POSITIVE = _Kind("an integer >= 1", lambda v: _is_int(v) and v >= 1)
NUMBER = _Kind("a number", _is_number)
OBJECT = _Kind("an object", lambda v: isinstance(v, dict))
HEX_DIGEST = _Kind("a sha256 hex digest (64 hex digits)",
                   lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v))
STRINGS = _Kind("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
NUMBERS = _Kind("a list of numbers", lambda v: isinstance(v, list) and all(_is_number(x) for x in v))

# every field load_artifact, Artifact, `condense show` and evaluate_artifact read; dataset, ipc and seed are
# optional because save_artifact takes whatever metadata its caller gives (run.distill always writes them)
METADATA_SCHEMA = {
    "recipe": STRING, "dataset": _Optional(STRING), "ipc": _Optional(POSITIVE), "seed": _Optional(INTEGER),
    "spec": {"channels": POSITIVE, "height": POSITIVE, "width": POSITIVE, "num_classes": POSITIVE,
             "class_names": STRINGS, "flip_allowed": BOOLEAN},
    "container": {"name": STRING, "config": OBJECT, "images_per_class": POSITIVE},
    "preprocessing": {"kind": STRING, "zca_epsilon": _Optional(NUMBER), "zca_input": _Optional(STRING)},
    "storage": {"stored_floats": COUNT, "stored_bytes": COUNT, "budget_floats": POSITIVE, "budget_ratio": NUMBER,
                "generated_images_per_class": POSITIVE, "generated_images_total": POSITIVE},
    "sha256": {name: HEX_DIGEST for name in TENSOR_FILES},
    "config": _Optional({"data_root": _Optional(STRING_OR_NULL), "validation_fraction": _Optional(NUMBER)}),
    "objective_values": _Optional(_MapOf(NUMBER)),
}

# every key `condense report` (cli.markdown_table) reads, plus dataset and seed
RESULTS_SCHEMA = {
    "recipe": STRING, "container": STRING, "objective": STRING_OR_NULL, "dataset": STRING, "ipc": POSITIVE,
    "seed": INTEGER, "iterations": _Optional(COUNT), "stored_floats": COUNT, "budget_ratio": NUMBER,
    "generated_images_per_class": POSITIVE,
    "accuracy": _MapOf({"mean": NUMBER, "std": NUMBER, "n": COUNT}),
    "random_baseline": _Optional({"mean": NUMBER, "std": NUMBER, "draws": NUMBERS}),
    "protocol": {"name": STRING}, "wall_clock_seconds": {"distill": NUMBER},
}


def _check(value: Any, schema: Any, where: str, file: Path) -> None:
    """Raise one ArtifactError line naming the first field of ``value`` that does not fit ``schema``."""
    if isinstance(schema, _Kind):
        if not schema.test(value):
            raise ArtifactError(f"{file}: {where} must be {schema.expected}, got {_brief(value)}")
        return
    if not isinstance(value, dict):
        raise ArtifactError(f"{file}: {where} must be an object, got {_brief(value)}" if where else
                            f"{file} must hold a JSON object, got {_brief(value)}")
    fields = {key: schema.schema for key in value} if isinstance(schema, _MapOf) else schema
    for key, field_schema in fields.items():
        shown = key if key.isprintable() and key else json.dumps(key)  # a key from the file may hold a newline
        path = f"{where}.{shown}" if where else shown
        if isinstance(field_schema, _Optional):
            if key not in value:
                continue
            field_schema = field_schema.schema
        if key not in value:
            raise ArtifactError(f"{file}: {path} is missing")
        _check(value[key], field_schema, path, file)


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
