"""HaBa's factorization: hand-counted storage, budget modes, index layout, evaluation draws, the adversary."""
import pytest
import torch
import torch.nn.functional as F

from condensation.artifacts import load_artifact, save_artifact
from condensation.containers import create_container
from condensation.containers.factorization import (default_haba_sizes, haba_floats, hallucinator_floats,
                                                   paper_budget_ratio, supervised_contrastive)
from condensation.data import DataSpec
from condensation.errors import BudgetError, ConfigError

from ..conftest import tiny_real

CIFAR10 = DataSpec(3, 32, 32, 10)
FASHION_MNIST = DataSpec(1, 28, 28, 10)
HALLUCINATOR_PARTS = ("encoder_weight", "encoder_bias", "scale", "shift", "decoder_weight", "decoder_bias")


def _hallucinator_parameters(container) -> int:
    return sum(getattr(container, name).numel() for name in HALLUCINATOR_PARTS)


def test_hallucinator_counts_by_hand():
    # Conv3x3 3->3 (81 + 3) + scale and shift 2 x 3 x 30 x 30 + ConvTranspose3x3 3->3 (81 + 3)
    assert hallucinator_floats(CIFAR10, 3) == 84 + 5400 + 84 == 5568
    # Conv3x3 1->1 (9 + 1) + 2 x 1 x 26 x 26 + ConvTranspose3x3 1->1 (9 + 1)
    assert hallucinator_floats(FASHION_MNIST, 1) == 10 + 1352 + 10 == 1372
    _, pre = tiny_real(DataSpec(3, 32, 32, 10), per_class=1)
    container = create_container("factorization", CIFAR10, 1, pre, budget_mode="paper")
    assert _hallucinator_parameters(container) == 5 * 5568
    assert container.stored_floats() == 10 * 1 * 3 * 32 * 32 + 5 * 5568 == 58_560
    _, pre = tiny_real(DataSpec(1, 28, 28, 10), per_class=1)
    container = create_container("factorization", FASHION_MNIST, 1, pre, budget_mode="paper")
    assert _hallucinator_parameters(container) == 5 * 1372
    assert container.floats_per_part() == {"bases": 7840, "hallucinators": 6860}


def test_paper_mode_ratios_match_the_official_scripts():
    assert paper_budget_ratio(CIFAR10, 1) == pytest.approx(58_560 / 30_720)  # 1.91
    assert paper_budget_ratio(CIFAR10, 10) == pytest.approx(335_040 / 307_200)  # 1.09
    assert paper_budget_ratio(CIFAR10, 50) == pytest.approx(1_563_840 / 1_536_000)  # 1.02
    assert paper_budget_ratio(FASHION_MNIST, 1) == pytest.approx(1.875)


def test_strict_mode_fits_the_budget_and_paper_mode_needs_its_ratio():
    _, pre = tiny_real(DataSpec(1, 28, 28, 10), per_class=1)
    strict = create_container("factorization", FASHION_MNIST, 1, pre)
    # class content first: no full-size basis fits beside any hallucinator, so 14 x 14 bases (d = 2); at most
    # half of B = 3,920 for hallucinators: 2 x 1,372 = 2,744; then 5,096 floats hold two bases per class
    assert (strict.sizes.hallucinators, strict.sizes.bases_per_class, strict.sizes.base_downsample) == (2, 2, 2)
    assert strict.floats_per_part() == {"bases": 10 * 2 * 196, "hallucinators": 2 * 1372}
    assert strict.stored_floats() == 3920 + 2744 <= 7840
    strict.check_budget()
    paper = create_container("factorization", FASHION_MNIST, 1, pre, budget_mode="paper")
    with pytest.raises(BudgetError, match="over its budget"):
        paper.check_budget()
    paper.check_budget(paper.budget_ratio())


@pytest.mark.parametrize("spec, ipc, expected", [
    (CIFAR10, 1, (2, 1, 1, 1)),  # 2 x 5,514 floats, then one full-size single-channel basis per class
    (CIFAR10, 10, (5, 9, 3, 1)), (CIFAR10, 50, (5, 49, 3, 1)), (FASHION_MNIST, 10, (5, 9, 1, 1))])
def test_default_strict_sizes_stay_within_budget(spec, ipc, expected):
    sizes = default_haba_sizes(spec, ipc, "strict")
    bases, hallucinators = haba_floats(spec, sizes)
    assert (sizes.hallucinators, sizes.bases_per_class, sizes.base_channels, sizes.base_downsample) == expected
    assert bases + hallucinators <= spec.budget_floats(ipc) and hallucinators <= spec.budget_floats(ipc) / 2


