import pytest
import torch

from condensation import pruning
from condensation.containers import create_container
from condensation.data import Dataset, Split
from condensation.engine.train import TrainSettings
from condensation.errors import ConfigError
from condensation.evaluation import AccuracySummary
from condensation.pruning import (POST_CONDENSE, PruningConfig, aum_scores, double_end_keep, hmn_after_condense,
                                  margins, prune_to_budget, select_beta)
from condensation.run import RunConfig

from .conftest import tiny_real

SMALL = dict(dataset_channels=2, feature_channels=3, class_channels=1, instance_channels=1, decoder_width=4)


def _over_budget_hmn(spec, over_budget=0.5):
    """IPC 4 on the 8x8 gray fixture: B = 768, shared parts 568, 12 floats per instance row of 3 classes:
    16 instances per class fit B, 48 fit 1.5 x B."""
    real, pre = tiny_real(spec)
    container = create_container("hmn", spec, 4, pre, **SMALL, over_budget=over_budget)
    container.initialize(real, torch.Generator().manual_seed(0))
    return container


def _dataset(spec, per_class=12):
    real, _ = tiny_real(spec, per_class)
    split = Split(real.raw, real.labels)
    return Dataset("tiny", spec, split, Split(real.raw.flip(0), real.labels.flip(0)), split)


def test_double_end_keep_by_hand():
    scores = torch.tensor([0.5, -1.0, 2.0, 0.1, 3.0,  # class 0, ascending: 1, 3, 0, 2, 4
                           1.0, 0.0, -2.0, 5.0, 4.0])  # class 1, ascending: 7, 6, 5, 9, 8
    # keep 2 of 5: k = 3 removed per class
    assert double_end_keep(scores, 5, 2, 0.0).tolist() == [1, 3, 6, 7]  # only the 3 easiest go
    assert double_end_keep(scores, 5, 2, 1.0).tolist() == [2, 4, 8, 9]  # only the 3 hardest go
    assert double_end_keep(scores, 5, 2, 0.5).tolist() == [0, 3, 5, 6]  # floor(1.5) = 1 hardest, 2 easiest
    assert double_end_keep(scores, 5, 5, 0.5).tolist() == list(range(10))
    with pytest.raises(ValueError):
        double_end_keep(scores, 5, 0, 0.5)
    with pytest.raises(ValueError):
        double_end_keep(scores, 5, 2, 1.5)


def test_margins():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]])
    assert margins(logits, torch.tensor([0, 2])).tolist() == [1.0, -2.0]


def test_a_mislabeled_like_image_has_the_lowest_aum(gray_spec):
    # class c images light up row band c; image 2 (labelled 0) carries class 1's band
    generator = torch.Generator().manual_seed(0)
    images = 0.1 * torch.randn(18, 1, 8, 8, generator=generator)
    labels = torch.arange(3).repeat_interleave(6)
    bands = labels.clone()
    bands[2] = 1
    for index, band in enumerate(bands.tolist()):
        images[index, :, 2 * band:2 * band + 3] += 2.0
    _, pre = tiny_real(gray_spec)
    container = create_container("pixels", gray_spec, 6, pre)
    container.set_images(images)
    settings = TrainSettings(epochs=12, batch_size=18, learning_rate=0.01, schedule="constant")
    scores = aum_scores(container, settings, torch.Generator().manual_seed(1), network="convnet_w32")
    assert scores.shape == (18,)
    assert int(scores.argmin()) == 2
    assert float(scores[2]) < 0 < float(torch.cat([scores[:2], scores[3:]]).min())


def test_prune_to_budget_keeps_the_largest_balanced_count(gray_spec):
    container = _over_budget_hmn(gray_spec)
    assert container.generated_per_class() == 48 and container.stored_floats() > container.budget_floats
    scores = torch.randn(container.total_generated(), generator=torch.Generator().manual_seed(0))
    pruned = prune_to_budget(container, scores, 0.25)
    assert pruned.generated_per_class() == 16 == (768 - 568) // 12
    assert pruned.stored_floats() <= pruned.budget_floats < pruned.stored_floats() + 3 * pruned.instance_floats
    pruned.check_budget(1.0)
    keep = double_end_keep(scores, 48, 16, 0.25)
    assert torch.equal(pruned.generate_all().images, container.generate_all().images[keep])
    assert prune_to_budget(pruned, scores[keep], 0.25) is pruned  # already within B


def test_select_beta_uses_the_validation_split_and_shares_equal_prunings(gray_spec, monkeypatch):
    container = _over_budget_hmn(gray_spec, over_budget=0.1)  # (844 - 568) // 12 = 23 per class, 16 fit: k = 7
    dataset = _dataset(gray_spec)
    scores = torch.randn(container.total_generated(), generator=torch.Generator().manual_seed(0))
    seen = []

    def fake_evaluate(pruned, split, protocol, seed, architectures, device):
        assert split is dataset.validation
        seen.append(pruned)
        return {"convnet": AccuracySummary.of([10.0 * len(seen)])}

    monkeypatch.setattr(pruning, "evaluate_container", fake_evaluate)
    selection = select_beta(container, dataset, scores, (0.0, 0.1, 0.25, 0.5, 1.0), "smoke")
    # floor(beta * 7) = 0, 0, 1, 3, 7: four distinct prunings, the last evaluated scores best
    assert len(seen) == 4
    assert selection.accuracies == {0.0: 10.0, 0.1: 10.0, 0.25: 20.0, 0.5: 30.0, 1.0: 40.0}
    assert selection.beta == 1.0
    empty = Dataset("tiny", gray_spec, dataset.train, Split(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)),
                    dataset.test)
    with pytest.raises(ConfigError, match="validation"):
        select_beta(container, empty, scores, (0.0,), "smoke")


def test_after_condense_prunes_to_the_budget_deterministically(gray_spec):
    assert POST_CONDENSE.get("double_end_prune") is hmn_after_condense
    dataset = _dataset(gray_spec)
    config = RunConfig(recipe="hmn", dataset="tiny", ipc=4, seed=3, protocol="smoke")
    settings = PruningConfig(aum_epochs=2, beta_grid=(0.0, 0.5, 1.0), validation_networks=1)
    results = []
    for _ in range(2):
        container = _over_budget_hmn(gray_spec, over_budget=0.1)
        results.append(hmn_after_condense(container, dataset, config, torch.Generator().manual_seed(7), "cpu", settings))
    first, second = results
    assert first.generated_per_class() == 16 and first.stored_floats() <= first.budget_floats
    record = first.construction()["pruning"]
    assert record["beta"] in (0.0, 0.5, 1.0) and record["instances_per_class_before"] == 23
    assert set(record["validation_accuracy"]) == {"0.0", "0.5", "1.0"}
    assert torch.equal(first.generate_all().images, second.generate_all().images)
    assert record == second.construction()["pruning"]


def test_pruning_settings_are_validated():
    assert PruningConfig(beta_grid=[0, 1]).beta_grid == (0.0, 1.0)  # JSON lists become tuples
    with pytest.raises(ConfigError, match="beta_grid"):
        PruningConfig(beta_grid=(0.0, 1.5))
    with pytest.raises(ConfigError, match="aum_epochs"):
        PruningConfig(aum_epochs=-1)
