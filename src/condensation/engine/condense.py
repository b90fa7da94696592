"""The one condensation loop. Every method is a container + an objective plugged into it."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..containers.base import Container
from ..errors import ArtifactError, ConfigError
from ..objectives.base import Objective
from .checkpoint import load_checkpoint, save_checkpoint
from .real import RealPool


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"  # "sgd" or "adam"
    learning_rate: float = 0.1
    momentum: float = 0.5
    gradient_clip: float = 0.0  # 0: none; else clip the container's gradient norm (RTP uses 2)


@dataclass(frozen=True)
class LoopConfig:
    iterations: int = 100
    checkpoint_every: int = 50  # iterations; 0 = never
    log_every: int = 10


def make_optimizer(config: OptimizerConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum)
    if config.name == "adam":
        return torch.optim.Adam(groups, lr=config.learning_rate)
    raise ConfigError(f"unknown optimizer '{config.name}'; choose one of: sgd, adam")


@dataclass
class CondenseResult:
    iterations: int  # iterations done (fewer than asked when the time limit stopped the run)
    losses: list[float]
    seconds: float  # condensation seconds, including those before a resume
    stopped_by_time_limit: bool = False


def condense(
    container: Container,
    objective: Objective,
    real: RealPool,
    optimizer_config: OptimizerConfig,
    loop: LoopConfig,
    generator: torch.Generator,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    metrics_path: str | Path | None = None,
    progress: bool = True,
    on_iteration: Callable[[int, float], None] | None = None,
    time_limit: float | None = None,
) -> CondenseResult:
    """Run ``loop.iterations`` outer iterations. With ``resume``, continue from ``checkpoint_path``
    (whose fingerprint must match) and finish exactly as an uninterrupted run with the same seed.

    ``time_limit`` (seconds of condensation, counting those before a resume): stop at the first iteration
    boundary at or after it, as if that iteration were the last (equal-compute comparisons)."""
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"time_limit must be a positive number of seconds, got {time_limit}")
    groups = container.parameter_groups(optimizer_config.learning_rate) + objective.extra_parameter_groups()
    optimizer = make_optimizer(optimizer_config, groups) if loop.iterations > 0 else None
    start, losses, seconds_before = 0, [], 0.0
    if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        state = load_checkpoint(checkpoint_path)
        if state.get("fingerprint") != fingerprint:
            raise ArtifactError(
                f"checkpoint '{checkpoint_path}' belongs to a different run configuration; "
                "start a fresh run directory or pass the same config"
            )
        container.load_state_dict(state["container"])
        container.load_training_state(state.get("container_training", {}))
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        objective.load_state_dict(state["objective"])
        generator.set_state(state["generator"])
        start, losses = state["iteration"], state["losses"]
        seconds_before = state.get("seconds", 0.0)

    bar = _progress_bar(loop.iterations, start, progress)
    started = time.perf_counter()
    elapsed = lambda: seconds_before + time.perf_counter() - started  # noqa: E731
    metrics = open(metrics_path, "a") if metrics_path else None
    done, stopped = start, False
    try:
        for iteration in range(start, loop.iterations):
            objective.begin_iteration(iteration, generator)
            total = 0.0
            for classes in objective.class_groups(container.num_classes):
                optimizer.zero_grad(set_to_none=True)
                total = total + objective.backward(container, real, classes, generator)
                extra = container.regularization(classes, generator)
                if extra is not None:
                    extra.backward()
                    total = total + extra.detach()
                if optimizer_config.gradient_clip > 0:
                    torch.nn.utils.clip_grad_norm_(container.parameters(), optimizer_config.gradient_clip)
                optimizer.step()
                container.after_step(generator)
            container.after_iteration()
            objective.end_iteration(container, real, generator)
            total = float(total)  # the iteration's one read of the loss (a sync on GPUs)
            if not math.isfinite(total):
                raise FloatingPointError(f"loss became {total} at iteration {iteration}; lower the learning rate")
            losses.append(total)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total:.4g}")
            if metrics is not None and (iteration % loop.log_every == 0 or iteration + 1 == loop.iterations):
                metrics.write(json.dumps({"iteration": iteration, "loss": total}) + "\n")
                metrics.flush()
            if on_iteration is not None:
                on_iteration(iteration, total)
            done = iteration + 1
            stopped = time_limit is not None and done < loop.iterations and elapsed() >= time_limit
            if stopped:
                if bar is not None:
                    bar.write(f"time limit of {time_limit:g} s reached after {done} of {loop.iterations} iterations")
                if metrics is not None and iteration % loop.log_every != 0:
                    metrics.write(json.dumps({"iteration": iteration, "loss": total}) + "\n")
                break
            if checkpoint_path and loop.checkpoint_every and (done % loop.checkpoint_every == 0) and done < loop.iterations:
                save_checkpoint(checkpoint_path, {
                    "fingerprint": fingerprint, "iteration": done, "losses": losses, "seconds": elapsed(),
                    "container": container.state_dict(), "container_training": container.training_state(),
                    "optimizer": optimizer.state_dict(),
                    "objective": objective.state_dict(), "generator": generator.get_state(),
                })
    finally:
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()
    return CondenseResult(done, losses, elapsed(), stopped)


def _progress_bar(total: int, start: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="condense", unit="it", dynamic_ncols=True, mininterval=1.0)
