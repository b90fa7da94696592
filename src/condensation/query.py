"""Label-mixture queries of a condensed artifact (RTP's generalized queries; docs/methods.md, Queries).

A mix is text: terms joined by ``+``, each an optional weight and ``*`` followed by a class, given by its name
(as the dataset names it; names may hold '/', '-', spaces, even '+') or its index::

    "Shirt"                         one class: its own generated images
    "0.5*T-shirt/top+0.5*Shirt"     half of each
    "2*3+1*5"                       classes 3 and 5, weights 2 and 1 (normalized: 2/3 and 1/3)

Weights default to 1, must be >= 0 and finite, and each mix is normalized to sum 1; a class named twice
adds up. A term that is a class name means that class, even where it is also an integer (Digits' "3" is
class 3 either way); other integers are indices. ``query_artifact`` writes the images of several mixes as
one grid PNG (a row per mix) and a .safetensors file.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .artifacts import load_artifact, save_grid
from .data.datasets import DataSpec
from .errors import ConfigError
from .io import replace_synced, temporary_name

# an optional weight before '*': 0.5, 2, .25, 1e-3 (a minus sign is read so that it can be refused by name)
WEIGHT = re.compile(r"\s*(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\*")
GRID_FILE, TENSORS_FILE = "queries.png", "queries.safetensors"
SHOWN_CLASSES = 20  # error messages list at most this many valid classes


# ------------------------------------------------------------------------------------------- parsing
def parse_mix(text: str, spec: DataSpec) -> torch.Tensor:
    """One mix -> its weights (classes,), float64, as written (not normalized); ConfigError names the fault."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a mix must name at least one class, got {text!r}; e.g. '{_example(spec)}'")
    terms = _terms(text, 0, spec)
    if terms is None:
        raise _fault(text, spec)
    weights = torch.zeros(spec.num_classes, dtype=torch.float64)
    for weight, _ in terms:
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"mix '{text}': weight {weight:g} must be a finite number >= 0 (a mix blends "
                              "classes, it cannot subtract one)")
    classes, values = zip(*((index, weight) for weight, index in terms))
    weights.index_add_(0, torch.tensor(classes), torch.tensor(values, dtype=torch.float64))  # repeated classes add
    if not bool((weights > 0).any()):
        raise ConfigError(f"mix '{text}' gives every class weight 0; at least one weight must be positive")
    return weights


def parse_mixes(texts: list[str] | str, spec: DataSpec) -> torch.Tensor:
    """Several mixes -> (Q, classes) weights, one row per mix, in order."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ConfigError(f"give at least one mix, e.g. '{_example(spec)}'")
    return torch.stack([parse_mix(text, spec) for text in texts])


def _terms(text: str, start: int, spec: DataSpec) -> list[tuple[float, int]] | None:
    """(weight, class) terms of ``text[start:]``, or None where it does not parse. A term's class runs to one
    of the following '+' or to the end: the farthest that names a class and leaves a parsable rest wins, so a
    name holding '+' is one class (a weight before each part, '1*a+1*b', splits it)."""
    match = WEIGHT.match(text, start)
    weight, position = (float(match[1]), match.end()) if match else (1.0, start)
    ends = [m.start() for m in re.finditer(r"\+", text[position:])]
    for end in reversed([position + e for e in ends] + [len(text)]):
        index = _class_of(text[position:end].strip(), spec)
        if index is None:
            continue
        if end == len(text):
            return [(weight, index)]
        rest = _terms(text, end + 1, spec)
        if rest is not None:
            return [(weight, index)] + rest
    return None


def _class_of(name: str, spec: DataSpec) -> int | None:
    """The class a term names: its exact name, else its name ignoring case (if one class has it), else an
    integer index; None if none."""
    names = list(spec.class_names)
    for matches in ([i for i, n in enumerate(names) if n == name],
                    [i for i, n in enumerate(names) if n.casefold() == name.casefold()]):
        if len(matches) > 1:
            raise ConfigError(f"classes {', '.join(map(str, matches))} are all named '{name}'; use the index of "
                              "the one you mean")
        if matches:
            return matches[0]
    if name.isascii() and name.isdigit() and int(name) < spec.num_classes:
        return int(name)
    return None


def _fault(text: str, spec: DataSpec) -> ConfigError:
    """The error for a mix that does not parse: the first '+'-separated term that names no class."""
    for piece in text.split("+"):
        match = WEIGHT.match(piece)
        name = piece[match.end():].strip() if match else piece.strip()
        if not name:
            return ConfigError(f"mix '{text}' has an empty term (a '+' or '*' with no class after it); "
                               f"write e.g. '{_example(spec)}'")
        if _class_of(name, spec) is None:
            if name.isascii() and name.isdigit():
                return ConfigError(f"mix '{text}': class index {name} is out of range; indices are 0 to "
                                   f"{spec.num_classes - 1}")
            return ConfigError(f"mix '{text}': unknown class '{name}'; {_valid_classes(spec)}")
    return ConfigError(f"mix '{text}' does not parse; write terms as WEIGHT*CLASS joined by '+', e.g. "
                       f"'{_example(spec)}'; {_valid_classes(spec)}")


def _valid_classes(spec: DataSpec) -> str:
    if not spec.class_names:
        return f"this dataset names no classes: use indices 0 to {spec.num_classes - 1}"
    listed = ", ".join(f"{i} '{n}'" for i, n in enumerate(spec.class_names[:SHOWN_CLASSES]))
    more = f", ... ({spec.num_classes} classes)" if spec.num_classes > SHOWN_CLASSES else ""
    return f"valid classes (name or index): {listed}{more}"


def _example(spec: DataSpec) -> str:
    names = list(spec.class_names[:2]) or ["0", "1"][:spec.num_classes]
    return "+".join(f"0.5*{n}" for n in names) if len(names) == 2 else names[0]


def mix_label(weights: torch.Tensor, spec: DataSpec) -> str:
    """A short label of a weight row: the class name for one class, else normalized percentages in class
    order ('50%T-shirt/top+50%Shirt'), which fits the grid's label column where the text as typed may not."""
    shares = weights / weights.sum()
    chosen = torch.nonzero(shares).flatten().tolist()
    names = [spec.class_names[c] if c < len(spec.class_names) else str(c) for c in chosen]
    if len(chosen) == 1:
        return names[0]
    return "+".join(f"{100 * float(shares[c]):.3g}%{name}" for c, name in zip(chosen, names))


