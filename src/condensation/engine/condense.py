"""The one condensation loop. Every method is a container + an objective plugged into it."""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..containers.base import Container
from ..distributed import ClassStreams, all_reduce_gradients, any_rank, check_shardable, is_writer, shard, world_size
from ..errors import ArtifactError, ConfigError, Interrupted, NumericalError
from ..objectives.base import Objective
from ..runtime import progress_bar
from .checkpoint import load_checkpoint, save_checkpoint
from .real import RealPool


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"  # "sgd" or "adam"
    learning_rate: float = 0.1
    momentum: float = 0.5
    gradient_clip: float = 0.0  # 0: none; else clip the container's gradient norm (RTP uses 2)
    # True: when an objective steps one class group at a time, a class's own parameters (its rows of
    # Container.per_class_parameters) move only in its step, with the momentum/Adam moments and step count it
    # would have alone. False: one optimizer over whole tensors, as IDC's and M3D's code, where the momentum
    # of every class's rows moves them at every class's step (what every official code does; the default).
    isolate_classes: bool = False


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


class ContainerOptimizer:
    """The container's optimizer: shared parameters step with torch's SGD or Adam; per-class parameters
    (class-major rows, see Container.per_class_parameters) step row by row, only for the classes of the
    current step (``OptimizerConfig.isolate_classes``). Same update rule as torch's (SGD with momentum,
    no dampening; Adam with bias correction per class)."""

    betas, eps = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults

    def __init__(self, config: OptimizerConfig, groups: list[dict], per_class: list[torch.Tensor], num_classes: int):
        if config.name not in ("sgd", "adam"):
            raise ConfigError(f"unknown optimizer '{config.name}'; choose one of: sgd, adam")
        rowwise_ids = {id(p) for p in per_class} if config.isolate_classes else set()
        shared_groups, self.rowwise = [], []  # rowwise: [(parameter, learning rate)]
        for group in groups:
            shared = [p for p in group["params"] if id(p) not in rowwise_ids]
            if shared:
                shared_groups.append({**group, "params": shared})
            self.rowwise += [(p, group.get("lr", config.learning_rate)) for p in group["params"] if id(p) in rowwise_ids]
        self.config, self.num_classes = config, num_classes
        self.shared = make_optimizer(config, shared_groups) if shared_groups else None
        self.state = [self._fresh_state(p) for p, _ in self.rowwise]

    def _fresh_state(self, parameter: torch.Tensor) -> dict:
        zeros = lambda: torch.zeros_like(parameter, memory_format=torch.preserve_format)  # noqa: E731
        if self.config.name == "sgd":
            return {"momentum_buffer": zeros()}
        return {"exp_avg": zeros(), "exp_avg_sq": zeros(),
                "step": torch.zeros(self.num_classes, dtype=torch.float64, device=parameter.device)}

    def zero_grad(self) -> None:
        if self.shared is not None:
            self.shared.zero_grad(set_to_none=True)
        for parameter, _ in self.rowwise:
            parameter.grad = None

    @torch.no_grad()
    def step(self, classes: list[int]) -> None:
        if self.shared is not None:
            self.shared.step()
        class_index = torch.as_tensor(classes, dtype=torch.long)
        for (parameter, lr), state in zip(self.rowwise, self.state):
            if parameter.grad is None:
                continue
            per_class = parameter.shape[0] // self.num_classes
            rows = (class_index[:, None] * per_class + torch.arange(per_class)).flatten().to(parameter.device)
            grad = parameter.grad.index_select(0, rows)
            if self.config.name == "sgd":
                buffer = state["momentum_buffer"].index_select(0, rows).mul_(self.config.momentum).add_(grad)
                state["momentum_buffer"].index_copy_(0, rows, buffer)
                parameter.index_copy_(0, rows, parameter.index_select(0, rows).add_(buffer, alpha=-lr))
                continue
            beta1, beta2 = self.betas
            state["step"][class_index.to(state["step"].device)] += 1
            step = state["step"][class_index.to(state["step"].device)].repeat_interleave(per_class)
            shape = (-1,) + (1,) * (parameter.dim() - 1)
            exp_avg = state["exp_avg"].index_select(0, rows).lerp_(grad, 1 - beta1)
            exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            state["exp_avg"].index_copy_(0, rows, exp_avg)
            state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
            step_size = (lr / (1 - beta1 ** step)).to(parameter.dtype).view(shape)
            denominator = (exp_avg_sq.sqrt() / (1 - beta2 ** step).sqrt().to(parameter.dtype).view(shape)).add_(self.eps)
            parameter.index_copy_(0, rows, parameter.index_select(0, rows) - step_size * exp_avg / denominator)

    def state_dict(self) -> dict:
        return {"shared": self.shared.state_dict() if self.shared is not None else None,
                "rowwise": [{k: v.clone() for k, v in state.items()} for state in self.state]}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or "rowwise" not in state or len(state["rowwise"]) != len(self.state):
            raise ArtifactError("the checkpoint's optimizer state does not fit this run (written by an older version "
                                "or another container); start a fresh run directory")
        if self.shared is not None:
            self.shared.load_state_dict(state["shared"])
        for own, saved in zip(self.state, state["rowwise"]):
            for key, value in saved.items():
                own[key].copy_(value)


