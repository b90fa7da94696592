"""Several processes with torch.distributed (launched by ``torchrun``): class sharding, gradient all-reduce,
gathering results, per-class random streams. Without torchrun the world is one process and every function
here is a cheap no-op, so the same code path serves both.

How a run is shared (docs/methods.md, Distributed runs): every rank holds the whole container and steps it
identically; each computes the loss of its block of classes; the gradients of every trainable tensor (shared
parts and per-class rows alike) and the loss are summed in one all-reduce per step. Class c's random draws come
from its own stream (``ClassStreams``), seeded from the run generator, which every rank advances identically,
so the result does not depend on how many ranks share the classes.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Sequence

import torch

from .errors import ConfigError, DistributedError

try:
    import torch.distributed as dist
except ImportError:  # a torch build without distributed support: one process only
    dist = None


# ----------------------------------------------------------------------------------------------- the world
def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    return dist.get_rank() if _active() else 0


def is_writer() -> bool:
    """Only rank 0 writes files (checkpoints, artifacts, results, logs); the others compute."""
    return rank() == 0


def _active() -> bool:
    return dist is not None and dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, CUDA device ``cuda`` becomes this process's own GPU (LOCAL_RANK)."""
    if device.type == "cuda" and launched_by_torchrun() and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def initialize(device: torch.device, timeout_minutes: float = 30.0) -> None:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT) once: nccl for
    CUDA devices, gloo otherwise. Without torchrun: nothing."""
    if not launched_by_torchrun() or _active():
        return
    if dist is None or not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run one process (without torchrun)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))


def shutdown() -> None:
    if _active():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------- collectives
def _collective(what: str, function, *args):
    """Run a collective; a rank that died or stopped makes the others fail here with a message, not a hang
    (gloo and nccl raise once the peer's connection closes; torchrun's summary names the rank that failed)."""
    try:
        return function(*args)
    except RuntimeError as error:  # DistBackendError is a RuntimeError
        raise DistributedError(
            f"rank {rank()} of {world_size()} lost the other ranks during {what} (another rank stopped or was "
            f"killed; torchrun's failure summary names it); nothing more is written. Backend said: "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def all_reduce_gradients(parameters: Sequence[torch.Tensor], loss: torch.Tensor | float) -> torch.Tensor | float:
    """Sum the gradients of ``parameters`` and ``loss`` over ranks in one all-reduce; returns the summed loss.

    A gradient that is None on every rank stays None (an optimizer skips such a tensor; a zero gradient would
    still move it by momentum); None on some ranks counts as zeros there."""
    if world_size() == 1:
        return loss
    parameters = list(parameters)
    device = parameters[0].device if parameters else torch.device("cpu")
    loss_tensor = torch.as_tensor(loss, dtype=torch.float32, device=device).detach().reshape(1)
    has_gradient = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32, device=device)
    pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in parameters]
    flat = torch.cat(pieces + [has_gradient, loss_tensor])
    _collective("the gradient all-reduce", dist.all_reduce, flat)
    offset = 0
    for parameter, present in zip(parameters, flat[-len(parameters) - 1:-1].tolist()):
        size = parameter.numel()
        parameter.grad = flat[offset:offset + size].view_as(parameter).to(parameter.dtype) if present else None
        offset += size
    return flat[-1]


def any_rank(*flags: bool) -> list[bool]:
    """Each flag is True on every rank if it is True on any (stops and interrupts must agree: a rank that
    stopped alone would leave the others waiting in the next all-reduce)."""
    if world_size() == 1:
        return list(flags)
    values = torch.tensor([float(f) for f in flags])
    _collective("agreeing on stopping", dist.all_reduce, values, dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    gathered = [None] * world_size()
    _collective("gathering results", dist.all_gather_object, gathered, value)
    return gathered


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if world_size() == 1:
        return value
    box = [value]
    _collective("receiving rank 0's decision", dist.broadcast_object_list, box, 0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        _collective("the final barrier", dist.barrier)


def check_same(value: Any, what: str) -> None:
    """Refuse ranks that disagree on ``what`` (e.g. the run configuration's fingerprint)."""
    values = gather(value)
    differing = [r for r, v in enumerate(values) if v != values[0]]
    if differing:
        raise ConfigError(f"the ranks were started with different {what}: rank(s) {', '.join(map(str, differing))} "
                          "differ from rank 0; launch every rank with the same command")


def decide_on_rank_zero(function, *args):
    """``function(*args)`` on rank 0 only, its result (or its ConfigError) on every rank: for decisions that
    read or change the run directory, which one process must make."""
    if world_size() == 1:
        return function(*args)
    outcome = None
    if is_writer():
        try:
            outcome = ("ok", function(*args))
        except ConfigError as error:
            outcome = ("error", str(error))
    outcome = broadcast(outcome)
    if outcome[0] == "error":
        raise ConfigError(outcome[1])
    return outcome[1]


# -------------------------------------------------------------------------------------------- sharding
def shard(items: Sequence) -> list:
    """This rank's contiguous block of ``items`` (blocks differ in size by at most one)."""
    count, r, w = len(items), rank(), world_size()
    return list(items[r * count // w:(r + 1) * count // w])


def check_shardable(num_classes: int) -> None:
    if world_size() > num_classes:
        raise ConfigError(f"{world_size()} ranks but only {num_classes} classes to divide among them; launch at "
                          f"most {num_classes} processes (--nproc_per_node x nodes)")


class ClassStreams:
    """One random stream per class for one step of class-decomposable work, plus one ``shared`` stream for
    draws every rank makes alike. Seeds come from the run generator, in class order, for every class of the
    step on every rank, so class c's draws are the same whichever rank computes it."""

    def __init__(self, classes: Sequence[int], generator: torch.Generator):
        seeds = torch.randint(0, 2**62, (len(classes) + 1,), generator=generator).tolist()
        self.shared = torch.Generator().manual_seed(seeds[0])
        self._streams = {c: torch.Generator().manual_seed(s) for c, s in zip(classes, seeds[1:])}

    def __getitem__(self, class_index: int) -> torch.Generator:
        return self._streams[class_index]


def stream_of(randomness: torch.Generator | ClassStreams, class_index: int) -> torch.Generator:
    """Class ``class_index``'s generator: its own stream, or the one generator every class shares."""
    return randomness[class_index] if isinstance(randomness, ClassStreams) else randomness


def shared_stream(randomness: torch.Generator | ClassStreams) -> torch.Generator:
    return randomness.shared if isinstance(randomness, ClassStreams) else randomness
