"""Recipes as data: every (method, dataset, IPC) a paper reports resolves into a valid run plan, values match
their sources, unreported combinations say what they borrowed, and overrides are recorded."""
import json

import pytest

from condensation.cli import main
from condensation.errors import ConfigError
from condensation.recipes import RECIPE_FILES, describe_recipe, get_recipe, load_recipe_file, reported_cells
from condensation.run import RunConfig, distill, plan_run

PAPER_DATASETS = {"mnist", "fashion_mnist", "svhn", "cifar10", "cifar100", "tiny_imagenet"}


def test_every_method_of_the_mission_has_a_recipe_file():
    assert set(RECIPE_FILES) >= {"random", "herding", "dc", "dsa", "dm", "mtt", "idc", "hmn", "rtp", "echo", "haba"}


@pytest.mark.parametrize("name,dataset,ipc", reported_cells())
def test_every_reported_cell_resolves_to_a_valid_plan(name, dataset, ipc):
    recipe = get_recipe(name, dataset, ipc)
    assert recipe.fallback is None and recipe.settings_from == (dataset, ipc)
    assert dataset in PAPER_DATASETS
    # every value the cell resolved to names a source
    assert all(recipe.sources.get(key) for key in recipe.settings() if key not in (
        "container", "objective") and (key in recipe.sources or key.split(".")[0] in (
            "container_settings", "objective_settings", "protocol_settings", "post_condense_settings")))
    settings = {"experts": "unused"} if recipe.objective == "mtt" else {}
    plan = plan_run(RunConfig(recipe=name, dataset=dataset, ipc=ipc, objective_settings=settings))
    assert plan.iterations == recipe.iterations and plan.protocol.name == recipe.protocol
    for key, entry in plan.settings.items():
        assert entry["source"], key


def test_reported_cells_cover_the_papers():
    cells = set(reported_cells())
    for dataset in ("mnist", "fashion_mnist", "svhn", "cifar10", "cifar100"):
        for ipc in (1, 10, 50):
            assert ("dc", dataset, ipc) in cells and ("dsa", dataset, ipc) in cells and ("idc", dataset, ipc) in cells
    for dataset in ("cifar10", "cifar100", "tiny_imagenet"):
        for ipc in (1, 10, 50):
            assert ("mtt", dataset, ipc) in cells and ("dm", dataset, ipc) in cells
    assert {("haba", "cifar10", k) for k in (1, 10, 50)} <= cells and ("rtp", "cifar10", 1) in cells


def test_values_follow_their_sources():
    # DC/DSA: utils.get_loops; the paper's 1000 iterations are 1000 x outer_loop engine iterations
    for name in ("dc", "dsa"):
        for ipc, (outer, inner) in {1: (1, 1), 10: (10, 50), 50: (50, 10)}.items():
            recipe = get_recipe(name, "cifar10", ipc)
            assert (recipe.objective_settings["outer_loop"], recipe.objective_settings["inner_loop"]) == (outer, inner)
            assert recipe.iterations == 1000 * outer
    assert get_recipe("dc", "cifar10", 1).container_settings["init"] == "noise"
    assert get_recipe("dsa", "cifar10", 1).container_settings["init"] == "real"
    # DC evaluates MNIST alone with crop/scale/rotate for 1000 epochs
    assert get_recipe("dc", "mnist", 1).protocol_settings == {"augmentation": "dc_digits", "epochs": 1000}
    assert get_recipe("dc", "fashion_mnist", 1).protocol_settings == {}
    # IDC: lr_img 5e-3 x IPC/10 on CIFAR, 1e-4 x IPC/10 on MNIST, x (28/32)^2 more on Fashion-MNIST
    idc = {d: get_recipe("idc", d, 10) for d in ("cifar10", "mnist", "fashion_mnist")}
    assert idc["cifar10"].optimizer.learning_rate * 10 == pytest.approx(5e-3)
    assert idc["mnist"].optimizer.learning_rate * 10 == pytest.approx(1e-4)
    assert idc["fashion_mnist"].optimizer.learning_rate * 10 == pytest.approx(1e-4 * (28 / 32) ** 2)
    assert idc["cifar10"].objective_settings["distance"] == "mse" and idc["mnist"].objective_settings["distance"] == "l1"
    assert idc["cifar10"].iterations == 2000 * 100
    assert idc["mnist"].protocol_settings["cutmix_probability"] == 0.0
    # MTT per dataset and IPC (authors' commands), ZCA where they use it
    mtt = get_recipe("mtt", "cifar100", 50)
    assert (mtt.objective_settings["syn_steps"], mtt.objective_settings["batch_syn"], mtt.preprocessing) == (80, 125, "zca")
    assert get_recipe("mtt", "cifar10", 50).preprocessing == "normalize"
    assert get_recipe("mtt", "tiny_imagenet", 1).optimizer.learning_rate == 10000.0
    # HaBa's scripts per IPC
    assert get_recipe("haba", "cifar10", 10).objective_settings["syn_lr"] == 0.001
    assert get_recipe("haba", "cifar10", 50).objective_settings["syn_lr"] == 0.01
    # RTP: un-augmented, no weight decay in the inner loop, evaluated the same way
    rtp = get_recipe("rtp", "cifar10", 1)
    assert rtp.objective_settings["dsa"] is False and rtp.objective_settings["inner_weight_decay"] == 0.0


