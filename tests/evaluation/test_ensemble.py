"""Ensemble training (``train_ensemble``) equals training each network alone with its own generator, and
evaluation picks the vmapped or the sequential path without changing any result."""
import pytest
import torch

from condensation.containers import Batch, create_container
from condensation.data import DataSpec, Split
from condensation.data.augment import make_evaluation_augment
from condensation.engine.train import TrainSettings, can_train_as_ensemble, predict, train_ensemble, train_network
from condensation.errors import ConfigError
from condensation.evaluation import evaluate_container, evaluate_on_splits, get_protocol
from condensation.evaluation import evaluate as evaluate_module
from condensation.evaluation.evaluate import network_generator
from condensation.networks import NETWORKS
from condensation.networks import seeded_network
from tests.conftest import tiny_real

BATCH_NORM_ARCHITECTURES = ("convnet_bn", "resnet18_bn", "vgg11_bn")
# Small overrides keep every architecture quick; those without a width setting run at their fixed size.
OVERRIDES = {"convnet": {"width": 8}, "convnet1": {"width": 8}, "convnet2": {"width": 8}, "convnet3": {"width": 8},
             "convnet4": {"width": 8}, "convnet5": {"width": 8}, "convnet_ln": {"width": 8},
             "convnet_nn": {"width": 8}, "mlp": {"width": 8}, "resnet18": {"width": 4}}
# Four or five 2x2 pools need more than 8x8 (28 + padding 3 is 32); ResNet's instance norm on the 1x1 map
# of 8x8 inputs normalizes rounding noise, which no two computations share.
IMAGE_SIZES = {"convnet4": 28, "convnet5": 28, "vgg11": 28, "vgg11_bn": 28, "resnet18": 32, "resnet18_bn": 32}


def _spec(architecture: str) -> DataSpec:
    size = IMAGE_SIZES.get(architecture, 8)
    return DataSpec(1, size, size, 3, ("a", "b", "c"), flip_allowed=False)


def _data(spec: DataSpec, count: int, seed: int, dtype: torch.dtype = torch.float32) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, spec.channels, spec.height, spec.width, generator=generator)
    return Batch(images.to(dtype), torch.arange(count) % spec.num_classes)


def _both_ways(architecture, spec, settings, augment, source, networks=3, dtype=torch.float32):
    """(networks trained one by one, the same networks trained as one ensemble), each from its own generator."""
    def fresh():
        generators = [torch.Generator().manual_seed(100 + k) for k in range(networks)]
        built = [seeded_network(architecture, spec, g, "cpu", **OVERRIDES.get(architecture, {})).to(dtype)
                 for g in generators]
        return built, generators

    alone, generators = fresh()
    for network, generator in zip(alone, generators):
        train_network(network, source, settings, generator, augment)
    together, generators = fresh()
    assert train_ensemble(together, source, settings, generators, augment) == together
    return alone, together


def _assert_same_networks(alone, together, test: Batch, tolerance: float = 1e-4):
    for one, other in zip(alone, together):
        assert type(other) is type(one) and isinstance(other, torch.nn.Module)
        for (name, a), (_, b) in zip(one.named_parameters(), other.named_parameters()):
            torch.testing.assert_close(b, a, rtol=tolerance, atol=tolerance, msg=lambda m, name=name: f"{name}: {m}")
        logits = predict(other, test.images), predict(one, test.images)
        torch.testing.assert_close(*logits, rtol=tolerance, atol=tolerance)
        assert torch.equal(logits[0].argmax(1), logits[1].argmax(1))  # the same test accuracy


VMAPPABLE = [name for name in NETWORKS.names() if name not in BATCH_NORM_ARCHITECTURES]