def test_impossible_or_over_budget_sizes_are_refused(gray_spec):
    _, pre = tiny_real(gray_spec)
    with pytest.raises(BudgetError, match="budget_mode='paper'"):  # 5 x 92 floats of hallucinators > B = 192
        create_container("factorization", gray_spec, 1, pre, hallucinators=5)
    with pytest.raises(BudgetError, match=r"bases_per_class=10, base_downsample=1\) exceed"):
        create_container("factorization", gray_spec, 10, pre, bases_per_class=10, base_downsample=1)
    with pytest.raises(ConfigError, match="hallucinators >= 2"):
        create_container("factorization", gray_spec, 10, pre, hallucinators=1)
    with pytest.raises(ConfigError, match="base_channels"):
        create_container("factorization", gray_spec, 10, pre, base_channels=3)
    with pytest.raises(ConfigError, match="budget_mode"):
        create_container("factorization", gray_spec, 10, pre, budget_mode="loose")


def test_index_layout_and_round_trip(rgb_spec):
    real, pre = tiny_real(rgb_spec)
    container = create_container("factorization", rgb_spec, 5, pre, hallucinators=3, bases_per_class=2, base_downsample=2)
    container.initialize(real, torch.Generator().manual_seed(0))
    assert container.generated_per_class() == 6
    everything = container.generate_all(torch.Generator().manual_seed(5))
    with torch.no_grad():  # class 2, image 5 = hallucinator 5 // nb = 2 on basis 5 % nb = 1
        torch.testing.assert_close(everything.images[2 * 6 + 5], container.hallucinate(container.bases[2, 1:2], 2)[0])
    built = container.construction()
    rebuilt = create_container("factorization", rgb_spec, built["images_per_class"], pre, **built["config"])
    rebuilt.load_state_dict(container.state_dict(), strict=True)
    assert torch.equal(rebuilt.generate_all(torch.Generator().manual_seed(9)).images, everything.images)
    assert built["config"]["base_downsample"] == 2 and built["config"]["budget_mode"] == "strict"


def test_artifact_holds_every_pair_and_no_adversary(gray_spec, tmp_path):
    real, pre = tiny_real(gray_spec)
    container = create_container("factorization", gray_spec, 10, pre)
    generator = torch.Generator().manual_seed(0)
    container.initialize(real, generator)
    container.regularization(generator).backward()
    container.after_optimizer_steps(generator)
    save_artifact(tmp_path / "run", container, {"recipe": "haba"})
    artifact = load_artifact(tmp_path / "run")
    assert artifact.generated_images.shape[0] == 3 * container.generated_per_class()
    assert torch.equal(artifact.container.generate_all(torch.Generator().manual_seed(3)).images, artifact.generated_images)
    assert artifact.metadata["container"]["config"]["budget_mode"] == "strict"
    assert artifact.metadata["storage"]["stored_floats"] == container.stored_floats() <= container.budget_floats


def test_mixed_batches_equal_one_hallucinator_at_a_time(rgb_spec):
    _, pre = tiny_real(rgb_spec)
    container = create_container("factorization", rgb_spec, 5, pre)
    bases = container.bases.flatten(0, 1)
    chosen = torch.arange(len(bases)) % container.sizes.hallucinators
    with torch.no_grad():
        mixed = container.hallucinate(bases, chosen)
        for k in range(container.sizes.hallucinators):
            torch.testing.assert_close(mixed[chosen == k], container.hallucinate(bases[chosen == k], k))


def test_distillation_batches_use_one_random_hallucinator(rgb_spec):
    _, pre = tiny_real(rgb_spec)
    container = create_container("factorization", rgb_spec, 5, pre)
    nb, generator = container.sizes.bases_per_class, torch.Generator().manual_seed(3)
    used = set()
    for _ in range(8):
        with torch.no_grad():
            batch = container.generate_classes([0, 2], None, generator)
            assert batch.labels.tolist() == [0] * nb + [2] * nb  # every basis once
            bases = container.bases[[0, 2]].flatten(0, 1)
            matches = [k for k in range(container.sizes.hallucinators)
                       if torch.allclose(batch.images, container.hallucinate(bases, k))]
        assert len(matches) == 1
        used.add(matches[0])
    assert len(used) > 1