# ------------------------------------------------------------------------------------------- queries
@dataclass
class QueryResult:
    mixes: list[str]  # as given
    labels: list[str]  # the grid's row labels (mix_label)
    soft_labels: torch.Tensor  # (Q, classes), rows summing to 1: what the container mixed
    images: torch.Tensor  # (Q, n, C, H, W), network-input space (Container.query)
    pixels: torch.Tensor  # (Q, n, C, H, W), [0, 1]: preprocessing undone, clipped
    container: str
    linear: bool  # Container.linear_queries
    shown_per_mix: int
    grid_path: Path
    tensors_path: Path


def query_artifact(artifact_dir: str | Path, mixes: list[str] | str, out_dir: str | Path | None = None,
                   images_per_mix: int = 10, device: str | torch.device = "cpu") -> QueryResult:
    """Query the artifact in ``artifact_dir`` with each mix and write, in ``out_dir`` (default
    ARTIFACT/queries, created if needed):

    - queries.png: one row per mix, labelled by ``mix_label``, of its first ``images_per_mix`` images;
    - queries.safetensors: ``images`` (Q, n, C, H, W) as ``Container.query`` returns them (network-input
      space), ``pixels`` the same in [0, 1] (preprocessing undone, clipped), ``soft_labels`` (Q, classes),
      rows summing to 1; its metadata holds the mixes, the class names and the container.
    """
    if images_per_mix < 1:
        raise ConfigError(f"images per mix must be >= 1, got {images_per_mix}")
    mixes = [mixes] if isinstance(mixes, str) else list(mixes)
    artifact = load_artifact(artifact_dir, device)
    container, spec = artifact.container, artifact.spec
    weights = parse_mixes(mixes, spec)
    with torch.no_grad():
        images = container.query(weights).cpu()  # (Q, n, C, H, W)
        pixels = container.preprocessing.inverse(images.flatten(0, 1)).clamp(0, 1).view_as(images)
    soft_labels = container.query_weights(weights)
    labels = [mix_label(row, spec) for row in weights]

    out = Path(out_dir) if out_dir is not None else Path(artifact_dir) / "queries"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"'{out}' is a file; the query output (--out) must be a directory")
    out.mkdir(parents=True, exist_ok=True)
    # the grid gets only the images it shows, so it does not add save_grid's note about generated.safetensors
    shown = min(images_per_mix, images.shape[1])
    rows = torch.arange(len(mixes)).repeat_interleave(shown)
    save_grid(out / GRID_FILE, pixels[:, :shown].flatten(0, 1), rows, len(mixes), shown, labels)
    _save_tensors(out / TENSORS_FILE, {"images": images, "pixels": pixels, "soft_labels": soft_labels}, {
        "mixes": json.dumps(mixes), "labels": json.dumps(labels), "class_names": json.dumps(list(spec.class_names)),
        "container": container.registry_name, "linear_queries": json.dumps(container.linear_queries),
        "artifact": str(artifact.path),
        "layout": "images, pixels: (query, image, C, H, W); soft_labels: (query, class)",
    })
    return QueryResult(mixes, labels, soft_labels, images, pixels, container.registry_name,
                       container.linear_queries, shown, out / GRID_FILE, out / TENSORS_FILE)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """atomic_save_tensors with safetensors' string metadata (temporary file, fsync, rename)."""
    temporary = temporary_name(path)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(temporary), metadata=metadata)
    replace_synced(temporary, path)


def describe_query(result: QueryResult) -> str:
    """What ``condense query`` prints: each mix's normalized weights and the files written."""
    count, per_mix = result.images.shape[:2]
    meaning = ("linear: each image is the same mixture of the classes' images" if result.linear else
               "not linear: the mixture is decoded, so it is not the mixture of the classes' images")
    lines = [f"container '{result.container}' ({meaning}); {per_mix} images per mix"]
    lines += [f"  row {q + 1}: {text}  ->  {label}" for q, (text, label) in enumerate(zip(result.mixes, result.labels))]
    lines.append(f"wrote {result.grid_path} ({count} rows of {result.shown_per_mix} images)")
    lines.append(f"wrote {result.tensors_path} (images and pixels {tuple(result.images.shape)}, "
                 f"soft_labels {tuple(result.soft_labels.shape)})")
    return "\n".join(lines)


__all__ = ["QueryResult", "describe_query", "mix_label", "parse_mix", "parse_mixes", "query_artifact"]
