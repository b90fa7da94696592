"""End-to-end runs through the public API on the embedded digits and on real Fashion-MNIST."""
import json

import pytest
import torch

from condensation.artifacts import load_artifact
from condensation.errors import ConfigError, DataError
from condensation.run import RunConfig, distill, evaluate_artifact

RESULT_KEYS = {"recipe", "container", "objective", "dataset", "ipc", "seed", "protocol", "stored_floats", "stored_bytes",
               "budget_floats", "budget_ratio", "generated_images_per_class", "generated_images_total", "accuracy",
               "random_baseline", "wall_clock_seconds", "peak_memory_bytes", "device", "torch_version", "library_version"}


def _config(tmp_path, **overrides):
    values = dict(recipe="dm", dataset="digits", ipc=1, iterations=3, protocol="smoke", out=str(tmp_path / "run"),
                  random_baseline=True, progress=False, objective_settings={"real_per_class": 16})
    values.update(overrides)
    return RunConfig(**values)


def test_distill_writes_a_complete_artifact_and_results(tmp_path):
    results = distill(_config(tmp_path))
    assert RESULT_KEYS <= set(results)
    assert results["stored_floats"] == results["budget_floats"] == 10 * 64
    assert results["protocol"]["name"] == "smoke" and "learning_rate" in results["protocol"]
    assert results["random_baseline"]["n"] == 3 and len(results["random_baseline"]["draws"]) == 3
    assert results["accuracy"]["convnet"]["n"] == 1
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["accuracy"] == results["accuracy"]
    artifact = load_artifact(tmp_path / "run")
    assert torch.equal(artifact.container.generate_all().images, artifact.generated_images)
    again = evaluate_artifact(tmp_path / "run", "smoke", progress=False)
    assert again["accuracy"]["convnet"]["values"] == results["accuracy"]["convnet"]["values"]


