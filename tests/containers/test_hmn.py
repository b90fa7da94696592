import pytest
import torch

from condensation.containers import CONTAINERS, create_container
from condensation.containers.hmn import HMN, default_hmn_sizes, memory_layout
from condensation.data import DataSpec, Preprocessing, Split
from condensation.engine.real import RealPool
from condensation.engine.condense import LoopConfig, OptimizerConfig, condense
from condensation.errors import BudgetError, ConfigError
from condensation.objectives import OBJECTIVES, create_objective

from ..conftest import tiny_real

# a small explicit layout on the 8x8 gray fixture: h = 2 (k = 2), C_D 2, C_F 3, C_C 1, C_I 1, width 4
SMALL = dict(dataset_channels=2, feature_channels=3, class_channels=1, instance_channels=1, decoder_width=4)


def _fitted(spec: DataSpec) -> Preprocessing:
    return Preprocessing("normalize").fit(torch.rand(4, spec.channels, spec.height, spec.width))


def _small(spec, ipc=4, **overrides):
    real, pre = tiny_real(spec)
    container = create_container("hmn", spec, ipc, pre, **{**SMALL, **overrides})
    container.initialize(real, torch.Generator().manual_seed(0))
    return container, real


def test_registered_and_memory_sizes_follow_the_image_size():
    assert "hmn" in CONTAINERS.names()
    for size, expected in ((32, (4, 3)), (28, (7, 2)), (64, (8, 3)), (8, (2, 2)), (16, (2, 3))):
        height, width, stages = memory_layout(DataSpec(3, size, size, 10))
        assert (height, stages) == expected and width == height
    with pytest.raises(ConfigError, match="memory_size"):
        memory_layout(DataSpec(1, 28, 28, 10), memory_size=5)


def test_stored_floats_equal_a_hand_count(gray_spec):
    container, _ = _small(gray_spec, instances_per_class=5)
    m_dataset = 2 * 2 * 2  # C_D x h x w
    extractors = 3 * (3 * 2 * 9 + 3)  # classes x (C_F x C_D x 3 x 3 weights + C_F biases) = 171
    m_class = 3 * 1 * 2 * 2  # classes x C_C x h x w = 12
    m_instance = 3 * 5 * 1 * 2 * 2  # classes x GIPC x C_I x h x w = 60
    stage_1 = (3 + 1 + 1) * 4 * 9 + 2 * 4  # conv (C_F+C_C+C_I) -> 4 without bias (the norm cancels it) + affine = 188
    stage_2 = 4 * 4 * 9 + 2 * 4  # 152
    output = 4 * 1 * 9 + 1  # conv to 1 channel + bias = 37
    assert container.stored_floats() == m_dataset + extractors + m_class + m_instance + stage_1 + stage_2 + output == 628
    assert container.shared_floats() == 628 - 60 and container.instance_floats == 4
    assert container.stored_bytes() == 4 * 628
    plain, _ = _small(gray_spec, instances_per_class=5, norm="none")  # conv biases instead of norm affines
    assert plain.stored_floats() == 628 - 188 - 152 + (5 * 4 * 9 + 4) + (4 * 4 * 9 + 4)


def test_fashion_mnist_ipc_1_defaults_fill_the_budget():
    spec = DataSpec(1, 28, 28, 10)
    container = create_container("hmn", spec, 1, _fitted(spec))
    # h 7, C_D 2, C_F 2, C_C 1, C_I 1, decoder width 8 (two stages 7 -> 14 -> 28)
    shared = (2 * 49) + 10 * (2 * 2 * 9 + 2) + 10 * 1 * 49 + ((2 + 1 + 1) * 8 * 9 + 16) + (8 * 8 * 9 + 16) + (8 * 9 + 1)
    assert shared == 98 + 380 + 490 + 969 == 1937 == container.shared_floats()
    assert container.generated_per_class() == (7840 - 1937) // (10 * 49) == 12
    assert container.stored_floats() == 1937 + 120 * 49 <= 7840
    over = create_container("hmn", spec, 1, _fitted(spec), over_budget=0.1)
    assert over.generated_per_class() == (8624 - 1937) // 490 == 13  # (1 + p) B = 8,624
    assert over.over_budget_ratio == pytest.approx(1.1) and over.instances_within_budget(1.0) == 12
    with pytest.raises(BudgetError):
        over.check_budget(1.0)
    over.check_budget(over.over_budget_ratio)


def test_cifar10_ipc_10_defaults_fill_the_budget():
    spec = DataSpec(3, 32, 32, 10)
    sizes = default_hmn_sizes(spec, 10)
    assert (sizes.memory_height, sizes.dataset_channels, sizes.feature_channels, sizes.class_channels,
            sizes.instance_channels, sizes.decoder_width) == (4, 16, 16, 16, 8, 48)
    container = create_container("hmn", spec, 10, _fitted(spec))
    decoder = (40 * 48 * 9 + 96) + 2 * (48 * 48 * 9 + 96) + (48 * 3 * 9 + 3)  # 60,339
    shared = 16 * 16 + 10 * (16 * 16 * 9 + 16) + 10 * 16 * 16 + decoder
    assert shared == 256 + 23_200 + 2_560 + 60_339 == 86_355 == container.shared_floats()
    assert container.generated_per_class() == (307_200 - 86_355) // (10 * 8 * 16) == 172
    assert container.budget_floats - container.stored_floats() < 10 * 128  # no room for another image per class


def test_shared_parts_over_the_budget_are_refused(gray_spec):
    _, pre = tiny_real(gray_spec)
    with pytest.raises(BudgetError, match="GIPC would be"):
        create_container("hmn", gray_spec, 1, pre, decoder_width=32)
    with pytest.raises(ConfigError, match="never batch norm"):
        create_container("hmn", gray_spec, 4, pre, norm="batch")
    with pytest.raises(ConfigError, match="init"):
        create_container("hmn", gray_spec, 4, pre, init="zeros")


