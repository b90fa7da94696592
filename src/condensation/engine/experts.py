"""Expert trajectories for trajectory matching (MTT's buffer.py, read, not copied; docs/methods.md,
Trajectory matching (MTT)).

An expert is a network trained on real data; its parameters are saved after every epoch. On disk, a
directory (written by ``condense experts`` or ``train_experts``)::

    expert_0000.safetensors   one tensor "trajectory": (epochs + 1, P) float32; row e holds the flat
                              parameters after e epochs (row 0: the random initialization). The flat
                              order is the network's ``named_parameters()`` order, each reshaped to (-1,).
    expert_0001.safetensors   ...
    experts.json              the manifest: format, schema_version, library and torch versions, dataset,
                              spec (channels, height, width, num_classes), preprocessing (kind, zca_epsilon,
                              per-channel mean and std), config (ExpertConfig), network (name, settings),
                              parameters ([name, shape] in flat order), parameter_count, expert_seeds, and
                              files ({file name: {"sha256", "bytes"}} for every finished expert).

Every file is written atomically (temporary file, fsync, rename) and the manifest is rewritten after each
expert, so a killed run loses at most the expert in progress; rerunning skips the finished ones.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from torch import nn

from .. import __version__
from ..containers.base import Batch
from ..data.augment import DSA, DSAConfig, flips_allowed
from ..data.datasets import Dataset, DataSpec
from ..data.preprocessing import Preprocessing
from ..errors import ArtifactError, ConfigError
from ..io import atomic_save_tensors, atomic_write_json, sha256
from ..networks import create_network
from ..registry import build_config
from ..runtime import progress_bar
from .train import TrainSettings, train_network

MANIFEST = "experts.json"
FORMAT = "condensation-experts"
SCHEMA_VERSION = 1
TENSOR_NAME = "trajectory"


@dataclass(frozen=True)
class ExpertConfig:
    """How experts are trained. Defaults are MTT's buffer.py (the ``paper`` preset)."""

    network: str = "convnet"
    network_settings: dict = field(default_factory=dict)  # e.g. {"width": 64}
    experts: int = 100
    epochs: int = 50
    learning_rate: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: bool = True  # DSA in single mode, one draw per sample (not siamese)
    flip_rule: str = "always"  # MTT buffer.py: the full DSA string, flips included, for every dataset
    preprocessing: str = "zca"  # "normalize" or "zca"; the distillation run must use the same
    real_images: int = 0  # 0: the whole training split; n > 0: each expert sees its own random n images
    validation_fraction: float = 0.1  # as the distillation run's, so the training split is the same

    def __post_init__(self) -> None:
        if self.preprocessing not in ("normalize", "zca"):
            raise ConfigError(f"expert preprocessing must be 'normalize' or 'zca', got '{self.preprocessing}'")
        for name in ("experts", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"expert setting {name} must be >= 1, got {getattr(self, name)}")
        if self.real_images < 0 or self.learning_rate <= 0:
            raise ConfigError("expert settings need real_images >= 0 and learning_rate > 0")


# ``cpu``: 2 experts x 3 epochs, each over its own random 5,000 training images, normalized inputs. Measured
# for Fashion-MNIST with ConvNet-3 (317,706 parameters) and OMP_NUM_THREADS=1: 4 minutes of CPU time (user +
# system), 8 minutes of wall-clock time on a 2-core machine whose load average was 5-6.
PRESETS: dict[str, ExpertConfig] = {
    "paper": ExpertConfig(),
    "cpu": ExpertConfig(experts=2, epochs=3, preprocessing="normalize", real_images=5000),
}


def expert_config(preset: str = "paper", **overrides) -> ExpertConfig:
    """A preset with some fields replaced (unknown keys and presets are refused by name)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown expert preset '{preset}'; choose one of: {', '.join(sorted(PRESETS))}")
    values = {**dataclasses.asdict(PRESETS[preset]), **overrides}
    return build_config(ExpertConfig, values, "expert")


def expert_file_name(index: int) -> str:
    return f"expert_{index:04d}.safetensors"


# ------------------------------------------------------------------------------------ flat parameters
def parameter_layout(network: nn.Module) -> list[list]:
    """[[name, shape], ...] in the flat order (``named_parameters()``)."""
    return [[name, list(p.shape)] for name, p in network.named_parameters()]


def flatten_parameters(network: nn.Module) -> torch.Tensor:
    """(P,) detached copy of every parameter, in ``named_parameters()`` order."""
    return torch.cat([p.detach().reshape(-1) for p in network.parameters()]).clone()


def build_network(name: str, spec: DataSpec, settings: dict, seed: int = 0) -> nn.Module:
    """A network whose initial weights come from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_network(name, spec, **settings)


