"""Atomic checkpoints: write to a temporary file in the same folder, then rename over the old one."""
from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import torch

from ..errors import ArtifactError
from ..io import atomic_write_bytes

MAGIC = b"CONDENSE-CKPT-1\n"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Serialize ``state`` with a sha256 trailer; an interrupted write leaves the previous file intact."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint, refusing a truncated or altered file with one clear message."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no checkpoint at '{path}'")
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise ArtifactError(f"'{path}' is not a condensation checkpoint")
    header_end = data.find(b"\n", len(MAGIC))
    if header_end < 0:
        raise ArtifactError(f"checkpoint '{path}' is truncated or corrupted (no header)")
    digest, payload = data[len(MAGIC):header_end].decode(), data[header_end + 1:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ArtifactError(f"checkpoint '{path}' is truncated or corrupted (checksum mismatch)")
    try:  # tensors, containers and numbers only: a planted pickle must never run code on --resume
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ArtifactError(f"checkpoint '{path}' holds objects other than tensors, numbers and containers; "
                            f"refused (nothing in it was run): {str(error).splitlines()[0]}") from None


def fingerprint_of_checkpoint(path: str | Path) -> str | None:
    """The run configuration a checkpoint belongs to (see run.fingerprint)."""
    state = load_checkpoint(path)
    return state.get("fingerprint") if isinstance(state, dict) else None
