import json

from condensation.cli import main


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
    assert main(["export", str(out), "--format", "dc", "--out", str(tmp_path / "res.pt")]) == 0


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
