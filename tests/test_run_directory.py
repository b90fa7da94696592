"""Run directories under faults: one writer, nothing finished overwritten, nothing unfinished silently
discarded, resumes from every stage, interrupts that stop cleanly, inputs that cannot give a result refused."""
import json
import os
import signal

import pytest
import torch

from condensation.errors import ConfigError, Interrupted, NumericalError
from condensation.io import DirectoryLock
from condensation.run import RunConfig, distill

HMN_SMALL = {"dataset_channels": 2, "feature_channels": 3, "class_channels": 1, "instance_channels": 1,
             "decoder_width": 4}


def _config(tmp_path, name="run", **overrides):
    values = dict(recipe="dm", dataset="digits", ipc=1, iterations=4, protocol="smoke", out=str(tmp_path / name),
                  progress=False, checkpoint_every=2, objective_settings={"real_per_class": 16})
    values.update(overrides)
    return RunConfig(**values)


def _interrupt_at(monkeypatch, iteration):
    """Make the run's condense loop get a real SIGINT at the end of ``iteration``."""
    import condensation.engine.condense as engine

    original = engine.condense

    def interrupted(*args, **kwargs):
        kwargs["on_iteration"] = lambda i, loss: os.kill(os.getpid(), signal.SIGINT) if i == iteration else None
        return original(*args, **kwargs)

    monkeypatch.setattr("condensation.run.condense", interrupted)
    return original


