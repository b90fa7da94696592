"""The deviations a review of the code against the official repositories found (issue: faithful by default).
Each test failed before its fix; the item numbers are the issue's."""
from __future__ import annotations

import pytest
import torch

from condensation.data.augment import DSA, DSAConfig
from condensation.data.datasets import DataSpec
from condensation.engine.experts import ExpertConfig
from condensation.data.augment import make_evaluation_augment
from condensation.evaluation import get_protocol
from condensation.objectives import create_objective
from condensation.recipes import get_recipe
from condensation.errors import ConfigError
from condensation.run import RunConfig, plan_run

DIGITS = DataSpec(1, 8, 8, 3, ("0", "1", "2"), flip_allowed=False)  # a digit dataset: IDC and DSA drop flips


class Recorder(DSA):
    """Records which operations a call applied (each operation returns its input unchanged)."""

    def __init__(self, config, flip_allowed=True):
        super().__init__(config, flip_allowed)
        self.calls = []
        for op in ("color", "crop", "cutout", "flip", "scale", "rotate"):
            setattr(self, f"_{op}", self._recording(op))

    def _recording(self, op):
        def apply(x, generator, n):
            self.calls[-1].append(op)
            return x
        return apply

    def __call__(self, x, generator, shared=False):
        self.calls.append([])
        return super().__call__(x, generator, shared)


# 2 ---------------------------------------------------------------------------------------------------------
def test_idc_protocols_augment_as_idc_train_py():
    """IDC's DiffAug for training: flip (per image), color, then one of crop/scale/rotate drawn per call; no
    cutout when CutMix is on. Before: one operation of six per call, cutout included."""
    for name in ("idc", "hmn"):
        protocol = get_protocol(name)
        assert (protocol.augment_mode, protocol.cutmix_probability) == ("idc", 0.5)
        assert "cutout" not in protocol.augment_strategy
    recorder = Recorder(DSAConfig(strategy=get_protocol("idc").augment_strategy, mode="idc"))
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        recorder(torch.zeros(4, 3, 8, 8), generator)
    assert all(calls[:2] == ["flip", "color"] and len(calls) == 3 and calls[2] in ("crop", "scale", "rotate")
               for calls in recorder.calls)
    assert {calls[2] for calls in recorder.calls} == {"crop", "scale", "rotate"}
    # MNIST and SVHN: no flip (IDC's strategy strings for them have none)
    digits = Recorder(DSAConfig(strategy="color_crop_flip_scale_rotate", mode="idc"), flip_allowed=False)
    digits(torch.zeros(2, 1, 8, 8), generator)
    assert digits.calls[0][0] == "color"


def test_idc_flips_each_image_on_its_own():
    x = torch.arange(2 * 64, dtype=torch.float32).view(2, 1, 8, 8).repeat(32, 1, 1, 1)
    flipped = DSA(DSAConfig(strategy="flip", mode="idc"))(x, torch.Generator().manual_seed(1))
    was_flipped = [bool(torch.equal(flipped[i], x[i].flip(-1))) for i in range(len(x))]
    assert 0 < sum(was_flipped) < len(x)


# 3 ---------------------------------------------------------------------------------------------------------
def test_dc_protocol_on_mnist_augments_each_image_and_trains_1000_epochs():
    """DC's utils.get_daparam: MNIST alone gets crop/scale/rotate, one per image, and 1000 epochs. Before: no
    augmentation and 300 epochs for every dataset."""
    plan = plan_run(RunConfig(recipe="dc", dataset="mnist", ipc=1))
    assert (plan.protocol.augmentation, plan.protocol.epochs) == ("dc_digits", 1000)
    assert plan_run(RunConfig(recipe="dc", dataset="fashion_mnist", ipc=1)).protocol.augmentation == "none"
    augment = make_evaluation_augment("dc_digits", "single", False)
    assert augment.operations == ("crop", "scale", "rotate") and augment.config.mode == "each"
    assert (augment.config.scale_low, augment.config.scale_ratio, augment.config.rotate_degrees) == (0.8, 1.2, 45.0)
    recorder = Recorder(augment.config)
    marks = {"crop": 1.0, "scale": 10.0, "rotate": 100.0}
    for op, mark in marks.items():
        setattr(recorder, f"_{op}", lambda x, g, n, mark=mark: x + mark)
    out = recorder(torch.zeros(300, 1, 4, 4), torch.Generator().manual_seed(2))
    per_image = out.flatten(1)[:, 0]
    assert set(per_image.tolist()) == set(marks.values())  # every image got exactly one, and all three occur


