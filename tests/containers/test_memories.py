"""RTP's addressable memories: budget arithmetic, decoding, queries, initializations, engine runs."""
import pytest
import torch
import torch.nn.functional as F

from condensation.artifacts import load_artifact, save_artifact
from condensation.containers import create_container
from condensation.containers.memories import memories_images_per_class
from condensation.data import DataSpec, Preprocessing, Split
from condensation.engine.real import RealPool
from condensation.errors import BudgetError, ConfigError

from ..conftest import tiny_real

CIFAR10 = DataSpec(3, 32, 32, 10)
FASHION_MNIST = DataSpec(1, 28, 28, 10)


def test_cifar10_ipc1_worked_example():
    _, pre = tiny_real(DataSpec(3, 32, 32, 10), per_class=1)
    container = create_container("memories", CIFAR10, 1, pre, bases=16, downsample=2)
    # r = floor((30,720 - 16 x 3 x 16 x 16) / (10 x 16)) = floor(18,432 / 160) = 115
    assert container.generated_per_class() == 115
    assert container.stored_floats() == 16 * 3 * 16 * 16 + 10 * 115 * 16 == 30_688
    assert container.budget_floats == 30_720
    assert tuple(container.memories.shape) == (16, 768) and tuple(container.coefficients.shape) == (1150, 16)
    container.check_budget()