def test_distillation_order_is_every_basis_once_through_one_hallucinator(rgb_spec):
    """What MTT walks in mini-batches: one index per basis, so a batch of them shares one hallucinator."""
    _, pre = tiny_real(rgb_spec)
    container = create_container("factorization", rgb_spec, 5, pre)
    nb, per_class = container.sizes.bases_per_class, container.generated_per_class()
    order = container.distillation_order(torch.Generator().manual_seed(4))
    expected = sorted(c * per_class + b for c in range(rgb_spec.num_classes) for b in range(nb))
    assert sorted(order.tolist()) == expected and order.tolist() != expected  # each basis once, shuffled
    chunk, generator = order[:7], torch.Generator().manual_seed(5)
    classes, basis = chunk // per_class, chunk % per_class
    with torch.no_grad():
        images = container.generate(chunk, generator).images
        matches = [k for k in range(container.sizes.hallucinators)
                   if torch.allclose(images, container.hallucinate(container.bases[classes, basis], k))]
    assert len(matches) == 1
    pixels = create_container("pixels", rgb_spec, 2, pre)  # every other container: every image
    assert sorted(pixels.distillation_order(torch.Generator()).tolist()) == list(range(pixels.total_generated()))


def test_gradients_reach_every_parameter(gray_spec):
    real, pre = tiny_real(gray_spec)
    container = create_container("factorization", gray_spec, 10, pre, hallucinators=2)
    container.initialize(real, torch.Generator().manual_seed(0))
    indices = torch.arange(container.total_generated())
    container.generate(indices, mode="evaluate").images.pow(2).sum().backward()
    for name, parameter in container.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    container.zero_grad(set_to_none=True)
    container.regularization(torch.Generator().manual_seed(0)).backward()  # both hallucinators
    for name, parameter in container.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_the_adversary_is_neither_stored_nor_counted(gray_spec):
    real, pre = tiny_real(gray_spec)
    container = create_container("factorization", gray_spec, 10, pre)
    floats, keys = container.stored_floats(), set(container.state_dict())
    generator = torch.Generator().manual_seed(0)
    container.regularization(generator).backward()
    adversary = container.adversary.network
    assert all(p.grad is None for p in adversary.parameters())  # the container's term never trains it
    before = [p.detach().clone() for p in adversary.parameters()]
    container.after_optimizer_steps(generator)
    assert any(not torch.equal(a, p) for a, p in zip(before, adversary.parameters()))  # it took its own step
    assert container.stored_floats() == floats == sum(container.floats_per_part().values())
    assert set(container.state_dict()) == keys == {"bases", *HALLUCINATOR_PARTS}
    assert not any(p is q for p in container.parameters() for q in adversary.parameters())
    assert "adversary" in container.training_state()
    assert create_container("factorization", gray_spec, 10, pre, adversarial=False).regularization(generator) is None


def test_evaluation_epochs_draw_fresh_hallucinators(rgb_spec):
    real, pre = tiny_real(rgb_spec)
    container = create_container("factorization", rgb_spec, 5, pre)
    container.initialize(real, torch.Generator().manual_seed(0))
    source, generator = container.evaluation_source(), torch.Generator().manual_seed(1)
    first, second = source(generator), source(generator)
    nb = container.sizes.bases_per_class
    assert first.images.shape == (3 * nb, 3, 16, 16) and not first.images.requires_grad
    assert first.labels.tolist() == second.labels.tolist() == sorted([0, 1, 2] * nb)
    assert not torch.equal(first.images, second.images)
    with torch.no_grad():  # every image is its basis through one of the hallucinators
        n_h = container.sizes.hallucinators
        every = torch.stack([container.hallucinate(container.bases.flatten(0, 1), k) for k in range(n_h)])  # (n_h, B, ...)
        assert all(any(torch.allclose(first.images[i], every[k, i]) for k in range(n_h)) for i in range(3 * nb))


def test_single_channel_bases_start_as_the_channel_mean(rgb_spec):
    real, pre = tiny_real(rgb_spec)
    container = create_container("factorization", rgb_spec, 5, pre, base_channels=1)
    assert container.bases.shape[2] == 1 and container.sizes.base_downsample == 1
    container.initialize(real, torch.Generator().manual_seed(0))
    for c in range(3):  # each basis is the channel mean of a preprocessed real image of its class
        means = real.inputs[real.labels == c].mean(dim=1, keepdim=True)
        assert all(any(torch.allclose(b, m) for m in means) for b in container.bases[c])
    assert container.generate_all(torch.Generator().manual_seed(0)).images.shape[1] == 3