# 4 ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe,flips_on_digits", [("dc", None), ("dsa", False), ("dm", True), ("idc", False),
                                                    ("mtt", True), ("echo", False), ("rtp", None)])
def test_condensation_flips_follow_each_papers_code(recipe, flips_on_digits):
    """DC/DM/MTT's strategy strings flip for every dataset; the DSA README and IDC drop flips for digits.
    Before: every objective followed IDC's rule."""
    resolved = get_recipe(recipe, "mnist", 1)
    settings = {**resolved.objective_settings, "experts": "unused"} if resolved.objective == "mtt" else \
        dict(resolved.objective_settings)
    objective = create_objective(resolved.objective, DIGITS, **settings) if resolved.objective != "mtt" else None
    if objective is None:  # MTT checks its experts when it is built; its flips are a config value
        assert settings["flip_rule"] == "always"
        return
    augment = getattr(objective, "augment", None)
    if flips_on_digits is None:
        assert augment is None  # DC and RTP do not augment while condensing
    else:
        assert ("flip" in augment.operations) == flips_on_digits or (
            "flip" not in augment.config.operations and not flips_on_digits)


def test_protocol_flips_follow_each_paper():
    assert get_protocol("dsa").flip_rule == "always"  # DM's evaluation (its README command)
    assert plan_run(RunConfig(recipe="dsa", dataset="mnist", ipc=1)).protocol.flip_rule == "dataset"  # DSA README
    assert plan_run(RunConfig(recipe="dm", dataset="mnist", ipc=1)).protocol.flip_rule == "always"
    assert get_protocol("mtt").flip_rule == "always" and get_protocol("idc").flip_rule == "dataset"
    assert ExpertConfig().flip_rule == "always"  # MTT buffer.py


# 11 --------------------------------------------------------------------------------------------------------
def test_rtp_evaluates_as_its_inner_loop_trains():
    """RTP's evaluator trains as its inner loop did: no augmentation (the README's 'none'), no weight decay,
    constant lr, 300 epochs at batch 640, 10 networks. Before: DSA and weight decay 5e-4."""
    protocol = get_protocol("rtp")
    assert (protocol.augmentation, protocol.weight_decay, protocol.schedule) == ("none", 0.0, "constant")
    assert (protocol.epochs, protocol.batch_size, protocol.networks, protocol.learning_rate) == (300, 640, 10, 0.01)
    inner = get_recipe("rtp", "cifar10", 1).objective_settings
    assert (inner["dsa"], inner["inner_weight_decay"]) == (False, 0.0)
    objective = create_objective("bptt", DIGITS, dsa=True, inner_weight_decay=5e-4)  # both are settings
    assert objective.augment is not None and objective.config.inner_weight_decay == 5e-4


# 9 ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("objective_name", ["idc", "mtt_like_one_group"])
def test_habas_adversary_runs_once_per_iteration_over_every_class(objective_name, monkeypatch):
    """distill_fac.py: the contrastive term over all classes' bases joins the iteration's step; then the
    adversary takes one step on a fresh hallucinator pair. Before: both ran once per class group, so with
    per-class objectives they saw one label (degenerate CE and SupCon)."""
    from condensation.containers import create_container
    from condensation.containers.factorization import Adversary, Factorization
    from condensation.engine.condense import ContainerOptimizer, LoopConfig, OptimizerConfig, condense
    from tests.conftest import tiny_real

    real, preprocessing = tiny_real(DIGITS)
    container = create_container("factorization", DIGITS, 10, preprocessing)
    container.initialize(real, torch.Generator().manual_seed(0))
    if objective_name == "idc":
        objective = create_objective("idc", DIGITS, real_per_class=6, synthetic_per_class=4, real_training_images=12,
                                     network="convnet_w32")
    else:  # an objective that steps all classes at once (as MTT does)
        objective = create_objective("dm", DIGITS, real_per_class=6, network="convnet_w32")
    events = []
    original_views, original_step, original_optimizer_step = (Factorization._two_views, Adversary.step,
                                                              ContainerOptimizer.step)

    def views(self, generator):
        out = original_views(self, generator)
        events.append(("views", torch.is_grad_enabled(), out[0].detach().clone()))
        return out

    def adversary_step(self, views, labels):
        events.append(("adversary", sorted(set(labels.tolist()))))
        return original_step(self, views, labels)

    def optimizer_step(self, classes):
        events.append(("container", list(classes)))
        return original_optimizer_step(self, classes)

    monkeypatch.setattr(Factorization, "_two_views", views)
    monkeypatch.setattr(Adversary, "step", adversary_step)
    monkeypatch.setattr(ContainerOptimizer, "step", optimizer_step)
    condense(container, objective, real, OptimizerConfig("sgd", 1e-3, 0.5), LoopConfig(2, 0),
             torch.Generator().manual_seed(1), progress=False)
    kinds = [e[0] for e in events]
    if objective_name == "idc":  # 3 class steps, then the regularizer's own step over every class
        per_iteration = ["container"] * 3 + ["views", "container", "views", "adversary"]
        assert [e[1] for e in events if e[0] == "container"][:4] == [[0], [1], [2], [0, 1, 2]]
    else:
        per_iteration = ["views", "container", "views", "adversary"]
    assert kinds == per_iteration * 2
    assert all(e[1] == [0, 1, 2] for e in events if e[0] == "adversary")
    views_events = [e for e in events if e[0] == "views"]
    container_views, adversary_views = views_events[0], views_events[1]
    assert container_views[1] and not adversary_views[1]  # the container's term has a graph, the adversary's not
    assert not torch.equal(container_views[2], adversary_views[2])  # fresh draw for the adversary


