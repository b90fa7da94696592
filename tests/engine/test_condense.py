import os
import time
import types
import unittest.mock

import pytest
import torch

import condensation.engine.condense as condense_module
from condensation.containers import create_container
from condensation.engine.checkpoint import load_checkpoint, save_checkpoint
from condensation.engine.condense import LoopConfig, OptimizerConfig, condense
from condensation.errors import ArtifactError, ConfigError
from condensation.objectives import create_objective

from ..conftest import tiny_real


class Interrupted(Exception):
    pass


def _run(spec, iterations, checkpoint=None, resume=False, stop_after=None, container_name="pixels", time_limit=None,
         seconds_per_iteration=0.0):
    real, pre = tiny_real(spec)
    container = create_container(container_name, spec, 2, pre)
    objective = create_objective("dm", spec, real_per_class=6)
    generator = torch.Generator().manual_seed(123)
    container.initialize(real, generator)

    clock = types.SimpleNamespace(now=0.0)  # the loop's wall clock: each iteration takes seconds_per_iteration
    fake_time = types.SimpleNamespace(perf_counter=lambda: clock.now, process_time=time.process_time)

    def stop(iteration, loss):
        clock.now += seconds_per_iteration  # a slow iteration, for the time limit, whatever the machine's load
        if stop_after is not None and iteration + 1 == stop_after:
            raise Interrupted

    with unittest.mock.patch.object(condense_module, "time", fake_time):
        result = condense(container, objective, real, OptimizerConfig(learning_rate=1.0),
                          LoopConfig(iterations, checkpoint_every=2), generator, checkpoint_path=checkpoint, resume=resume,
                          fingerprint="f", progress=False, on_iteration=stop, time_limit=time_limit)
    return container, result


@pytest.mark.parametrize("container_name", ["pixels", "multi_formation"])
def test_same_seed_same_container(gray_spec, container_name):
    first, result = _run(gray_spec, 3, container_name=container_name)
    second, _ = _run(gray_spec, 3, container_name=container_name)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    assert len(result.losses) == 3


def test_resume_after_a_kill_ends_as_an_uninterrupted_run(gray_spec, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):
        _run(gray_spec, 6, checkpoint, stop_after=3)  # killed after iteration 3; checkpoint holds iteration 2
    assert load_checkpoint(checkpoint)["iteration"] == 2
    resumed, resumed_result = _run(gray_spec, 6, checkpoint, resume=True)
    uninterrupted, result = _run(gray_spec, 6)
    assert torch.equal(resumed.images, uninterrupted.images)
    assert resumed_result.losses == result.losses


def test_a_checkpoint_of_another_configuration_is_refused(gray_spec, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint(checkpoint, {"fingerprint": "other", "iteration": 1})
    with pytest.raises(ArtifactError, match="different run configuration"):
        _run(gray_spec, 3, checkpoint, resume=True)


def test_truncated_or_altered_checkpoints_are_detected(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"x": torch.arange(100)})
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ArtifactError, match="truncated or corrupted"):
        load_checkpoint(path)
    path.write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="not a condensation checkpoint"):
        load_checkpoint(path)


def test_an_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    def failing_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr("condensation.io.os.replace", failing_replace)  # the shared atomic writer renames
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_time_limit_stops_at_the_first_iteration_boundary_after_it(gray_spec):
    # iterations of ~0.3 s against a 0.5 s limit: over it after the second, so two of ten are done
    container, result = _run(gray_spec, 10, time_limit=0.5, seconds_per_iteration=0.3)
    assert result.iterations == 2 and len(result.losses) == 2 and result.stopped_by_time_limit
    assert result.seconds >= 0.5
    # the container is exactly that of a 2-iteration run: stopping adds or skips nothing
    two, _ = _run(gray_spec, 2)
    assert torch.equal(container.images, two.images)


def test_a_run_that_finishes_within_its_time_limit_is_not_marked_stopped(gray_spec):
    _, result = _run(gray_spec, 3, time_limit=3600)
    assert result.iterations == 3 and not result.stopped_by_time_limit


def test_a_resumed_run_counts_the_seconds_spent_before_the_kill(gray_spec, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):
        _run(gray_spec, 6, checkpoint, stop_after=3, seconds_per_iteration=0.2)
    before = load_checkpoint(checkpoint)["seconds"]  # written after iteration 2
    assert before >= 0.4
    # a limit already spent before the kill: the resumed run stops after its first iteration
    _, result = _run(gray_spec, 6, checkpoint, resume=True, time_limit=0.3)
    assert result.iterations == 3 and result.stopped_by_time_limit and result.seconds >= before


@pytest.mark.parametrize("limit", [0, -1.0, float("nan")])
def test_a_time_limit_must_be_positive(gray_spec, limit):
    with pytest.raises(ConfigError, match="time_limit"):
        _run(gray_spec, 2, time_limit=limit)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch planted",))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"iteration": 1, "payload": _RunsCode()})  # a valid header over a hostile pickle
    with pytest.raises(ArtifactError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "planted").exists()