def test_64px_images_work():
    spec = DataSpec(3, 64, 64, 2)
    real, pre = tiny_real(spec, per_class=6)
    container = create_container("factorization", spec, 10, pre)
    assert hallucinator_floats(spec, 3) == 84 + 2 * 3 * 62 * 62 + 84
    container.initialize(real, torch.Generator().manual_seed(0))
    container.check_budget()
    generator = torch.Generator().manual_seed(0)
    assert container.generate_all(generator).images.shape == (container.total_generated(), 3, 64, 64)
    assert container.evaluation_source()(generator).images.shape[-2:] == (64, 64)
    container.regularization(generator).backward()  # the adversary is a ConvNet-4 at 64 px
    container.after_optimizer_steps(generator)


def test_supervised_contrastive_matches_its_definition():
    generator = torch.Generator().manual_seed(0)
    first = F.normalize(torch.randn(6, 5, generator=generator))
    second = F.normalize(torch.randn(6, 5, generator=generator))
    labels = torch.tensor([0, 0, 1, 1, 2, 0])
    features, both = torch.cat([first, second]), torch.cat([labels, labels])
    total = 0.0
    for i in range(12):  # loss_i = -mean over positives p of log(exp(z_i.z_p/t) / sum_{a != i} exp(z_i.z_a/t))
        others = [a for a in range(12) if a != i]
        denominator = torch.logsumexp(torch.stack([features[i] @ features[a] / 0.07 for a in others]), 0)
        positives = [p for p in others if both[p] == both[i]]
        total += -sum(features[i] @ features[p] / 0.07 - denominator for p in positives) / len(positives)
    torch.testing.assert_close(supervised_contrastive(first, second, labels, 0.07), total / 12)


def test_hallucinators_take_their_own_learning_rate(gray_spec):
    real, pre = tiny_real(gray_spec)
    container = create_container("factorization", gray_spec, 10, pre, hallucinator_learning_rate=0.01)
    groups = container.parameter_groups(100.0)
    assert [g["lr"] for g in groups] == [100.0, 0.01]
    assert groups[0]["params"] == [container.bases]
    grouped = [id(p) for g in groups for p in g["params"]]  # every parameter in exactly one group
    assert sorted(grouped) == sorted(id(p) for p in container.parameters())
    same = create_container("factorization", gray_spec, 10, pre).parameter_groups(100.0)
    assert [g["lr"] for g in same] == [100.0, 100.0]  # the official lr_style = lr_img
    with pytest.raises(ConfigError, match="hallucinator_learning_rate"):
        create_container("factorization", gray_spec, 10, pre, hallucinator_learning_rate=-1.0)


@pytest.mark.parametrize("ipc", [1, 10, 50])
def test_paper_sizing_has_the_official_scripts_tensor_shapes_on_cifar10(ipc):
    """run_cifar10_ipc{1,10,50}_style5.sh: --ipc K --n_style 5; distill_fac.py: bases (classes, K, 3, 32, 32) and
    5 x StyleTranslator(in 3, mid 3, out 3, kernel 3): enc Conv2d(3, 3, 3), scale and shift (1, 3, 30, 30),
    dec ConvTranspose2d(3, 3, 3) (weight (in, out, 3, 3))."""
    from condensation.data import Preprocessing
    from condensation.data.datasets import published_spec

    container = create_container("factorization", published_spec("cifar10"), ipc, Preprocessing("normalize"),
                                 budget_mode="paper")
    shapes = {name: tuple(p.shape) for name, p in container.named_parameters()}
    assert shapes == {"bases": (10, ipc, 3, 32, 32), "encoder_weight": (5, 3, 3, 3, 3), "encoder_bias": (5, 3),
                      "scale": (5, 3, 30, 30), "shift": (5, 3, 30, 30), "decoder_weight": (5, 3, 3, 3, 3),
                      "decoder_bias": (5, 3)}
    hallucinator = 3 * 3 * 9 + 3 + 2 * 3 * 30 * 30 + 3 * 3 * 9 + 3  # 5,568 floats each
    assert container.stored_floats() == 10 * ipc * 3 * 32 * 32 + 5 * hallucinator
    assert container.declared_budget_ratio == pytest.approx({1: 1.90625, 10: 1.090625, 50: 1.018125}[ipc])
    assert container.budget_statement().startswith(f"{container.declared_budget_ratio:.2f}x B, as the paper: 5 hallucinators")
