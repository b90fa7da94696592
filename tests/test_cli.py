import argparse
import json
import sys

import pytest
import torch

import condensation
from condensation.cli import build_parser, main


def test_list_commands(capsys):
    assert main(["list", "recipes"]) == 0
    out = capsys.readouterr().out
    assert "dm" in out and "random" in out and "herding" in out
    assert main(["list", "protocols"]) == 0
    assert "cpu" in capsys.readouterr().out


def test_distill_show_evaluate_export(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--recipe", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "2", "--protocol",
                 "smoke", "--objective-set", "real_per_class=8", "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "dm" in table and "640" in table and "protocol 'smoke'" in table
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "640 floats" in shown and "grid.png" in shown
    assert main(["evaluate", str(out), "--protocol", "smoke"]) == 0
    evaluated = capsys.readouterr().out
    assert json.loads(evaluated[evaluated.index("{"):])["protocol"]["name"] == "smoke"
    assert main(["export", str(out), "--format", "dc", "--out", str(tmp_path / "exported" / "dc")]) == 0
    assert (tmp_path / "exported" / "dc" / "res.pt").is_file() and "README.md" in capsys.readouterr().out


def test_config_file_and_errors(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"recipe": "dm", "dataset": "digits", "iterations": 1, "evaluate": False,
                                  "out": str(tmp_path / "r"), "progress": False, "objective_settings": {"real_per_class": 4}}))
    assert main(["distill", "--config", str(config)]) == 0
    capsys.readouterr()
    config.write_text(json.dumps({"recipe": "dm", "dataset": "digits", "iterationz": 1}))
    assert main(["distill", "--config", str(config)]) == 2
    assert "iterationz" in capsys.readouterr().err
    assert main(["distill", "--recipe", "dm"]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "nothing")]) == 2
    assert "not an artifact" in capsys.readouterr().err


def test_time_limit_and_precision_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--recipe", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "40", "--protocol",
                 "smoke", "--objective-set", "real_per_class=8", "--out", str(out), "--quiet",
                 "--time-limit", "0.000001", "--precision", "bf16"]) == 0
    assert "stopped by the 1e-06 s time limit after 1 of 40 iterations" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["precision"] == "bf16" and results["iterations"] == 1
    assert main(["distill", "--recipe", "dm", "--dataset", "digits", "--out", str(tmp_path / "x"),
                 "--time-limit", "soon"]) == 2
    assert "time_limit" in capsys.readouterr().err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["distill", "--recipe", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "2", "--protocol",
                 "smoke", "--objective-set", "real_per_class=8", "--out", str(out), "--quiet", "--no-evaluate"]) == 0
    return out


def test_evaluate_prints_and_records_the_settings_it_used(digits_run, capsys):
    log = digits_run / "evaluations.jsonl"
    log.unlink(missing_ok=True)
    for steps in (2, 3):
        assert main(["evaluate", str(digits_run), "--protocol", "smoke", "--protocol-set", f"steps={steps}",
                     "--protocol-set", "test_limit=100", "--architectures", "mlp", "--seed", "7", "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        assert f"steps={steps} (preset: 4)" in out and "test_limit=100 (preset: 500)" in out
        assert "architectures evaluated: mlp" in out and "(n=1)" in out and "± 0.00" not in out
        printed = json.loads(out[out.index("{"):])
        assert printed["protocol"]["architectures"] == ["mlp"] and printed["architectures"] == ["mlp"]
        assert printed["protocol"]["steps"] == steps
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 2
    for line, steps in zip(lines, (2, 3)):
        assert line["protocol"]["steps"] == steps and line["protocol"]["test_limit"] == 100
        assert line["protocol_overrides"] == {"steps": steps, "test_limit": 100}
        assert line["architectures"] == ["mlp"] and line["seed"] == 7 and line["precision"] == "fp32"
        assert set(line["accuracy"]) == {"mlp"} and line["accuracy"]["mlp"]["n"] == 1
        assert line["timestamp"].endswith("+00:00")


def test_evaluate_in_a_read_only_run_still_prints_its_result(digits_run, capsys, monkeypatch):
    from condensation import io

    def refuse(path, line):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io, "append_line", refuse)
    assert main(["evaluate", str(digits_run), "--protocol", "smoke", "--protocol-set", "steps=1",
                 "--architectures", "mlp", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "not recorded" in captured.err and "Permission denied" in captured.err and "mlp:" in captured.out


@pytest.mark.parametrize("format", ["dc", "mtt", "image_folder"])
def test_export_formats_from_the_command_line(digits_run, tmp_path, capsys, format):
    out = tmp_path / "nested" / format
    assert main(["export", str(digits_run), "--format", format, "--out", str(out)]) == 0
    assert f"wrote {out} ({format})" in capsys.readouterr().out
    assert {"README.md", "preprocessing.json", "preprocessing.safetensors", "classes.json"} <= {p.name for p in out.iterdir()}
    # a second export into the same directory is refused, naming it, without a traceback
    assert main(["export", str(digits_run), "--format", format, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("condense: error:") and "not empty" in err and "Traceback" not in err


def test_export_errors_are_one_line(digits_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    assert main(["export", str(digits_run), "--format", "dc", "--out", str(tmp_path / "a_file")]) == 2
    assert "is a file" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert main(["export", str(digits_run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    assert "pip install 'condensation[hf]'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(digits_run), "--format", "zip", "--out", str(tmp_path / "z")])


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"condense (condensation) {condensation.__version__}"


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", ["distill", "evaluate", "export", "experts"])
def test_every_flag_has_help_and_shows_its_default(command):
    sub = _subparsers(build_parser())[command]
    text = sub.format_help()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest} has no help text"
        if action.default not in (None, False):
            assert f"(default: {action.default})" in " ".join(text.split()), (command, action.dest)
    assert "(default: None)" not in text


def test_evaluate_help_names_its_defaults():
    text = " ".join(_subparsers(build_parser())["evaluate"].format_help().split())
    assert "(default: cpu)" in text and "(default: auto)" in text and "(default: fp32)" in text


def test_distill_table_says_n1_for_one_network(capsys, tmp_path):
    assert main(["distill", "--recipe", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "1", "--protocol",
                 "smoke", "--architectures", "mlp", "--objective-set", "real_per_class=4", "--out",
                 str(tmp_path / "r"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "(n=1)" in table and "± 0.00" not in table


def test_query_writes_the_mixed_images_of_a_run(digits_run, tmp_path, capsys):
    from safetensors.torch import load_file

    from condensation.artifacts import load_artifact

    out = tmp_path / "queries"
    assert main(["query", str(digits_run), "--mix", "0", "--mix", "0.25*3+0.75*5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "linear" in printed and "row 2: 0.25*3+0.75*5" in printed
    stored = load_file(str(out / "queries.safetensors"))
    generated = load_artifact(digits_run).container.generate_all().images
    per_class = generated.shape[0] // 10
    classes = generated.view(10, per_class, *generated.shape[1:])
    torch.testing.assert_close(stored["images"][0], classes[0])  # one class alone: its own images
    torch.testing.assert_close(stored["images"][1], 0.25 * classes[3] + 0.75 * classes[5])
    assert (out / "queries.png").exists()
    assert main(["query", str(digits_run), "--mix", "no-such-class"]) == 2
    assert "no-such-class" in capsys.readouterr().err