@pytest.mark.parametrize("spec, ipc, bases, downsample, expected", [
    (CIFAR10, 1, 16, 2, 115), (CIFAR10, 10, 16, 2, 1843), (FASHION_MNIST, 1, 16, 2, 29),
    (FASHION_MNIST, 10, 16, 2, 470), (FASHION_MNIST, 1, 8, 4, (7840 - 8 * 49) // 80),
])
def test_images_per_class_formula(spec, ipc, bases, downsample, expected):
    memory = bases * spec.channels * (spec.height // downsample) * (spec.width // downsample)
    assert memories_images_per_class(spec, ipc, bases, downsample) == expected
    assert expected == (spec.budget_floats(ipc) - memory) // (spec.num_classes * bases)


def test_impossible_budgets_are_refused_by_name():
    _, pre = tiny_real(DataSpec(1, 28, 28, 10), per_class=1)
    with pytest.raises(BudgetError, match=r"bases=16 and downsample=1.*7,840"):
        create_container("memories", FASHION_MNIST, 1, pre, bases=16, downsample=1)  # 12,544 floats of memory alone
    with pytest.raises(ConfigError, match="divide"):
        create_container("memories", FASHION_MNIST, 1, pre, downsample=3)
    with pytest.raises(ConfigError, match="init"):
        create_container("memories", FASHION_MNIST, 1, pre, init="kmeans")
    over = create_container("memories", FASHION_MNIST, 1, pre, images_per_class_override=40)  # 3,136 + 6,400 > B
    with pytest.raises(BudgetError, match="over its budget"):
        over.check_budget()


def test_image_is_the_upsampled_linear_combination(rgb_spec):
    _, pre = tiny_real(rgb_spec)
    container = create_container("memories", rgb_spec, 2, pre, bases=4, downsample=2)
    r = container.generated_per_class()
    c, i = 2, r - 1
    image = container.generate(torch.tensor([c * r + i])).images
    low = (container.coefficients[c * r + i] @ container.memories).view(1, 3, 8, 8)
    expected = F.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(image, expected)
    assert container.generate(torch.tensor([c * r + i])).labels.tolist() == [c]


def test_round_trip_rebuilds_the_same_images(rgb_spec):
    real, pre = tiny_real(rgb_spec)
    container = create_container("memories", rgb_spec, 2, pre, bases=4, init="pca")
    container.initialize(real, torch.Generator().manual_seed(1))
    built = container.construction()
    assert built["config"]["images_per_class_override"] == container.generated_per_class()
    rebuilt = create_container("memories", rgb_spec, built["images_per_class"], pre, **built["config"])
    rebuilt.load_state_dict(container.state_dict(), strict=True)
    assert torch.equal(rebuilt.generate_all().images, container.generate_all().images)


def test_artifact_round_trip(rgb_spec, tmp_path):
    real, pre = tiny_real(rgb_spec)
    container = create_container("memories", rgb_spec, 2, pre, bases=4)
    container.initialize(real, torch.Generator().manual_seed(1))
    save_artifact(tmp_path / "run", container, {"recipe": "rtp"})
    artifact = load_artifact(tmp_path / "run")
    assert torch.equal(artifact.container.generate_all().images, artifact.generated_images)
    assert torch.equal(artifact.generated_images, container.generate_all().images)


def test_gradient_reaches_every_parameter(gray_spec):
    _, pre = tiny_real(gray_spec)
    container = create_container("memories", gray_spec, 2, pre)
    container.generate(torch.arange(container.total_generated())).images.pow(2).sum().backward()
    for name, parameter in container.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_queries_mix_addresses(rgb_spec):
    _, pre = tiny_real(rgb_spec)
    container = create_container("memories", rgb_spec, 2, pre, bases=4)
    r = container.generated_per_class()
    with torch.no_grad():
        images = container.generate_all().images.view(3, r, 3, 16, 16)
        one_hot = F.one_hot(torch.full((r,), 1), 3).float()
        torch.testing.assert_close(container.query(one_hot, torch.arange(r)), images[1])  # the class's own images
        mixture = torch.tensor([[0.25, 0.0, 0.75]])
        torch.testing.assert_close(container.query(mixture, torch.tensor([2])),
                                   0.25 * images[0, 2:3] + 0.75 * images[2, 2:3])
        # without slots: every slot, as Container.query (tests/test_query.py covers that interface)
        torch.testing.assert_close(container.query(mixture), (0.25 * images[0] + 0.75 * images[2]).unsqueeze(0),
                                   atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="slots"):
        container.query(one_hot, torch.full((r,), r))


def structured_real(spec: DataSpec, per_class: int = 30) -> tuple[RealPool, Preprocessing]:
    """Images that, like real ones, have few dominant directions: smooth patterns mixed at random."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.rand(6, spec.channels, spec.height // 4, spec.width // 4, generator=generator) - 0.5
    patterns = F.interpolate(patterns, size=(spec.height, spec.width), mode="bilinear", align_corners=False)
    weights = torch.randn(spec.num_classes * per_class, 6, generator=generator)
    images = (0.5 + 0.3 * torch.einsum("nk,kchw->nchw", weights, patterns)).clamp(0, 1)
    labels = torch.arange(spec.num_classes).repeat_interleave(per_class)
    preprocessing = Preprocessing("normalize").fit(images)
    return RealPool(Split(images, labels), spec.num_classes, preprocessing), preprocessing


def test_pca_start_reconstructs_real_images_better_than_xavier(rgb_spec):
    real, pre = structured_real(rgb_spec)

    def error(init: str) -> float:
        container = create_container("memories", rgb_spec, 2, pre, bases=8, init=init)
        container.initialize(real, torch.Generator().manual_seed(0))
        with torch.no_grad():
            generated = container.generate_all()
            errors = []
            for c in range(3):  # each generated image against its nearest real image of the class
                distances = torch.cdist(generated.images[generated.labels == c].flatten(1),
                                        real.inputs[real.labels == c].flatten(1))
                errors.append(distances.min(dim=1).values.pow(2).mean() / real.inputs[0].numel())
        return float(torch.stack(errors).mean())

    pca, xavier = error("pca"), error("xavier")
    assert pca < 0.5 * xavier, (pca, xavier)


def test_pca_decoded_memories_are_orthonormal(gray_spec):
    real, pre = tiny_real(gray_spec, per_class=20)
    container = create_container("memories", gray_spec, 4, pre, bases=6)
    memories, _ = container._pca_start(real, torch.Generator().manual_seed(0))
    decoded = F.interpolate(memories.view(6, 1, 4, 4), size=(8, 8), mode="bilinear", align_corners=False).flatten(1)
    gram = decoded @ decoded.T
    gram = gram / gram.diagonal().mean()  # the balancing rescales all memories by one factor
    torch.testing.assert_close(gram, torch.eye(6), atol=1e-4, rtol=0)


def test_64px_images_work():
    spec = DataSpec(3, 64, 64, 2)
    real, pre = tiny_real(spec, per_class=4)
    container = create_container("memories", spec, 1, pre, bases=8, downsample=4, init="pca")
    container.initialize(real, torch.Generator().manual_seed(0))
    assert container.stored_floats() <= container.budget_floats
    assert container.generate_all().images.shape == (container.total_generated(), 3, 64, 64)


# ------------------------------------------------------------------------------------------ reused memories
def test_reused_memories_cost_only_their_address_entries():
    spec = DataSpec(1, 28, 28, 2)  # a 2-class task of Fashion-MNIST at IPC 1: B = 1,568
    _, pre = tiny_real(spec, per_class=1)
    # 4 new memories of 14 x 14 (784 floats) + addresses over 4 reused and 4 new: r = (1,568 - 784) // (2 x 8) = 49
    container = create_container("memories", spec, 1, pre, bases=4, reused_bases=4, reuse_from="elsewhere")
    assert container.generated_per_class() == 49 == memories_images_per_class(spec, 1, 4, 2, reused_bases=4)
    assert tuple(container.coefficients.shape) == (98, 8) and tuple(container.reused_memories.shape) == (4, 196)
    assert container.stored_floats() == 784 + 98 * 8 == 1_568  # the reused 784 floats are their owner's
    assert container.floats_per_part() == {"memories": 784, "addresses": 784}
    assert "reused_memories" not in dict(container.named_parameters())  # a buffer: never trained
    assert "reused_memories" in container.state_dict()  # but saved: the container regenerates alone
    # addresses alone over 12 reused memories: r = 1,568 // (2 x 12) = 65
    alone = create_container("memories", spec, 1, pre, bases=0, reused_bases=12, reuse_from="elsewhere")
    assert alone.generated_per_class() == 65 and alone.stored_floats() == 2 * 65 * 12
    with pytest.raises(BudgetError, match=r"bases=4 \(\+ 400 reused\)"):
        create_container("memories", spec, 1, pre, bases=4, reused_bases=400, reuse_from="elsewhere")


def test_reused_memories_settings_are_checked(gray_spec, tmp_path):
    real, pre = tiny_real(gray_spec)
    with pytest.raises(ConfigError, match="go together"):
        create_container("memories", gray_spec, 2, pre, bases=2, reused_bases=2)
    with pytest.raises(ConfigError, match="at least one memory"):
        create_container("memories", gray_spec, 2, pre, bases=0)
    missing = create_container("memories", gray_spec, 2, pre, bases=2, reused_bases=2, reuse_from=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="is not a container.safetensors"):
        missing.initialize(real, torch.Generator().manual_seed(0))
    owner = create_container("memories", gray_spec, 2, pre, bases=3)
    save_artifact(tmp_path / "owner", owner, {"recipe": "rtp"})
    wrong = create_container("memories", gray_spec, 2, pre, bases=2, reused_bases=2, reuse_from=str(tmp_path / "owner"))
    with pytest.raises(ConfigError, match="holds 3 memories of 16 floats; this container reuses 2 of 16"):
        wrong.initialize(real, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("init", ["xavier", "pca"])
def test_a_chain_of_reuse_regenerates_from_its_own_artifact(rgb_spec, tmp_path, init):
    """Task 1 stores 4 memories; task 2 reuses them and adds 2; task 3 addresses all 6 and stores none."""
    real, pre = structured_real(rgb_spec)
    first = create_container("memories", rgb_spec, 2, pre, bases=4, init=init)
    first.initialize(real, torch.Generator().manual_seed(0))
    save_artifact(tmp_path / "task-1", first, {"recipe": "rtp"})
    second = create_container("memories", rgb_spec, 2, pre, bases=2, reused_bases=4, init=init,
                              reuse_from=str(tmp_path / "task-1" / "container.safetensors"))
    second.initialize(real, torch.Generator().manual_seed(1))
    assert torch.equal(second.reused_memories, first.memories.detach())  # read exactly, not re-learned
    # decoding: the address over [reused; own] memories, upsampled
    low = (second.coefficients[5] @ torch.cat([first.memories, second.memories])).view(1, 3, 8, 8)
    torch.testing.assert_close(second.generate(torch.tensor([5])).images,
                               F.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False))
    second.generate(torch.arange(second.total_generated())).images.pow(2).sum().backward()  # own parameters only
    assert second.memories.grad.abs().sum() > 0 and second.coefficients.grad.abs().sum() > 0
    assert second.reused_memories.grad is None and not second.reused_memories.requires_grad
    save_artifact(tmp_path / "task-2", second, {"recipe": "rtp"})
    third = create_container("memories", rgb_spec, 2, pre, bases=0, reused_bases=6, init=init,
                             reuse_from=str(tmp_path / "task-2"))
    third.initialize(real, torch.Generator().manual_seed(2))
    assert torch.equal(third.reused_memories, torch.cat([first.memories, second.memories]).detach())
    assert third.stored_floats() == third.coefficients.numel() == 3 * third.generated_per_class() * 6
    save_artifact(tmp_path / "task-3", third, {"recipe": "rtp"})
    expected = {name: c.generate_all().images.detach() for name, c in (("task-2", second), ("task-3", third))}
    (tmp_path / "task-1" / "container.safetensors").unlink()  # what each artifact reuses is saved inside it
    for name, images in expected.items():
        artifact = load_artifact(tmp_path / name)
        assert torch.equal(artifact.container.generate_all().images, images)


def test_pca_start_adds_directions_the_reused_memories_do_not_span(rgb_spec, tmp_path):
    real, pre = structured_real(rgb_spec)
    first = create_container("memories", rgb_spec, 2, pre, bases=3, init="pca")
    first.initialize(real, torch.Generator().manual_seed(0))
    save_artifact(tmp_path / "task-1", first, {"recipe": "rtp"})
    second = create_container("memories", rgb_spec, 2, pre, bases=3, reused_bases=3, init="pca",
                              reuse_from=str(tmp_path / "task-1"))
    second.initialize(real, torch.Generator().manual_seed(0))

    def decoded(memories):
        return F.interpolate(memories.detach().view(-1, 3, 8, 8), size=(16, 16), mode="bilinear",
                             align_corners=False).flatten(1)

    old, new = decoded(first.memories), decoded(second.memories)
    cross = (new @ old.T) / (new.norm(dim=1, keepdim=True) * old.norm(dim=1))
    assert cross.abs().max() < 1e-4  # the new memories lie outside what task 1's memories span
    # and the 6 memories together reconstruct real images better than the 3 reused alone
    alone = create_container("memories", rgb_spec, 2, pre, bases=0, reused_bases=3, init="pca",
                             reuse_from=str(tmp_path / "task-1"))
    alone.initialize(real, torch.Generator().manual_seed(0))

    def error(container) -> float:
        with torch.no_grad():
            generated = container.generate_all()
            return float(torch.stack([torch.cdist(generated.images[generated.labels == c].flatten(1),
                                                  real.inputs[real.labels == c].flatten(1)).min(dim=1).values.mean()
                                      for c in range(3)]).mean())

    assert error(second) < error(alone)