@dataclass
class CondenseResult:
    iterations: int  # iterations done (fewer than asked when the time limit stopped the run)
    losses: list[float]
    seconds: float  # condensation seconds, including those before a resume
    stopped_by_time_limit: bool = False
    cpu_seconds: float = 0.0  # process CPU seconds of the loop (snapshots excluded), including those before a resume
    stopped_by_cpu_limit: bool = False


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
    cpu_limit: float | None = None,
    at_boundary: Callable[[int, float, float], None] | None = None,
) -> CondenseResult:
    """Run ``loop.iterations`` outer iterations. With ``resume``, continue from ``checkpoint_path``
    (whose fingerprint must match) and finish exactly as an uninterrupted run with the same seed.

    ``time_limit`` (seconds of condensation, counting those before a resume): stop at the first iteration
    boundary at or after it, as if that iteration were the last (equal-compute comparisons). ``cpu_limit``:
    the same in process CPU seconds (``time.process_time``: every thread of this process, nothing of any other),
    a budget that other work on the machine does not bend when runs are single-threaded.

    ``at_boundary(iterations_done, budget_spent, cpu_seconds)`` is called before the first iteration of a fresh
    run and after every iteration but the last, with the fraction of the budget spent (of ``cpu_limit`` if set,
    else of ``time_limit``, else of ``loop.iterations``): the run layer saves snapshots and evaluates there. Its
    own CPU and wall time are not counted against the budget (it is not condensation)."""
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"time_limit must be a positive number of seconds, got {time_limit}")
    if cpu_limit is not None and not cpu_limit > 0:
        raise ConfigError(f"cpu_limit must be a positive number of seconds, got {cpu_limit}")
    groups = container.parameter_groups(optimizer_config.learning_rate) + objective.extra_parameter_groups()
    optimizer = (ContainerOptimizer(optimizer_config, groups, container.per_class_parameters(), container.num_classes)
                 if loop.iterations > 0 else None)
    check_can_shard(objective, container)
    trainable = [p for group in groups for p in group["params"] if p.requires_grad]
    start, losses, seconds_before, cpu_before = 0, [], 0.0, 0.0
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
        cpu_before = state.get("cpu_seconds", 0.0)

    writer = is_writer()  # rank 0 alone writes the checkpoint and metrics and shows progress
    bar = progress_bar(loop.iterations, start, "condense", "it", progress and writer)
    started, cpu_started = time.perf_counter(), time.process_time()
    excluded = [0.0, 0.0]  # wall, CPU seconds spent in at_boundary: not condensation
    elapsed = lambda: seconds_before + time.perf_counter() - started - excluded[0]  # noqa: E731
    cpu_used = lambda: cpu_before + time.process_time() - cpu_started - excluded[1]  # noqa: E731

    def budget_spent(done: int) -> float:  # fraction of the run's budget used after `done` iterations
        if cpu_limit is not None:
            return cpu_used() / cpu_limit
        if time_limit is not None:
            return elapsed() / time_limit
        return done / max(loop.iterations, 1)
    metrics = _open_metrics(metrics_path, start) if metrics_path and writer else None
    done, stopped, stopped_by_cpu = start, False, False
    interrupt = _InterruptFlag()
    # a run whose stored values grow 10^4 times past where they started has diverged even while its loss
    # stays finite (DM with --lr 1e9 saturates its features at a finite loss)
    divergence_limit = 1e4 * max(1.0, _largest_value(container))

    def save(iteration_count: int) -> None:
        save_checkpoint(checkpoint_path, {
            "fingerprint": fingerprint, "iteration": iteration_count, "losses": losses, "seconds": elapsed(),
            "cpu_seconds": cpu_used(),
            "container": container.state_dict(), "container_training": container.training_state(),
            "optimizer": optimizer.state_dict(),
            "objective": objective.state_dict(), "generator": generator.get_state(),
        })

    def boundary(done: int) -> None:
        if at_boundary is None:
            return
        wall, cpu = time.perf_counter(), time.process_time()
        at_boundary(done, budget_spent(done), cpu_used())
        excluded[0] += time.perf_counter() - wall
        excluded[1] += time.process_time() - cpu

    try:
        if start == 0 and loop.iterations > 0:
            boundary(0)
        for iteration in range(start, loop.iterations):
            objective.begin_iteration(iteration, generator)
            total = 0.0
            groups = objective.class_groups(container.num_classes)
            every_class = list(range(container.num_classes))
            for classes in groups:
                optimizer.zero_grad()
                total = total + _objective_backward(objective, container, real, classes, generator, trainable)
                if len(groups) == 1:  # one step for all classes: the regularizer joins it (one backward, as HaBa)
                    total = total + _backward_regularization(container, generator)
                _clip(container, optimizer_config)
                optimizer.step(classes)
            if len(groups) > 1:  # per-class steps: the regularizer over every class takes a step of its own
                optimizer.zero_grad()
                extra = _backward_regularization(container, generator)
                if torch.is_tensor(extra):
                    total = total + extra
                    _clip(container, optimizer_config)
                    optimizer.step(every_class)
            container.after_optimizer_steps(generator)
            container.after_iteration()
            objective.end_iteration(container, real, generator)
            total = float(total)  # the iteration's one read of the loss (a sync on GPUs)
            if not math.isfinite(total):
                raise NumericalError(f"the loss became {total} at iteration {iteration}: the run diverged; lower the "
                                     f"container's learning rate (--lr, now {optimizer_config.learning_rate:g}) and "
                                     "start again")
            largest = _largest_value(container)
            if not largest <= divergence_limit:
                raise NumericalError(f"the container's values reached {largest:.3g} at iteration {iteration} (they "
                                     f"started below {divergence_limit / 1e4:.3g}): the run diverged; lower the "
                                     f"container's learning rate (--lr, now {optimizer_config.learning_rate:g}) and "
                                     "start again")
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
            if done < loop.iterations:
                boundary(done)
            over_time = time_limit is not None and done < loop.iterations and elapsed() >= time_limit
            over_cpu = cpu_limit is not None and done < loop.iterations and cpu_used() >= cpu_limit
            stopped, by_cpu, interrupted = any_rank(over_time or over_cpu, over_cpu, interrupt.raised)
            if stopped:
                stopped_by_cpu = by_cpu
                if bar is not None:
                    limit = f"CPU limit of {cpu_limit:g} s" if by_cpu else f"time limit of {time_limit:g} s"
                    bar.write(f"{limit} reached after {done} of {loop.iterations} iterations")
                if metrics is not None and iteration % loop.log_every != 0:
                    metrics.write(json.dumps({"iteration": iteration, "loss": total}) + "\n")
                break
            if interrupted and done < loop.iterations:
                if checkpoint_path:
                    if writer:
                        save(done)
                    raise Interrupted(f"interrupted after iteration {done} of {loop.iterations}; the checkpoint is "
                                      "saved: run the same command with --resume to continue")
                raise Interrupted(f"interrupted after iteration {done} of {loop.iterations} (no checkpoint path)")
            if (writer and checkpoint_path and loop.checkpoint_every and done % loop.checkpoint_every == 0
                    and done < loop.iterations):
                save(done)
    finally:
        interrupt.restore()
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()
    return CondenseResult(done, losses, elapsed(), stopped and not stopped_by_cpu, cpu_used(), stopped_by_cpu)


