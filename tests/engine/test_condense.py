import pytest
import torch

from condensation.containers import create_container
from condensation.engine.checkpoint import load_checkpoint, save_checkpoint
from condensation.engine.condense import LoopConfig, OptimizerConfig, condense
from condensation.errors import ArtifactError
from condensation.objectives import create_objective

from ..conftest import tiny_real


class Interrupted(Exception):
    pass


def _run(spec, iterations, checkpoint=None, resume=False, stop_after=None, container_name="pixels"):
    real, pre = tiny_real(spec)
    container = create_container(container_name, spec, 2, pre)
    objective = create_objective("dm", spec, real_per_class=6)
    generator = torch.Generator().manual_seed(123)
    container.initialize(real, generator)

    def stop(iteration, loss):
        if stop_after is not None and iteration + 1 == stop_after:
            raise Interrupted

    result = condense(container, objective, real, OptimizerConfig(learning_rate=1.0), LoopConfig(iterations, checkpoint_every=2),
                      generator, checkpoint_path=checkpoint, resume=resume, fingerprint="f", progress=False, on_iteration=stop)
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

    monkeypatch.setattr("condensation.engine.checkpoint.os.replace", failing_replace)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
