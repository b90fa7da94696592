"""Files written once, the same way everywhere: atomically (temporary file, fsync, rename) with sha256 sums."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    replace_synced(temporary, path)


def atomic_write_json(path: Path, payload, indent: int = 2) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=indent) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(temporary))
    replace_synced(temporary, path)