@pytest.mark.parametrize("architecture", VMAPPABLE)
def test_an_ensemble_of_each_architecture_trains_as_its_networks_alone(architecture):
    """A step budget over a set that is not a multiple of the batch, with augmentation and CutMix. In float64:
    instance norm over the 2x2 maps of the small inputs turns float32 rounding (vmap's grouped convolutions
    round differently) into differences of 1e-3 after a few steps; float64 leaves only the method's."""
    spec, dtype = _spec(architecture), torch.float64
    train, test = _data(spec, 10, seed=0, dtype=dtype), _data(spec, 12, seed=1, dtype=dtype)
    settings = TrainSettings(steps=3, batch_size=4, learning_rate=0.05, cutmix_probability=0.5)  # 2 epochs
    augment = make_evaluation_augment("dsa", "single", flip_allowed=True)
    alone, together = _both_ways(architecture, spec, settings, augment, lambda _generator: train, networks=2,
                                 dtype=dtype)
    _assert_same_networks(alone, together, test, tolerance=1e-9)


def test_the_registry_split_is_by_batch_norm():
    """Every architecture is either tested above or refused for its batch norm (a new one cannot slip by)."""
    for name in NETWORKS.names():
        network = NETWORKS.create(name, _spec(name), **OVERRIDES.get(name, {}))
        assert can_train_as_ensemble(network) == (name not in BATCH_NORM_ARCHITECTURES), name


@pytest.mark.parametrize("case", ["epochs_with_tail", "epochs_augment_cutmix", "steps_plain", "steps_small_set",
                                  "rgb_chain_cosine"])
def test_ensemble_training_follows_every_budget_rule(case):
    architecture, spec, augment = "convnet", _spec("convnet"), make_evaluation_augment("dsa", "single", True)
    settings = {
        "epochs_with_tail": TrainSettings(epochs=2, batch_size=4),  # 4 + 4 + 2 per epoch
        "epochs_augment_cutmix": TrainSettings(epochs=2, batch_size=4, schedule="idc", cutmix_probability=0.5),
        "steps_plain": TrainSettings(steps=6, batch_size=4, weight_decay=0.0),
        "steps_small_set": TrainSettings(steps=3, batch_size=16, cutmix_probability=1.0),  # all 10 every step
        "rgb_chain_cosine": TrainSettings(steps=4, batch_size=4, schedule="cosine", cutmix_probability=0.5),
    }[case]
    if case in ("epochs_with_tail", "steps_plain"):
        augment = None
    if case == "rgb_chain_cosine":
        spec, augment = DataSpec(3, 16, 16, 3, ("a", "b", "c")), make_evaluation_augment("dsa", "chain", True)
    train, test = _data(spec, 10, seed=0), _data(spec, 12, seed=1)
    alone, together = _both_ways(architecture, spec, settings, augment, lambda _generator: train)
    _assert_same_networks(alone, together, test)


