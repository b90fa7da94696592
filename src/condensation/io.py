"""Files written once, the same way everywhere: atomically (temporary file, fsync, rename) with sha256 sums."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per directory is then the user's to keep
    fcntl = None

import torch
from safetensors.torch import save_file


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_synced(temporary: Path, path: Path) -> None:
    """Flush ``temporary`` to disk, then rename it over ``path``: a crash leaves the old file or the new one."""
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def temporary_name(path: Path) -> Path:
    """A sibling name no other process uses (two writers never share one temporary file)."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    temporary = temporary_name(path)
    temporary.write_bytes(data)
    replace_synced(temporary, path)


def atomic_write_json(path: Path, payload, indent: int = 2) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=indent) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    temporary = temporary_name(path)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(temporary))
    replace_synced(temporary, path)


class DirectoryLock:
    """One writer per run directory: an exclusive ``flock`` on DIR/.lock, held while the run works and
    released by the kernel when the process ends, however it ends (a killed run leaves no stale lock).
    The file holds the owner's process id, for the message a second process gets."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.handle = None

    def __enter__(self) -> "DirectoryLock":
        from .errors import ConfigError

        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"'{self.directory}' is a file; a run directory (--out) must be a folder")
        self.created = not self.directory.exists()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the run directory '{self.directory}': {error.strerror}") from None
        if fcntl is None:
            return self
        self.handle = open(self.directory / ".lock", "a+")
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.seek(0)
            owner = self.handle.read().strip() or "unknown"
            self.handle.close()
            self.handle = None
            raise ConfigError(f"'{self.directory}' is in use by another condense process (pid {owner}); wait for it "
                              "to finish or choose another --out") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is None:
            return
        # a run that failed before writing anything leaves no directory behind (only if it made it)
        if self.created and {p.name for p in self.directory.iterdir()} == {".lock"}:
            (self.directory / ".lock").unlink()
            self.directory.rmdir()
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None
