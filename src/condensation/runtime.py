"""Process-level speed settings shared by every layer: the allocator, numeric precision, no-gradient forwards,
the device.

Why the allocator: glibc's malloc hands every block above its mmap threshold (at most 32 MiB) straight to the
kernel and returns it on free, so each large activation is page-faulted in anew on every forward; raising the
threshold keeps freed blocks in the heap for reuse (measurements: benchmarks/README.md, "Allocator").
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

import torch

from . import distributed
from .errors import ConfigError

PRECISIONS = ("fp32", "bf16")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_allocator_tuned: bool | None = None


def tune_allocator(max_cached_bytes: int = 1 << 30) -> bool:
    """Keep freed blocks up to ``max_cached_bytes`` in the heap instead of returning them to the kernel.
    Linux/glibc only (elsewhere a no-op returning False); idempotent; the `condense` command calls it."""
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # musl and others have no mallopt
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        # both calls succeed (return 1) on glibc; the trim threshold must exceed the mmap threshold
        _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, max_cached_bytes)
                                and mallopt(_M_TRIM_THRESHOLD, min(2 * max_cached_bytes, 2**31 - 1)))
    return _allocator_tuned


def tune_process() -> None:
    """The process-wide speed settings every entry point (CLI, ``distill``, ``evaluate_artifact``) applies:
    the allocator above, and flushing denormal floats to zero on CPUs that support it (tiny gradients in
    gradient matching otherwise take the slow microcode path; values below 1e-38 become 0)."""
    tune_allocator()
    torch.set_flush_denormal(True)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    return precision


def autocast(precision: str, device: torch.device | str):
    """bfloat16 autocast for ``bf16`` on any device type (CPU: AVX-512 BF16 where present), else nothing.
    Autocast keeps parameters and reductions (norms, softmax, losses) in float32; matmuls and convolutions
    run in bfloat16."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def no_grad_forward(precision: str = "fp32", device: torch.device | str = "cpu"):
    """A forward whose outputs need no gradient: inference mode (no version counters, no graph) and the
    run's precision. Outputs are inference tensors: use them in later graphs only as constants."""
    with torch.inference_mode(), autocast(precision, device):
        yield


def forward_in_chunks(function, inputs: torch.Tensor, chunk: int) -> torch.Tensor:
    """``function`` over ``inputs`` in chunks of ``chunk`` rows, concatenated; reduced-precision outputs
    (autocast's bfloat16) come back as float32, float32 and float64 as they are."""
    return torch.cat([_widened(function(part)) for part in inputs.split(chunk)])


def _widened(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


@contextlib.contextmanager
def phase(what: str, enabled: bool = True):
    """Say what a long step is doing, then how long it took (stderr; ``enabled=False``: silent). Used for every
    phase of a run that the condensation progress bar does not cover (data, initialization, pruning,
    evaluation), so that no step is silent for minutes."""
    import time

    if not enabled:
        yield
        return
    print(f"condense: {what} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    print(f"condense: {what}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def resolve_device(name: str) -> torch.device:
    """"auto" (CUDA when present, else the CPU), "cpu", "cuda" or "cuda:N"; under torchrun, the rank's own GPU."""
    if name == "auto":
        return distributed.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
    return distributed.local_device(device)


def progress_bar(total: int, initial: int, description: str, unit: str, enabled: bool = True):
    """The library's one progress bar (tqdm, refreshed at most once a second), or None when disabled or empty."""
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True, mininterval=1.0)