# 8 ---------------------------------------------------------------------------------------------------------
def test_habas_strict_sizing_keeps_class_content_and_results_report_the_split(tmp_path):
    """Before: 5 hallucinators first, leaving Fashion-MNIST IPC 1 two 7 x 7 bases per class (87.5% of B on
    hallucinators). Now the richest basis that fits beside at most B/2 of hallucinators."""
    from condensation.containers.factorization import default_haba_sizes, haba_floats
    from condensation.run import distill

    fashion = DataSpec(1, 28, 28, 10)
    sizes = default_haba_sizes(fashion, 1, "strict")
    bases, hallucinators = haba_floats(fashion, sizes)
    assert (sizes.hallucinators, sizes.bases_per_class, sizes.base_downsample) == (2, 2, 2)
    assert bases / 7840 == 0.5 and hallucinators / 7840 == pytest.approx(0.35)
    results = distill(RunConfig(recipe="dm", container="factorization", container_settings={"adversarial": False},
                                dataset="digits", ipc=2, iterations=1, protocol="smoke", out=str(tmp_path / "run"),
                                progress=False, evaluate=False))
    split = results["stored_floats_by_part"]
    assert set(split) == {"bases", "hallucinators"} and sum(split.values()) == results["stored_floats"]


# 7 ---------------------------------------------------------------------------------------------------------
def test_aum_trains_as_long_as_the_validation_protocol(monkeypatch):
    """Before: 50 epochs at batch 256 whatever the protocol (50 SGD steps for 130 images). Now the protocol's
    own training (steps or epochs, batch, lr, schedule), margins recorded after every epoch; a setting."""
    from condensation import pruning
    from condensation.containers import create_container
    from tests.conftest import tiny_real

    real, preprocessing = tiny_real(DIGITS)
    container = create_container("hmn", DIGITS, 4, preprocessing, dataset_channels=2, feature_channels=3,
                                 class_channels=1, instance_channels=1, decoder_width=4, over_budget=0.5)
    container.initialize(real, torch.Generator().manual_seed(0))
    seen = {}

    def spy(container, settings, generator, device="cpu", network="convnet", augment=None):
        seen["settings"], seen["augment"] = settings, augment
        return torch.zeros(container.total_generated())

    monkeypatch.setattr(pruning, "aum_scores", spy)
    protocol = get_protocol("cpu")
    pruning.score_container(container, pruning.PruningConfig(), protocol, torch.Generator(), "cpu")
    settings = seen["settings"]
    assert (settings.steps, settings.batch_size, settings.learning_rate, settings.schedule) == (200, 128, 0.01, "step_half")
    assert settings.cutmix_probability == 0.0 and seen["augment"] is not None
    hmn = get_protocol("hmn", epochs=7)
    pruning.score_container(container, pruning.PruningConfig(), hmn, torch.Generator(), "cpu")
    assert (seen["settings"].epochs, seen["settings"].batch_size, seen["settings"].schedule) == (7, 64, "cosine")
    assert seen["augment"].config.mode == "idc"  # the protocol's own augmentation
    pruning.score_container(container, pruning.PruningConfig(aum_epochs=3), protocol, torch.Generator(), "cpu")
    assert (seen["settings"].epochs, seen["settings"].steps) == (3, 0)


