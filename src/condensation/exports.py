"""Exports of an artifact's generated set into other fields' layouts: DC's res.pt, MTT's images_best.pt,
an image folder of PNGs with labels.csv, a Hugging Face dataset.

Each format writes a directory of its own: the tensors in the field's layout, preprocessing.json and
preprocessing.safetensors (the transform the images went through), classes.json and a README.md saying in
which space the images are and how to give real test images the same transform. The directory is built
under a temporary name beside it and renamed into place, so a failed export leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import csv
import os
import shutil
from pathlib import Path

import torch

from . import __version__
from .artifacts import Artifact
from .data.preprocessing import Preprocessing
from .errors import ConfigError
from .io import atomic_save_tensors, atomic_write_bytes, atomic_write_json

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