# -------------------------------------------------------------------------------------------- training
def train_expert(spec: DataSpec, inputs: torch.Tensor, labels: torch.Tensor, config: ExpertConfig, seed: int,
                 device: torch.device | str = "cpu", on_epoch=None) -> torch.Tensor:
    """Train one expert on preprocessed ``inputs`` (N, C, H, W); returns its trajectory (epochs + 1, P)."""
    generator = torch.Generator().manual_seed(seed)
    network = build_network(config.network, spec, config.network_settings,
                            int(torch.randint(0, 2**62, (1,), generator=generator))).to(device)
    if config.real_images and config.real_images < len(labels):
        chosen = torch.randperm(len(labels), generator=generator)[:config.real_images].to(inputs.device)
        inputs, labels = inputs[chosen], labels[chosen]
    data = Batch(inputs, labels)
    snapshots: list[torch.Tensor] = []

    def epoch_batch(_generator: torch.Generator) -> Batch:
        # train_network asks for the data once at the start of every epoch: the parameters then are the
        # previous epoch's result (row 0: the initialization), with no extra pass over the data
        if snapshots and on_epoch is not None:
            on_epoch()
        snapshots.append(flatten_parameters(network).float().cpu())
        return data

    settings = TrainSettings(epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                             momentum=config.momentum, weight_decay=config.weight_decay, schedule="constant")
    flip = flips_allowed(config.flip_rule, spec.flip_allowed)
    augment = DSA(DSAConfig(mode="single"), flip_allowed=flip) if config.dsa else None
    train_network(network, epoch_batch, settings, generator, augment)
    snapshots.append(flatten_parameters(network).float().cpu())
    if on_epoch is not None:
        on_epoch()
    return torch.stack(snapshots)  # (epochs + 1, P)