def test_aum_averages_one_margin_per_epoch_of_the_run():
    from condensation.containers import create_container
    from condensation.engine.train import TrainSettings
    from condensation.pruning import aum_scores
    from tests.conftest import tiny_real

    real, preprocessing = tiny_real(DIGITS)
    container = create_container("pixels", DIGITS, 5, preprocessing)
    container.initialize(real, torch.Generator().manual_seed(0))
    calls = []
    import condensation.pruning as pruning_module
    original = pruning_module.margins
    pruning_module.margins = lambda logits, labels: calls.append(len(labels)) or original(logits, labels)
    try:  # 15 images, batch 4 with a 12-step budget: 3 full batches per epoch -> 4 epochs
        aum_scores(container, TrainSettings(steps=12, batch_size=4), torch.Generator().manual_seed(0),
                   network="convnet_w32")
    finally:
        pruning_module.margins = original
    assert calls == [15] * 4


def test_every_container_reports_where_its_floats_go():
    from condensation.containers import CONTAINERS, create_container
    from tests.conftest import tiny_real

    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    _, preprocessing = tiny_real(spec)
    for name in CONTAINERS.names():
        container = create_container(name, spec, 4, preprocessing)
        parts = container.floats_per_part()
        assert sum(parts.values()) == container.stored_floats(), name
    hmn = create_container("hmn", spec, 4, preprocessing)
    assert set(hmn.floats_per_part()) == {"dataset memory", "class extractors", "class memories", "instance memories",
                                          "decoder"}


# issue 22 item 1 -----------------------------------------------------------------------------------------------
def test_the_haba_recipe_takes_the_official_sizing_and_every_result_states_the_ratio(tmp_path, capsys):
    """Before: the recipe sized strictly (2 hallucinators, one 1-channel basis per class at CIFAR-10 IPC 1), and
    a paper-sized run needed budget_ratio in a config file. Now the recipe is the scripts' 5 hallucinators x IPC
    full bases, and a run allows the declared ratio and states it (results.json, the printed table)."""
    from condensation.cli import format_results_table, main
    from condensation.recipes import get_recipe
    from condensation.run import distill

    assert get_recipe("haba", "cifar10", 1).container_settings["budget_mode"] == "paper"
    assert main(["show-recipe", "haba", "--dataset", "cifar10", "--ipc", "1"]) == 0
    shown = capsys.readouterr().out
    assert "58,560 floats = 1.91x B (B = 30,720 for IPC 1; bases 30,720, hallucinators 27,840)" in shown
    assert "1.91x B, as the paper: 5 hallucinators and 1 basis(es) of 3x32x32 per class" in shown
    results = distill(RunConfig(recipe="dm", container="factorization", dataset="digits", ipc=1, iterations=1,
                                container_settings={"adversarial": False, "budget_mode": "paper"}, protocol="smoke",
                                out=str(tmp_path / "run"), progress=False, evaluate=False))
    # digits 8 x 8: 5 x (9 + 1 + 2 x 36 + 9 + 1) = 460 hallucinator floats beside 640 of bases
    assert results["stored_floats"] == 640 + 460 and results["budget_ratio"] == pytest.approx(1100 / 640)
    assert results["budget_statement"].startswith("1.72x B, as the paper")
    assert "stores 1.72x B, as the paper" in format_results_table([results])
    strict = distill(RunConfig(recipe="dm", container="factorization", dataset="digits", ipc=1, iterations=1,
                               container_settings={"adversarial": False}, protocol="smoke",
                               out=str(tmp_path / "strict"), progress=False, evaluate=False))
    assert strict["budget_statement"] is None and strict["stored_floats"] <= 640