def test_same_seed_same_artifact(tmp_path):
    distill(_config(tmp_path, out=str(tmp_path / "a"), evaluate=False))
    distill(_config(tmp_path, out=str(tmp_path / "b"), evaluate=False))
    a = (tmp_path / "a" / "container.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "container.safetensors").read_bytes()


def test_a_finished_artifact_is_never_overwritten(tmp_path):
    distill(_config(tmp_path, evaluate=False))
    before = (tmp_path / "run" / "container.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a finished artifact"):
        distill(_config(tmp_path, evaluate=False, seed=5))
    assert (tmp_path / "run" / "container.safetensors").read_bytes() == before


def test_resume_through_the_api_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    import condensation.engine.condense as engine

    config = _config(tmp_path, iterations=5, checkpoint_every=2, evaluate=False, out=str(tmp_path / "killed"))
    original = engine.condense

    def killed(*args, **kwargs):
        kwargs["on_iteration"] = lambda iteration, loss: (_ for _ in ()).throw(KeyboardInterrupt) if iteration == 2 else None
        return original(*args, **kwargs)

    monkeypatch.setattr("condensation.run.condense", killed)
    with pytest.raises(KeyboardInterrupt):
        distill(config)
    assert (tmp_path / "killed" / "checkpoint.pt").exists()
    monkeypatch.setattr("condensation.run.condense", original)
    distill(config, resume=True)
    distill(_config(tmp_path, iterations=5, checkpoint_every=2, evaluate=False, out=str(tmp_path / "straight")))
    killed, straight = (tmp_path / name / "container.safetensors" for name in ("killed", "straight"))
    assert killed.read_bytes() == straight.read_bytes()
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"recipe": "dmm"}, "unknown recipe"),
    ({"dataset": "cifar11"}, "unknown dataset"),
    ({"ipc": 0}, "ipc must be"),
    ({"protocol": "fast"}, "unknown protocol"),
    ({"architectures": ("resnet99",)}, "unknown network"),
    ({"container": "pixls"}, "unknown container"),
    ({"objective": "dn"}, "unknown objective"),
    ({"objective_settings": {"kernal": "linear"}}, "kernal"),
    ({"device": "tpu"}, "device"),
    ({"precision": "fp16"}, "precision"),
    ({"time_limit": "soon"}, "time_limit"),
    ({"time_limit": -5}, "time_limit"),
])
def test_bad_input_fails_before_work_starts(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        distill(_config(tmp_path, **overrides))
    assert not (tmp_path / "run").exists()


def test_a_network_too_small_for_the_images_fails_before_condensing(tmp_path):
    with pytest.raises(ConfigError, match="cannot take 8x8"):
        distill(_config(tmp_path, architectures=("convnet5",), iterations=1000))
    assert not (tmp_path / "run").exists()


def test_a_missing_dataset_root_is_reported(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        distill(_config(tmp_path, dataset="fashion_mnist", data_root=str(tmp_path / "nowhere")))


def test_fashion_mnist_end_to_end_from_shared_data(tmp_path, shared_data):
    results = distill(_config(tmp_path, dataset="fashion_mnist", data_root=str(shared_data), iterations=2,
                              random_baseline=False))
    assert results["budget_floats"] == 7840 and results["generated_images_total"] == 10
    assert 0 <= results["accuracy"]["convnet"]["mean"] <= 100


def test_hmn_condenses_over_budget_then_prunes_back_within_it(tmp_path):
    results = distill(_config(tmp_path, recipe="hmn", objective_settings={}, random_baseline=False,
                              post_condense_settings={"aum_epochs": 2, "beta_grid": [0.0, 1.0], "validation_networks": 1}))
    assert results["stored_floats"] <= results["budget_floats"]
    pruning = json.loads((tmp_path / "run" / "metadata.json").read_text())["container"]["pruning"]
    assert pruning["instances_per_class_before"] > pruning["instances_per_class_after"] == results["generated_images_per_class"]
    assert set(pruning["validation_accuracy"]) == {"0.0", "1.0"}  # beta chosen on the validation split
    # the over-budget container is kept beside the pruned one, so pruning can be redone without condensing
    before = load_artifact(tmp_path / "run" / "over_budget")
    assert before.metadata["stage"] == "before post-condensation"
    assert before.container.generated_per_class() == pruning["instances_per_class_before"]
    assert before.container.stored_floats() > results["budget_floats"]


def test_optimizer_override_replaces_only_the_optimizer_kind():
    from condensation.run import plan_run

    plan = plan_run(RunConfig(recipe="rtp", dataset="digits", optimizer="adam", learning_rate=0.01))
    assert (plan.optimizer.name, plan.optimizer.learning_rate, plan.optimizer.gradient_clip) == ("adam", 0.01, 2.0)
    assert plan_run(RunConfig(recipe="rtp", dataset="digits")).optimizer.name == "sgd"
    with pytest.raises(ConfigError, match="unknown optimizer"):
        plan_run(RunConfig(recipe="dm", dataset="digits", optimizer="lbfgs"))


def test_an_over_budget_container_without_a_pruning_step_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="over budget"):
        distill(_config(tmp_path, container="hmn", container_settings={"over_budget": 0.1}))


def test_a_time_limited_run_saves_what_it_reached_and_says_so(tmp_path):
    # a limit far below one iteration: the run stops after its first iteration, as if it had asked for one
    results = distill(_config(tmp_path, iterations=50, time_limit="0.000001s", random_baseline=False))
    assert results["iterations"] == 1 and results["iterations_planned"] == 50
    assert results["stopped_by_time_limit"] is True and results["time_limit_seconds"] == pytest.approx(1e-6)
    artifact = load_artifact(tmp_path / "run")
    assert artifact.metadata["iterations"] == 1 and artifact.metadata["config"]["time_limit"] == "0.000001s"
    again = evaluate_artifact(tmp_path / "run", "smoke", progress=False)
    assert again["accuracy"]["convnet"]["values"] == results["accuracy"]["convnet"]["values"]


def test_results_and_metadata_record_the_precision(tmp_path):
    results = distill(_config(tmp_path, precision="bf16", random_baseline=False))
    assert results["precision"] == "bf16" and results["stopped_by_time_limit"] is False
    assert results["time_limit_seconds"] is None and results["iterations"] == results["iterations_planned"] == 3
    assert load_artifact(tmp_path / "run").metadata["precision"] == "bf16"
    assert evaluate_artifact(tmp_path / "run", "smoke", progress=False, precision="bf16")["precision"] == "bf16"


def test_a_pruning_recipe_with_a_container_that_cannot_prune_fails_before_condensing(tmp_path):
    # it used to condense for the whole run, then fail in the pruning step and save nothing
    with pytest.raises(ConfigError, match="container 'pixels' cannot do; use one of: hmn"):
        distill(_config(tmp_path, recipe="hmn", container="pixels", objective_settings={}))
    assert not (tmp_path / "run").exists()


def test_isolate_classes_is_a_named_run_option_off_by_default(tmp_path):
    from condensation.run import RunConfig, plan_run

    assert plan_run(RunConfig(recipe="hmn", dataset="digits")).optimizer.isolate_classes is False
    assert plan_run(RunConfig(recipe="hmn", dataset="digits", isolate_classes=True)).optimizer.isolate_classes is True
    assert plan_run(RunConfig(recipe="idc", dataset="digits", isolate_classes=True)).optimizer.isolate_classes is True


def test_a_cpu_limited_run_saves_and_evaluates_snapshots_at_fractions_of_its_budget(tmp_path):
    results = distill(_config(tmp_path, iterations=100_000, cpu_limit="2s", snapshots=(0.25, 0.5),
                              random_baseline=False))
    assert results["stopped_by_cpu_limit"] is True and results["stopped_by_time_limit"] is False
    assert 2.0 <= results["condense_cpu_seconds"] and results["cpu_limit_seconds"] == 2.0
    assert results["world_size"] == 1
    rows = results["snapshots"]
    assert [row["fraction"] for row in rows] == [0.25, 0.5]
    assert rows[0]["iterations"] < rows[1]["iterations"] < results["iterations"]
    assert 0.5 <= rows[0]["condense_cpu_seconds"] < rows[1]["condense_cpu_seconds"] < results["condense_cpu_seconds"]
    for row in rows:
        snapshot = load_artifact(tmp_path / "run" / "snapshots" / f"{row['fraction'] * 100:g}")
        assert snapshot.metadata["iterations"] == row["iterations"] and row["accuracy"]["convnet"]["n"] >= 1
    # the CPU budget decides where the run stops, not what it computes: a resume may change it
    from condensation.run import RunConfig, fingerprint

    assert fingerprint(RunConfig(recipe="dm", dataset="digits", cpu_limit="1m")) == fingerprint(
        RunConfig(recipe="dm", dataset="digits", cpu_limit="2m", snapshots=(0.5,)))