def test_an_unreported_combination_borrows_by_the_rule_and_says_so():
    same_dataset = get_recipe("idc", "cifar10", 20)
    assert same_dataset.settings_from == ("cifar10", 10) and "nearest reported IPC" in same_dataset.fallback
    tie = get_recipe("mtt", "cifar10", 30)  # 10 and 50 are both 20 away: the smaller wins
    assert tie.settings_from == ("cifar10", 10)
    other_dataset = get_recipe("mtt", "fashion_mnist", 10)
    assert other_dataset.settings_from == ("cifar10", 10) and "fashion_mnist" in other_dataset.fallback
    assert other_dataset.objective_settings["syn_steps"] == get_recipe("mtt", "cifar10", 10).objective_settings["syn_steps"]
    assert get_recipe("dm", "cifar10", 10).fallback is None


def test_a_fallback_is_announced_when_the_run_starts(tmp_path, capsys):
    results = distill(RunConfig(recipe="dm", dataset="digits", ipc=1, iterations=1, protocol="smoke",
                                out=str(tmp_path / "run"), progress=False, evaluate=False))
    assert "no published settings for digits" in capsys.readouterr().err
    assert results["recipe_fallback"].startswith("recipe 'dm' has no published settings for digits")
    assert results["recipe_settings_from"] == ["cifar10", 1]


def test_results_record_every_resolved_setting_and_what_overrode_it(tmp_path):
    results = distill(RunConfig(recipe="dm", dataset="digits", ipc=1, iterations=2, protocol="smoke",
                                learning_rate=3.0, objective_settings={"real_per_class": 16},
                                out=str(tmp_path / "run"), progress=False, evaluate=False))
    settings = json.loads((tmp_path / "run" / "results.json").read_text())["recipe_settings"]
    assert settings == results["recipe_settings"]
    assert settings["optimizer.learning_rate"] == {"value": 3.0, "source": "run config (command line or config file)"}
    assert settings["objective_settings.real_per_class"]["value"] == 16
    assert settings["optimizer.momentum"]["value"] == 0.5 and "main_DM.py" in settings["optimizer.momentum"]["source"]
    assert settings["iterations"] == {"value": 2, "source": "run config (command line or config file)"}
    assert settings["protocol"]["value"] == "smoke"


def test_another_protocol_on_the_command_line_drops_the_recipes_protocol_settings():
    paper = plan_run(RunConfig(recipe="dc", dataset="mnist", ipc=1))
    assert paper.protocol.augmentation == "dc_digits" and paper.protocol.epochs == 1000
    cpu = plan_run(RunConfig(recipe="dc", dataset="mnist", ipc=1, protocol="cpu"))
    assert cpu.protocol.augmentation == "dsa" and cpu.protocol.steps == 200


def test_show_recipe_prints_values_with_numbered_sources(capsys):
    assert main(["show-recipe", "dsa", "--dataset", "cifar10", "--ipc", "10"]) == 0
    text = capsys.readouterr().out
    assert "objective_settings.outer_loop" in text and "utils.get_loops: IPC 10" in text
    line = next(row for row in text.splitlines() if row.strip().startswith("iterations"))
    assert "10000" in line and "[" in line
    assert main(["list", "recipes", "--dataset", "cifar10", "--ipc", "10"]) == 0
    listing = capsys.readouterr().out
    assert all(f"recipe {name} for cifar10 at IPC 10" in listing for name in RECIPE_FILES)
    assert main(["show-recipe", "nope"]) == 2


def test_a_malformed_recipe_file_is_refused_by_name(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('container = "pixels"\n[base]\nsource = "x"\nlearning_rate = 1\n')
    with pytest.raises(ValueError, match="unknown key 'learning_rate'"):
        load_recipe_file(path)
    path.write_text('container = "pixels"\n[base]\niterations = 3\n')
    with pytest.raises(ValueError, match="source"):
        load_recipe_file(path)


def test_describe_shows_the_effective_learning_rate():
    text = describe_recipe(get_recipe("idc", "cifar10", 10))
    assert "0.005 (= 0.0005 x IPC 10)" in text


def test_unknown_recipe_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown recipe"):
        get_recipe("nope", "cifar10", 1)


def test_the_projects_docs_and_code_point_to_nothing_outside_it():
    """The method documentation lives in docs/; no file refers users to the team's notes outside the
    repository."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [p for folder in ("src", "docs", "benchmarks") for p in (root / folder).rglob("*")
             if p.suffix in (".py", ".md", ".toml", ".sh")] + [root / "README.md"]
    offending = [str(p.relative_to(root)) for p in files if "METHODS.md" in p.read_text(errors="ignore")
                 or "../shared/docs" in p.read_text(errors="ignore")]
    assert offending == []
    methods = (root / "docs" / "methods.md").read_text()
    for heading in ("## Containers", "## Objectives", "## Evaluation protocols", "## Recipes", "## Published numbers"):
        assert heading in methods
    assert (root / "docs" / "reproducing.md").exists()


def test_rtp_runs_as_long_as_the_official_config_and_says_where_that_comes_from():
    """Before: 1000 outer iterations marked "ours". The official config's n_iters is 500,000 (yml L2), with no
    stopping rule in the runner."""
    for name in ("rtp", "bptt_pixels"):
        recipe = get_recipe(name, "cifar10", 1)
        assert recipe.iterations == 500_000
        assert "compressors_bptt_interventions.yml L2" in recipe.sources["iterations"]