def test_an_image_does_not_depend_on_its_batch(gray_spec):
    container, _ = _small(gray_spec)
    everything = container.generate_all().images
    with torch.no_grad():
        for index in (0, 7, container.total_generated() - 1):
            alone = container.generate(torch.tensor([index])).images[0]
            assert torch.equal(alone, everything[index])
        pair = container.generate(torch.tensor([9, 2])).images
    assert torch.equal(pair, everything[[9, 2]])


def test_prune_keeps_exactly_the_chosen_images(gray_spec):
    container, _ = _small(gray_spec)
    per_class = container.generated_per_class()
    keep = torch.tensor([1, 4, per_class + 0, per_class + 5, 2 * per_class + 3, 2 * per_class + 4])
    pruned = container.prune(keep[torch.randperm(len(keep))])  # any order: kept in increasing index order
    assert isinstance(pruned, HMN) and pruned.generated_per_class() == 2
    assert torch.equal(pruned.generate_all().images, container.generate_all().images[keep])
    assert torch.equal(pruned.generate_all().labels, torch.tensor([0, 0, 1, 1, 2, 2]))
    removed = container.total_generated() - len(keep)
    assert container.stored_floats() - pruned.stored_floats() == removed * container.instance_floats
    with pytest.raises(ValueError, match="same number"):
        container.prune(torch.tensor([0, 1, per_class]))
    with pytest.raises(ValueError, match="repeated"):
        container.prune(torch.tensor([0, 0, per_class, per_class + 1, 2 * per_class, 2 * per_class + 1]))


def test_state_round_trip_rebuilds_identical_images(gray_spec):
    container, _ = _small(gray_spec, over_budget=0.1)
    per_class = container.generated_per_class()
    pruned = container.prune(torch.arange(container.total_generated()).view(3, per_class)[:, 1:].flatten())
    for original in (container, pruned):
        built = original.construction()
        assert built["config"]["instances_per_class"] == original.generated_per_class()
        rebuilt = create_container("hmn", gray_spec, built["images_per_class"], original.preprocessing, **built["config"])
        rebuilt.load_state_dict(original.state_dict(), strict=True)
        assert torch.equal(rebuilt.generate_all().images, original.generate_all().images)


def test_gradient_reaches_every_memory_and_the_decoder(gray_spec):
    container, _ = _small(gray_spec)
    images = container.generate(torch.arange(container.total_generated())).images
    images.pow(2).mean().backward()
    for name, parameter in container.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_reconstruct_init_starts_from_real_looking_images(gray_spec):
    # 'real' images whose classes differ in brightness: class c is c / 2 plus a little noise
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(12)
    images = (labels.view(-1, 1, 1, 1) / 2 + 0.05 * torch.randn(36, 1, 8, 8, generator=generator)).clamp(0, 1)
    pre = Preprocessing("normalize").fit(images)
    real = RealPool(Split(images, labels), 3, pre)
    class_means = torch.stack([real.inputs[real.labels == c].mean(0) for c in range(3)])  # (3, 1, 8, 8)
    errors = {}
    for init in ("random", "reconstruct"):
        container = create_container("hmn", gray_spec, 4, pre, **SMALL, init=init, reconstruct_steps=60)
        container.initialize(real, torch.Generator().manual_seed(3))
        generated = container.generate_all()
        errors[init] = float((generated.images - class_means[generated.labels]).pow(2).mean())
    assert errors["reconstruct"] < 0.1 * errors["random"]


def _condense(spec, objective_name, seed=5, **objective_settings):
    real, pre = tiny_real(spec)
    container = create_container("hmn", spec, 4, pre, **SMALL, over_budget=0.1)
    generator = torch.Generator().manual_seed(seed)
    container.initialize(real, generator)
    start = {k: v.clone() for k, v in container.state_dict().items()}
    objective = create_objective(objective_name, spec, **objective_settings)
    condense(container, objective, real, OptimizerConfig("adam", 0.01), LoopConfig(3, checkpoint_every=0), generator,
             progress=False)
    return start, container


@pytest.mark.parametrize("objective_name", ["dm", "idc"])
def test_three_engine_iterations_change_everything_and_are_deterministic(gray_spec, objective_name):
    assert objective_name in OBJECTIVES.names()
    settings = ({"real_per_class": 6} if objective_name == "dm" else
                {"real_per_class": 6, "synthetic_per_class": 8, "real_training_images": 12, "renew_every": 2})
    start, first = _condense(gray_spec, objective_name, **settings)
    _, second = _condense(gray_spec, objective_name, **settings)
    for name, value in first.state_dict().items():
        assert not torch.equal(value, start[name]), f"{name} did not change"
        assert torch.equal(value, second.state_dict()[name]), f"{name} differs between two runs with one seed"


def test_a_pruned_artifact_loads_with_its_shapes_and_record(gray_spec, tmp_path):
    from condensation.artifacts import load_artifact, save_artifact

    container, _ = _small(gray_spec, over_budget=0.1)
    pruned = container.prune(torch.arange(container.total_generated()).view(3, -1)[:, :16].flatten())
    pruned.pruning_record = {"beta": 0.5}
    save_artifact(tmp_path / "run", pruned, {"recipe": "hmn"})
    loaded = load_artifact(tmp_path / "run")
    assert loaded.metadata["container"]["pruning"] == {"beta": 0.5}
    assert loaded.container.generated_per_class() == 16
    assert torch.equal(loaded.container.generate_all().images, pruned.generate_all().images)
