"""SIGKILL at several points of a real `distill` process (mid-iteration, between checkpoints, during the
artifact write, during HMN's pruning), then --resume: the artifact is bit-identical to an uninterrupted run's.
The kill points are monkeypatched into a small driver process; the library has no test hooks."""
import json
import signal
import subprocess
import sys
import textwrap

import pytest

DRIVER = textwrap.dedent('''
    import json, os, signal, sys
    import condensation.artifacts as artifacts
    import condensation.engine.condense as engine
    import condensation.pruning as pruning
    import condensation.run as run

    config, point, resume = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    kind, _, count = point.partition(":")
    calls = {"n": 0}

    def die_on(count):
        calls["n"] += 1
        if calls["n"] == count:
            os.kill(os.getpid(), signal.SIGKILL)

    if kind == "backward":  # in the middle of an iteration: the count-th objective step
        create = run.create_objective
        def create_dying(*args, **kwargs):
            objective = create(*args, **kwargs)
            backward = objective.backward
            def dying(*a, **k):
                die_on(int(count))
                return backward(*a, **k)
            objective.backward = dying
            return objective
        run.create_objective = create_dying
    elif kind == "checkpoint":  # after the first checkpoint, as the count-th one starts
        save = engine.save_checkpoint
        engine.save_checkpoint = lambda *a, **k: (die_on(int(count)), save(*a, **k))
    elif kind == "artifact":  # between two tensor files of the artifact
        write = artifacts.atomic_save_tensors
        artifacts.atomic_save_tensors = lambda *a, **k: (die_on(int(count)), write(*a, **k))
    elif kind == "pruning":
        select = pruning.select_beta
        pruning.select_beta = lambda *a, **k: (die_on(1), select(*a, **k))[1]
    run.distill(run.RunConfig(**config), resume=resume)
''')

IDC = dict(recipe="idc", dataset="digits", ipc=1, iterations=6, checkpoint_every=2, evaluate=False, progress=False,
           protocol="smoke", objective_settings={"real_per_class": 8, "synthetic_per_class": 4,
                                                  "real_training_images": 40, "network": "convnet_w32"})
HMN = dict(recipe="hmn", dataset="digits", ipc=4, iterations=3, checkpoint_every=1, evaluate=False, progress=False,
           protocol="smoke", objective_settings={"real_per_class": 8, "synthetic_per_class": 4,
                                                  "real_training_images": 40, "network": "convnet_w32"},
           container_settings={"dataset_channels": 2, "feature_channels": 3, "class_channels": 1,
                               "instance_channels": 1, "decoder_width": 4, "over_budget": 0.5},
           post_condense_settings={"aum_epochs": 2, "beta_grid": [0.0, 1.0], "validation_networks": 1})


def _run(tmp_path, config: dict, out: str, point: str = "none", resume: bool = False) -> int:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    payload = json.dumps({**config, "out": str(tmp_path / out)})
    return subprocess.run([sys.executable, str(driver), payload, point, "1" if resume else "0"],
                          capture_output=True, timeout=600).returncode


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("straight")
    for name, config in (("idc", IDC), ("hmn", HMN)):
        assert _run(tmp_path, config, name) == 0
    return tmp_path


@pytest.mark.parametrize("name, point", [
    ("idc", "backward:25"),  # iteration 2 (of 6), class 5 of 10: mid-iteration, after the first checkpoint
    ("idc", "checkpoint:2"),  # as the second checkpoint starts
    ("idc", "artifact:2"),  # container.safetensors written, generated.safetensors not
    ("hmn", "backward:15"),  # mid-iteration 1
    ("hmn", "pruning"),  # after AUM scoring, while choosing beta
])
def test_a_killed_run_resumes_to_the_same_artifact(tmp_path, uninterrupted, name, point):
    config = IDC if name == "idc" else HMN
    assert _run(tmp_path, config, "killed", point) == -signal.SIGKILL
    assert not (tmp_path / "killed" / "results.json").exists()
    assert _run(tmp_path, config, "killed", resume=True) == 0
    for file in ("container.safetensors", "generated.safetensors"):
        assert (tmp_path / "killed" / file).read_bytes() == (uninterrupted / name / file).read_bytes(), file
    killed = json.loads((tmp_path / "killed" / "metadata.json").read_text())
    straight = json.loads((uninterrupted / name / "metadata.json").read_text())
    assert killed["container"] == straight["container"] and killed["iterations"] == straight["iterations"]


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_cleanly_and_say_how_to_resume(tmp_path, sent):
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "condensation.cli", "distill", "--recipe", "dm", "--dataset", "digits", "--ipc",
               "1", "--iterations", "100000", "--protocol", "smoke", "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip():
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "run the same command with --resume" in stderr
    assert (out / "checkpoint.pt").exists() and not (out / "metadata.json").exists()