def test_ctrl_c_checkpoints_at_the_iteration_boundary_and_resume_finishes_identically(tmp_path, monkeypatch):
    original = _interrupt_at(monkeypatch, 0)  # before the first regular checkpoint (every 2)
    with pytest.raises(Interrupted, match="run the same command with --resume"):
        distill(_config(tmp_path, "killed", evaluate=False))
    assert (tmp_path / "killed" / "checkpoint.pt").exists()
    monkeypatch.setattr("condensation.run.condense", original)
    distill(_config(tmp_path, "killed", evaluate=False), resume=True)
    distill(_config(tmp_path, "straight", evaluate=False))
    for name in ("container.safetensors", "generated.safetensors"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    rows = [json.loads(line)["iteration"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert rows == sorted(set(rows))  # each iteration logged once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back


def test_a_fresh_run_refuses_another_runs_checkpoint_and_resume_refuses_nothing(tmp_path, monkeypatch):
    original = _interrupt_at(monkeypatch, 0)
    with pytest.raises(Interrupted):
        distill(_config(tmp_path, evaluate=False))
    monkeypatch.setattr("condensation.run.condense", original)
    with pytest.raises(ConfigError, match="checkpoint of an unfinished run; pass --resume"):
        distill(_config(tmp_path, evaluate=False))
    with pytest.raises(ConfigError, match="another configuration"):
        distill(_config(tmp_path, evaluate=False, seed=3), resume=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        distill(_config(tmp_path, "empty", evaluate=False), resume=True)


def test_resume_never_overwrites_a_finished_run(tmp_path):
    results = distill(_config(tmp_path))
    files = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="another configuration"):
        distill(_config(tmp_path, seed=9, iterations=5), resume=True)
    again = distill(_config(tmp_path), resume=True)  # the same run: nothing to do
    assert again == json.loads(json.dumps(results))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == files


def test_a_kill_during_evaluation_resumes_the_evaluation_not_the_condensation(tmp_path, monkeypatch):
    import condensation.run as run

    original_evaluate = run.evaluate_container
    monkeypatch.setattr(run, "evaluate_container", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        distill(_config(tmp_path))
    assert (tmp_path / "run" / "metadata.json").exists() and not (tmp_path / "run" / "results.json").exists()
    with pytest.raises(ConfigError, match="evaluation did not finish; pass --resume"):
        distill(_config(tmp_path))
    monkeypatch.setattr(run, "evaluate_container", original_evaluate)
    monkeypatch.setattr(run, "condense", lambda *a, **k: pytest.fail("condensed again"))
    resumed = distill(_config(tmp_path), resume=True)
    monkeypatch.undo()
    straight = distill(_config(tmp_path, "straight"))
    assert resumed["accuracy"] == straight["accuracy"] and resumed["iterations"] == straight["iterations"] == 4


def test_a_kill_during_hmn_pruning_resumes_the_pruning_with_the_same_result(tmp_path, monkeypatch):
    import condensation.pruning as pruning

    settings = dict(recipe="hmn", objective_settings={}, iterations=2, evaluate=False, ipc=4,
                    container_settings={**HMN_SMALL, "over_budget": 0.5},
                    post_condense_settings={"aum_epochs": 2, "beta_grid": [0.0, 1.0], "validation_networks": 1})
    original = pruning.select_beta
    monkeypatch.setattr(pruning, "select_beta", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        distill(_config(tmp_path, "killed", **settings))
    assert (tmp_path / "killed" / "post_condense.json").exists()
    monkeypatch.setattr(pruning, "select_beta", original)
    import condensation.run as run
    monkeypatch.setattr(run, "condense", lambda *a, **k: pytest.fail("condensed again"))
    distill(_config(tmp_path, "killed", **settings), resume=True)
    monkeypatch.undo()
    distill(_config(tmp_path, "straight", **settings))
    for name in ("container.safetensors", "generated.safetensors"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    assert not (tmp_path / "killed" / "post_condense.json").exists()


def test_one_writer_per_run_directory(tmp_path):
    with DirectoryLock(tmp_path / "run"):
        with pytest.raises(ConfigError, match=f"in use by another condense process \\(pid {os.getpid()}\\)"):
            distill(_config(tmp_path))
    distill(_config(tmp_path, evaluate=False))  # released: the same directory works again


@pytest.mark.parametrize("overrides, message", [
    ({"ipc": 200}, "ipc 200 exceeds the"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"checkpoint_every": -1}, "checkpoint_every must be >= 0"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ({"post_condense_settings": {"beta_grid": [0.5]}}, "has no post-condensation step"),
    ({"protocol_settings": {"learning_rate": float("nan")}}, "finite"),
    ({"protocol_settings": {"batch_size": 0}}, "batch_size >= 1"),
    ({"protocol_settings": {"steps": -1}}, "neither negative"),
    ({"objective_settings": {"real_per_class": "abc"}}, "real_per_class' must be an integer"),
    ({"objective_settings": {"real_per_class": 1.5}}, "real_per_class' must be an integer"),
    ({"ipc": "2"}, "ipc must be an integer"),
])
def test_inputs_that_cannot_give_a_meaningful_result_are_refused(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        distill(_config(tmp_path, **overrides))


def test_repeated_images_only_when_asked(tmp_path):
    results = distill(_config(tmp_path, recipe="random", ipc=200, allow_repeated_images=True, objective_settings={},
                              iterations=None, evaluate=False))
    assert results["generated_images_per_class"] == 200


def test_a_diverging_run_names_the_iteration_and_the_learning_rate(tmp_path):
    expected = r"iteration \d+.*: the run diverged; lower the container's learning rate \(--lr, now 1e\+30\)"
    with pytest.raises(NumericalError, match=expected):
        distill(_config(tmp_path, learning_rate=1e30, iterations=20))
    assert not (tmp_path / "run" / "metadata.json").exists()


def test_nan_in_a_container_is_refused_before_an_artifact_is_written(tmp_path, monkeypatch):
    import condensation.run as run

    original = run.condense

    def poisoned(container, *args, **kwargs):
        result = original(container, *args, **kwargs)
        with torch.no_grad():
            container.images[0, 0, 0, 0] = float("nan")
        return result

    monkeypatch.setattr(run, "condense", poisoned)
    with pytest.raises(NumericalError, match="NaN or infinite values in images"):
        distill(_config(tmp_path))
    assert not (tmp_path / "run" / "metadata.json").exists()


def test_out_naming_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file; a run directory"):
        distill(_config(tmp_path))


def test_a_run_whose_values_explode_at_a_finite_loss_is_stopped(tmp_path):
    """DM at --lr 1e9 keeps a finite loss (its features saturate) while the pixels reach 1e9."""
    with pytest.raises(NumericalError, match=r"values reached .* at iteration 0 .*--lr, now 1e\+09"):
        distill(_config(tmp_path, learning_rate=1e9, iterations=5))


@pytest.mark.parametrize("recipe", ["dm", "echo", "dsa", "idc", "rtp"])
def test_non_positive_batch_sizes_are_refused_by_every_objective(tmp_path, recipe):
    with pytest.raises(ConfigError, match="real_per_class"):
        distill(_config(tmp_path, recipe=recipe, objective_settings={"real_per_class": -3}))


def test_tensorboard_gets_the_loss_of_every_iteration_and_the_accuracies(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    distill(_config(tmp_path, tensorboard=str(tmp_path / "tb"), iterations=5))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    losses = events.Scalars("condense/loss")
    assert [e.step for e in losses] == [0, 1, 2, 3, 4]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[0].value == pytest.approx(metrics[0]["loss"], rel=1e-6)
    assert [e.step for e in events.Scalars("accuracy/convnet")] == [5]


def test_every_phase_of_a_run_says_what_it_does(tmp_path, capsys):
    distill(_config(tmp_path, recipe="random", objective_settings={}, iterations=None, progress=True,
                    random_baseline=True, random_baseline_draws=1))
    err = capsys.readouterr().err
    for phase in ("loading digits", "fitting 'normalize' preprocessing", "choosing 1 real image(s) per class",
                  "evaluating under protocol 'smoke'", "random real images at IPC 1"):
        assert f"condense: {phase}" in err, phase
    assert "done in" in err


def test_wandb_gets_the_same_scalars_when_asked(tmp_path, monkeypatch):
    """W&B is optional and not a test dependency: a stand-in module records what the run sends."""
    import sys
    import types

    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, values, step):
            calls["log"].append((values, step))

        def finish(self):
            calls["finish"] += 1

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls["init"].append(kwargs) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    distill(_config(tmp_path, wandb="condensation-test", iterations=3))
    assert calls["init"][0]["project"] == "condensation-test" and calls["init"][0]["config"]["recipe"] == "dm"
    assert [step for values, step in calls["log"] if "condense/loss" in values] == [0, 1, 2]
    assert any("accuracy/convnet" in values for values, _ in calls["log"]) and calls["finish"] == 1  # one W&B run per distill
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ConfigError, match="pip install wandb"):
        distill(_config(tmp_path, "other", wandb="x"))