class _InterruptFlag:
    """Ctrl-C and SIGTERM set a flag that the loop reads at the next iteration boundary (a safe point: the
    checkpoint written there resumes bit for bit); a second Ctrl-C stops at once. Only in the main thread,
    where Python delivers signals."""

    def __init__(self):
        self.raised, self.previous = False, {}
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            self.previous[number] = signal.signal(number, self._handle)

    def _handle(self, number, frame) -> None:
        if self.raised:  # asked twice: the user does not want to wait for the iteration to end
            raise KeyboardInterrupt
        self.raised = True

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def check_can_shard(objective: Objective, container: Container) -> None:
    """Refuse, before any work, a run over several ranks that could not give the one-process result."""
    if world_size() == 1:
        return
    name = getattr(objective, "registry_name", type(objective).__name__)
    if not objective.decomposes_over_classes:
        raise ConfigError(f"objective '{name}' does not split over classes (its loss trains one network on every "
                          "class's images at once), so it cannot be sharded across ranks; run it in one process. "
                          "Objectives that shard: dm, dc, dsa (and echo with per_class_step=false)")
    if len(objective.class_groups(container.num_classes)) > 1:
        raise ConfigError(f"objective '{name}' takes one optimizer step per class, and each step moves what the "
                          "next class's step reads (shared container parts, or momentum over every row), so its "
                          "classes cannot be condensed in parallel with the same result; run it in one process"
                          + (" or set per_class_step=false" if hasattr(objective.config, "per_class_step") else ""))
    check_shardable(container.num_classes)