# issue 22 item 2 -----------------------------------------------------------------------------------------------
def test_paper_reporting_gives_the_best_of_the_papers_evaluation_points_beside_the_final_set(tmp_path):
    """Before: only the final set was evaluated. Now --report paper evaluates at the paper's points (MTT: every
    100 iterations from 0, the last included) and reports their maximum, labelled as selected on the test set,
    with the final set's accuracy beside it."""
    from condensation.cli import format_results_table
    from condensation.data import load_dataset
    from condensation.engine.experts import ExpertConfig, train_experts
    from condensation.run import _paper_evaluates_at, distill

    experts = tmp_path / "experts"
    train_experts(load_dataset("digits"), ExpertConfig(network_settings={"width": 32}, experts=1, epochs=2,
                                                       batch_size=64, preprocessing="normalize", real_images=300),
                  experts, torch.Generator().manual_seed(0), progress=False)
    config = RunConfig(recipe="mtt", dataset="digits", ipc=1, iterations=101, preprocessing="normalize",
                       objective_settings={"experts": str(experts), "syn_steps": 2, "expert_epochs": 1,
                                           "max_start_epoch": 1},
                       protocol="smoke", out=str(tmp_path / "run"), progress=False, report="paper")
    results = distill(config)
    paper = results["paper_report"]
    assert [row["iteration"] for row in paper["evaluations"]] == [0, 100, 101]  # 101: the final set
    final = results["accuracy"]["convnet"]["mean"]
    assert paper["evaluations"][-1]["mean"] == pytest.approx(final, abs=1e-4)
    assert paper["mean"] == pytest.approx(max(row["mean"] for row in paper["evaluations"]), abs=1e-4)
    assert "test set" in paper["selected_on"] and "distill.py" in paper["source"]
    assert "SELECTED ON THE TEST SET" in format_results_table([results])
    # HaBa: every 100 iterations within the last 10% only
    haba = {"every": 100, "window": 0.1}
    assert [i for i in range(0, 1001) if _paper_evaluates_at(haba, i, i / 1000)] == [900, 1000]
    with pytest.raises(ConfigError, match="reports its final set"):
        distill(RunConfig(recipe="dm", dataset="digits", report="paper", out=str(tmp_path / "dm")))


# issue 22 item 5 -----------------------------------------------------------------------------------------------
def test_habas_adversary_flips_its_views_on_digit_datasets_as_distill_fac_does():
    """Before: the adversary's DSA dropped flips where the dataset forbids them (digits). distill_fac.py augments
    its views with args.dsa_strategy, flips included, on every dataset; "dataset" is the named alternative."""
    from condensation.containers.factorization import Adversary, FactorizationConfig

    assert not DIGITS.flip_allowed
    official = Adversary(DIGITS, FactorizationConfig(), torch.Generator().manual_seed(0), "cpu")
    assert "flip" in official.augment.operations
    per_dataset = Adversary(DIGITS, FactorizationConfig(adversary_flip_rule="dataset"), torch.Generator().manual_seed(0), "cpu")
    assert "flip" not in per_dataset.augment.operations


def test_idcs_mosaic_start_shrinks_real_images_by_nearest_neighbour_as_condense_py_does():
    """Before: bilinear with antialiasing. IDC condense.py L80: F.interpolate(img, size) with no mode: nearest."""
    import torch.nn.functional as F

    from condensation.containers import create_container
    from tests.conftest import tiny_real

    spec = DataSpec(1, 8, 8, 3, ("0", "1", "2"))
    real, preprocessing = tiny_real(spec)
    container = create_container("multi_formation", spec, 1, preprocessing, factor=2)
    container.initialize(real, torch.Generator().manual_seed(3))
    chosen = real.sample_raw(0, 4, torch.Generator().manual_seed(3), replace_if_short=True)
    tiles = F.interpolate(chosen, size=(4, 4), mode="nearest")  # (4, 1, 4, 4): every other pixel
    torch.testing.assert_close(tiles, chosen[:, :, ::2, ::2])
    stored = container.pixels[0]  # (1, 8, 8): the four tiles in a 2 x 2 mosaic
    torch.testing.assert_close(stored[:, :4, :4], tiles[0].clamp(0, 1))
    torch.testing.assert_close(stored[:, 4:, 4:], tiles[3].clamp(0, 1))


def test_idc_clamps_its_pixels_once_per_100_engine_iterations_and_a_resume_keeps_the_count():
    """Before: after every engine iteration. IDC condense.py L521 clamps once per outer iteration of 100 passes."""
    from condensation.containers import create_container
    from tests.conftest import tiny_real

    assert get_recipe("idc", "fashion_mnist", 1).container_settings["clamp_every"] == 100
    spec = DataSpec(1, 8, 8, 3, ("0", "1", "2"))
    real, preprocessing = tiny_real(spec)
    container = create_container("multi_formation", spec, 1, preprocessing, clamp_every=3)
    with torch.no_grad():
        container.pixels.fill_(1.5)
    container.after_iteration()
    container.after_iteration()
    assert float(container.pixels.detach().max()) == 1.5  # not yet
    resumed = create_container("multi_formation", spec, 1, preprocessing, clamp_every=3)
    resumed.load_state_dict(container.state_dict())
    resumed.load_training_state(container.training_state())
    for box in (container, resumed):
        box.after_iteration()
        assert float(box.pixels.detach().max()) == 1.0  # the third iteration clamps, resumed or not
