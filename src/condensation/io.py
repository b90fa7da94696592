"""Files written once, the same way everywhere: atomically (temporary file, fsync, rename) with sha256 sums.

Every file lands with the mode an ordinary ``open()`` gives it (0o666 less the process umask, so 0644 under
the usual umask 022): safetensors creates its file 0600, which would keep a run's tensors from colleagues
who can read its JSON."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    import tomli as tomllib  # noqa: F401  (re-exported for recipes and run configs)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per directory is then the user's to keep
    fcntl = None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (other threads may create files)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def replace_synced(temporary: Path, path: Path) -> None:
    """Flush ``temporary`` to disk, give it an ordinary file's mode, then rename it over ``path``: a crash
    leaves the old file or the new one."""
    os.chmod(temporary, file_mode())
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def append_line(path: Path, line: str) -> None:
    """Append one line to a log file with a single ``write`` on an O_APPEND descriptor: a crash or a concurrent
    appender never leaves a torn or interleaved line (the kernel appends each write whole)."""
    data = (line.rstrip("\n") + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask applies, as for open()
    try:
        written = os.write(descriptor, data)
        if written != len(data):  # a full disk: the partial tail would corrupt the next line, so say so
            raise OSError(f"only {written} of {len(data)} bytes of a line reached '{path}' (disk full?)")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