def _objective_backward(objective: Objective, container: Container, real: RealPool, classes: list[int],
                        generator: torch.Generator, trainable: list[torch.Tensor]):
    """One class group's loss and gradients. A loss that is a sum over classes draws class c's randomness from
    c's own stream and, across ranks, each rank computes its block of the classes; the gradients and the loss
    are then summed over ranks, so every rank takes the same step (and the same as one process would)."""
    if not objective.decomposes_over_classes:
        return objective.backward(container, real, classes, generator)
    streams = ClassStreams(classes, generator)
    loss = objective.backward(container, real, shard(classes), streams)
    return all_reduce_gradients(trainable, loss)


def _largest_value(container: Container) -> float:
    with torch.no_grad():
        return float(max((p.abs().max() for p in container.parameters() if p.numel()), default=torch.tensor(0.0)))


def _open_metrics(path: str | Path, start: int):
    """metrics.jsonl for appending from iteration ``start``: rows a killed run wrote past its checkpoint (and
    every row, on a fresh start) are dropped first, so that each iteration is logged once."""
    path = Path(path)
    kept = []
    if start > 0 and path.exists():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["iteration"] < start:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                break  # a torn last line from a kill: everything after it is dropped too
    path.write_text("".join(line + "\n" for line in kept))
    return open(path, "a")


def _backward_regularization(container: Container, generator: torch.Generator):
    """Backpropagate the container's once-per-iteration term, if it has one; its detached value, or 0.0."""
    extra = container.regularization(generator)
    if extra is None:
        return 0.0
    extra.backward()
    return extra.detach()


def _clip(container: Container, config: OptimizerConfig) -> None:
    if config.gradient_clip > 0:
        torch.nn.utils.clip_grad_norm_(container.parameters(), config.gradient_clip)