def train_experts(dataset: Dataset, config: ExpertConfig, out_dir: str | Path, generator: torch.Generator,
                  device: torch.device | str = "cpu", progress: bool = True) -> "ExpertBuffer":
    """Train ``config.experts`` experts on ``dataset.train`` and write them to ``out_dir`` (format above).

    Resumable: experts already in the manifest whose file still matches its checksum are skipped; a
    directory holding experts of another configuration is refused."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = dataset.spec
    preprocessing = Preprocessing(config.preprocessing).fit(dataset.train.images)
    seeds = torch.randint(0, 2**62, (config.experts,), generator=generator).tolist()  # drawn up front: resumable
    manifest = _new_manifest(dataset, config, preprocessing, seeds)
    files = _resumable_files(out, manifest)
    manifest["files"] = files
    _write_json(out / MANIFEST, manifest)

    device = torch.device(device)
    with torch.no_grad():
        inputs = torch.cat([preprocessing(chunk) for chunk in dataset.train.images.split(4096)]).to(device)
    labels = dataset.train.labels.to(device)
    bar = progress_bar(config.experts * config.epochs, len(files) * config.epochs, "experts", "epoch", progress)
    try:
        for index, seed in enumerate(seeds):
            name = expert_file_name(index)
            if name in files:
                continue
            tick = (lambda: bar.update(1)) if bar is not None else None
            trajectory = train_expert(spec, inputs, labels, config, seed, device, tick)
            _write_tensor(out / name, trajectory)
            files[name] = {"sha256": sha256(out / name), "bytes": (out / name).stat().st_size}
            _write_json(out / MANIFEST, manifest)
    finally:
        if bar is not None:
            bar.close()
    return ExpertBuffer(out)


def _new_manifest(dataset: Dataset, config: ExpertConfig, preprocessing: Preprocessing, seeds: list[int]) -> dict:
    spec = dataset.spec
    network = build_network(config.network, spec, config.network_settings)
    layout = parameter_layout(network)
    return {
        "format": FORMAT, "schema_version": SCHEMA_VERSION,
        "library_version": __version__, "torch_version": torch.__version__,
        "dataset": dataset.name,
        "spec": {"channels": spec.channels, "height": spec.height, "width": spec.width, "num_classes": spec.num_classes},
        "preprocessing": {**preprocessing.config(), "mean": preprocessing.tensors["mean"].tolist(),
                          "std": preprocessing.tensors["std"].tolist()},
        "config": dataclasses.asdict(config),
        "network": {"name": config.network, "settings": dict(config.network_settings)},
        "parameters": layout,
        "parameter_count": sum(int(torch.Size(shape).numel()) for _, shape in layout),
        "expert_seeds": seeds,
        "files": {},
    }


# what must agree between a manifest on disk and the run that would extend it
_IDENTITY_KEYS = ("format", "dataset", "spec", "preprocessing", "config", "network", "parameters", "expert_seeds")


def _resumable_files(out: Path, manifest: dict) -> dict:
    """The finished experts of a previous run into ``out`` that this run can keep."""
    path = out / MANIFEST
    if not path.exists():
        return {}
    previous = _read_manifest(path)
    differing = [k for k in _IDENTITY_KEYS
                 if json.dumps(previous.get(k), sort_keys=True) != json.dumps(manifest[k], sort_keys=True)]
    if differing:
        raise ConfigError(f"'{out}' holds experts of a different configuration (differs in: {', '.join(differing)}); "
                          "choose another --out or the same settings and seed")
    kept = {}
    for name, entry in previous.get("files", {}).items():
        if (out / name).exists() and sha256(out / name) == entry.get("sha256"):
            kept[name] = entry
    return kept


# ------------------------------------------------------------------------------------------- reading
class ExpertBuffer:
    """A verified view of an expert directory. Trajectories are read lazily: ``rows`` reads only the
    requested epochs of one expert (after checking that file's sha256 once per process)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = _read_manifest(self.path / MANIFEST)
        self.files = sorted(self.manifest["files"])
        self._verified: set[str] = set()
        if not self.files:
            raise ArtifactError(f"'{self.path}' holds no finished expert yet")

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def epochs(self) -> int:
        return int(self.manifest["config"]["epochs"])

    @property
    def parameter_count(self) -> int:
        return int(self.manifest["parameter_count"])

    @property
    def network(self) -> tuple[str, dict]:
        return self.manifest["network"]["name"], dict(self.manifest["network"]["settings"])

    def _check_shape(self, name: str, shape, dtype) -> None:
        expected = (self.epochs + 1, self.parameter_count)
        if tuple(shape) != expected or dtype not in (torch.float32, "F32"):
            raise ArtifactError(f"expert file '{self.path / name}' holds {tuple(shape)} {dtype}, expected {expected} float32")

    def _verify(self, name: str, data: bytes | None = None) -> None:
        if name in self._verified and data is None:
            return
        path = self.path / name
        if not path.exists():
            raise ArtifactError(f"expert file '{path}' is missing")
        digest = hashlib.sha256(data).hexdigest() if data is not None else sha256(path)
        if digest != self.manifest["files"][name]["sha256"]:
            raise ArtifactError(f"expert file '{path}' does not match its checksum (truncated or altered)")
        self._verified.add(name)

    def trajectory(self, index: int) -> torch.Tensor:
        """(epochs + 1, P) float32, checked against the manifest's sha256 and shapes."""
        name = self.files[index]
        if not (self.path / name).exists():
            raise ArtifactError(f"expert file '{self.path / name}' is missing")
        data = (self.path / name).read_bytes()
        self._verify(name, data)  # the bytes that are parsed below, not a second read
        try:
            tensor = load_safetensors_bytes(data)[TENSOR_NAME]
        except (SafetensorError, KeyError) as error:
            raise ArtifactError(f"cannot read '{self.path / name}': {error}") from None
        self._check_shape(name, tensor.shape, tensor.dtype)
        return tensor

    def rows(self, index: int, epochs: list[int]) -> torch.Tensor:
        """(len(epochs), P) float32: the parameters of expert ``index`` after the given epochs."""
        name = self.files[index]
        self._verify(name)
        try:
            with safe_open(str(self.path / name), framework="pt") as handle:
                part = handle.get_slice(TENSOR_NAME)
                self._check_shape(name, part.get_shape(), part.get_dtype())
                return torch.stack([part[e] for e in epochs])
        except SafetensorError as error:
            raise ArtifactError(f"cannot read '{self.path / name}': {error}") from None


@dataclass
class ExpertTrajectories:
    manifest: dict
    trajectories: list[torch.Tensor]  # each (epochs + 1, P) float32


def load_experts(path: str | Path) -> ExpertTrajectories:
    """Read and verify every finished expert of a directory (refuses a tampered or truncated file)."""
    buffer = ExpertBuffer(path)
    return ExpertTrajectories(buffer.manifest, [buffer.trajectory(i) for i in range(buffer.count)])


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        raise ArtifactError(f"no expert manifest at '{path}' (write one with `condense experts`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactError(f"'{path}' is not valid JSON: {error}") from None
    if manifest.get("format") != FORMAT or manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"'{path}' is not a schema-{SCHEMA_VERSION} expert manifest")
    missing = [k for k in (*_IDENTITY_KEYS, "files", "parameter_count") if k not in manifest]
    if missing:
        raise ArtifactError(f"expert manifest '{path}' lacks {', '.join(missing)}")
    return manifest


# ------------------------------------------------------------------------------------------- writing
def _write_tensor(path: Path, trajectory: torch.Tensor) -> None:
    atomic_save_tensors(path, {TENSOR_NAME: trajectory})


def _write_json(path: Path, payload: dict) -> None:
    atomic_write_json(path, payload, indent=1)


# ----------------------------------------------------------------------------------------------- CLI