def test_ensemble_epochs_are_drawn_from_each_networks_generator():
    """A source random per epoch (HaBa) is called once per epoch and network, with that network's generator."""
    spec = _spec("convnet")
    pool = _data(spec, 30, seed=0)
    calls = []

    def source(generator):
        calls.append(generator)
        return Batch(pool.images[torch.randperm(30, generator=generator)[:10]], pool.labels[:10])

    settings = TrainSettings(epochs=3, batch_size=4)
    alone, together = _both_ways("convnet", spec, settings, None, source, networks=2)
    _assert_same_networks(alone, together, _data(spec, 12, seed=1))
    ensemble_calls = calls[len(calls) // 2:]
    assert len(ensemble_calls) == 6 and len(set(map(id, ensemble_calls))) == 2


def test_train_ensemble_refuses_what_it_cannot_train():
    spec = _spec("convnet")
    source, settings = (lambda _generator: _data(spec, 10, seed=0)), TrainSettings(steps=1, batch_size=4)
    generators = [torch.Generator().manual_seed(k) for k in range(2)]
    for name in BATCH_NORM_ARCHITECTURES:
        network = NETWORKS.create(name, _spec(name))
        with pytest.raises(ValueError, match="batch norm"):
            train_ensemble([network], source, settings, generators[:1])
    convnets = [NETWORKS.create("convnet", spec, width=8) for _ in range(2)]
    with pytest.raises(ValueError, match="one generator per network"):
        train_ensemble(convnets, source, settings, generators[:1])
    with pytest.raises(ValueError, match="one architecture"):
        train_ensemble([convnets[0], NETWORKS.create("convnet", spec, width=4)], source, settings, generators)
    sizes = iter([10, 12])
    with pytest.raises(ValueError, match="epochs of one size"):
        train_ensemble(convnets, lambda _generator: _data(spec, next(sizes), seed=0), settings, generators)


def test_network_generators_are_stable_and_distinct():
    # a fixed digest: the same stream in every process (Python's hash() would change per process)
    assert network_generator(0, "convnet", 0).initial_seed() == network_generator(0, "convnet", 0).initial_seed()
    assert network_generator(0, "convnet", 0).initial_seed() == 309197670113795876
    seeds = {network_generator(seed, architecture, k).initial_seed()
             for seed in (0, 1) for architecture in ("convnet", "mlp") for k in range(3)}
    assert len(seeds) == 12


def _container_and_split(spec):
    real, preprocessing = tiny_real(spec)
    container = create_container("pixels", spec, 2, preprocessing)
    container.initialize(real, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    return container, Split(torch.rand(30, 1, 8, 8, generator=generator), torch.arange(30) % 3)


def _recording_ensembles(monkeypatch) -> list[int]:
    """The size of every train_ensemble call evaluation makes."""
    sizes, original = [], evaluate_module.train_ensemble

    def recording(networks, *args, **kwargs):
        sizes.append(len(networks))
        return original(networks, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "train_ensemble", recording)
    return sizes


def test_evaluation_gives_the_same_accuracies_on_either_path(gray_spec, monkeypatch):
    container, split = _container_and_split(gray_spec)
    protocol = get_protocol("smoke", networks=3, architectures=("convnet", "convnet_bn"), steps=3,
                            cutmix_probability=0.5)
    ensembles = _recording_ensembles(monkeypatch)
    sequential = evaluate_container(container, split, protocol, seed=3, ensemble="sequential")
    assert ensembles == []
    vmapped = evaluate_container(container, split, protocol, seed=3, ensemble="vmap")
    assert ensembles == [3]  # convnet as one ensemble; convnet_bn fell back to one by one
    for architecture in protocol.architectures:
        assert vmapped[architecture].values == sequential[architecture].values
    evaluate_container(container, split, protocol, seed=3, ensemble="auto")
    assert ensembles == [3]  # "auto" trains one by one on the CPU


def test_a_networks_accuracy_does_not_depend_on_how_many_are_trained(gray_spec):
    container, split = _container_and_split(gray_spec)
    one = evaluate_container(container, split, get_protocol("smoke", networks=1), seed=5)["convnet"].values
    three = evaluate_container(container, split, get_protocol("smoke", networks=3), seed=5)["convnet"].values
    assert three[:1] == one and len(three) == 3


def test_evaluation_refuses_unknown_modes_and_precisions(gray_spec):
    container, split = _container_and_split(gray_spec)
    protocol = get_protocol("smoke")
    with pytest.raises(ConfigError, match="auto, vmap, sequential"):
        evaluate_on_splits(container, {"test": split}, protocol, seed=0, ensemble="parallel")
    with pytest.raises(ConfigError, match="fp32, bf16"):
        evaluate_container(container, split, protocol, seed=0, precision="fp16")


def test_bf16_test_forwards_change_only_the_test_precision(gray_spec, capsys):
    container, split = _container_and_split(gray_spec)
    protocol = get_protocol("smoke", networks=2)
    fp32 = evaluate_container(container, split, protocol, seed=0)["convnet"]
    bf16 = evaluate_container(container, split, protocol, seed=0, precision="bf16", progress=True)["convnet"]
    assert bf16.n == 2 and all(abs(a - b) <= 10 for a, b in zip(bf16.values, fp32.values))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("  convnet network 1/2:") and lines[0].endswith(" s)")
