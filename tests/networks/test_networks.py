"""Every registered network builds for every dataset shape (or refuses it with a ConfigError), classifies
and embeds with the right shapes, and rejects inputs of the wrong size."""
from __future__ import annotations

import pytest
import torch

from condensation.data import DataSpec
from condensation.errors import ConfigError
from condensation.networks import NETWORKS, create_network

SPECS = {
    "1x28x28": DataSpec(1, 28, 28, 10),  # MNIST, Fashion-MNIST
    "3x32x32": DataSpec(3, 32, 32, 10),  # CIFAR-10, SVHN
    "3x64x64": DataSpec(3, 64, 64, 200),  # Tiny-ImageNet
    "1x8x8": DataSpec(1, 8, 8, 10),  # scikit-learn digits
}

# Combinations that cannot work: every 2x2 pool halves the map, and an 8x8 digit (12x12 after the
# single-channel padding of 3) is down to 1x1 after three pools, so a fourth pool has nothing left.
TOO_SMALL = {
    ("convnet4", "1x8x8"),
    ("convnet5", "1x8x8"),
    ("vgg11", "1x8x8"),  # five max-pools
    ("vgg11_bn", "1x8x8"),
}

# Embedding sizes worth pinning down: the field's numbers at 28 and 32 px.
FEATURE_DIMS = {
    ("convnet", "1x28x28"): 2048,
    ("convnet", "3x32x32"): 2048,
    ("convnet", "3x64x64"): 2048,  # ConvNet-4 at 64 px: 128 x 4 x 4
    ("alexnet", "1x28x28"): 192 * 4 * 4,
    ("alexnet", "3x32x32"): 192 * 4 * 4,
    ("vgg11", "3x32x32"): 512,
    ("vgg11", "1x28x28"): 512,
    ("resnet18", "3x32x32"): 512,
    ("resnet18", "3x64x64"): 512,
    ("mlp", "3x32x32"): 128,
}


def test_the_expected_networks_are_registered():
    for name in ("alexnet", "vgg11", "vgg11_bn", "resnet18", "resnet18_bn", "mlp", "convnet"):
        assert name in NETWORKS


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("name", NETWORKS.names())
def test_builds_classifies_and_embeds(name, spec_name):
    spec = SPECS[spec_name]
    torch.manual_seed(0)
    if (name, spec_name) in TOO_SMALL:
        with pytest.raises(ConfigError, match=f"cannot take {spec.height}x{spec.width} images"):
            create_network(name, spec)
        return
    network = create_network(name, spec)
    x = torch.rand(2, spec.channels, spec.height, spec.width)
    features = network.embed(x)
    logits = network(x)
    assert features.shape == (2, network.feature_dim)
    assert logits.shape == (2, spec.num_classes)
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits, network.classify(features), atol=1e-5)
    if (name, spec_name) in FEATURE_DIMS:
        assert network.feature_dim == FEATURE_DIMS[(name, spec_name)]
    # a different image size is refused with a ValueError naming both shapes
    wrong = torch.rand(2, spec.channels, spec.height + 4, spec.width + 4)
    with pytest.raises(ValueError, match="was built for inputs"):
        network(wrong)


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "resnet18", "mlp"])
def test_gradients_reach_the_input_and_every_parameter(name):
    torch.manual_seed(0)
    network = create_network(name, SPECS["3x32x32"])
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    network(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in network.parameters())


def test_convnet3_on_mnist_shapes_matches_the_field():
    """ConvNet-3, 1x28x28: padding 3 makes 32x32, so the embedding is 128 x 4 x 4 = 2048 as for CIFAR."""
    network = create_network("convnet3", SPECS["1x28x28"])
    assert network.features[0].padding == (3, 3)
    assert network.feature_dim == 2048
    width, classes = 128, 10
    conv1 = 1 * width * 3 * 3 + width
    conv = width * width * 3 * 3 + width
    norm = 2 * width  # GroupNorm(128, 128) affine: weight + bias
    head = 2048 * classes + classes
    assert sum(p.numel() for p in network.parameters()) == conv1 + 2 * conv + 3 * norm + head == 317_706


def test_alexnet_parameter_count_matches_the_reference():
    """DC's AlexNet on CIFAR: 5x5 convs 3->128->192, 3x3 convs 192->256->192->192, head 192*4*4 -> 10."""
    network = create_network("alexnet", SPECS["3x32x32"])
    convs = (3 * 128 * 25 + 128) + (128 * 192 * 25 + 192) + (192 * 256 * 9 + 256) + (256 * 192 * 9 + 192)
    convs += 192 * 192 * 9 + 192
    assert sum(p.numel() for p in network.parameters()) == convs + 3072 * 10 + 10


def test_single_channel_padding_follows_the_reference():
    alexnet = create_network("alexnet", SPECS["1x28x28"])
    vgg = create_network("vgg11", SPECS["1x28x28"])
    assert alexnet.features[0].padding == (4, 4)
    assert vgg.features[0].padding == (3, 3)
    assert create_network("alexnet", SPECS["3x32x32"]).features[0].padding == (2, 2)
    assert create_network("vgg11", SPECS["3x32x32"]).features[0].padding == (1, 1)


@pytest.mark.parametrize(
    "name, norm_type",
    [
        ("vgg11", torch.nn.GroupNorm),
        ("vgg11_bn", torch.nn.BatchNorm2d),
        ("resnet18", torch.nn.GroupNorm),
        ("resnet18_bn", torch.nn.BatchNorm2d),
    ],
)
def test_norm_variants(name, norm_type):
    network = create_network(name, SPECS["3x32x32"])
    norms = [m for m in network.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d))]
    assert norms and all(isinstance(m, norm_type) for m in norms)
    if norm_type is torch.nn.GroupNorm:  # the field's "instance norm": one group per channel
        assert all(m.num_groups == m.num_channels for m in norms)


def test_resnet18_is_cifar_style():
    network = create_network("resnet18", SPECS["3x32x32"])
    stem = network.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in network.modules())
    assert len(network.stages) == 8  # [2, 2, 2, 2] basic blocks


def test_mlp_layers():
    network = create_network("mlp", SPECS["1x28x28"])
    linears = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 128), (128, 10)]


def test_overrides_are_checked():
    assert create_network("vgg11", SPECS["3x32x32"], norm="none").config.norm == "none"
    with pytest.raises(ConfigError, match="unknown network 'vgg11' setting"):
        create_network("vgg11", SPECS["3x32x32"], depth=3)
    with pytest.raises(ConfigError, match="unknown norm"):
        create_network("resnet18", SPECS["3x32x32"], norm="weird")
    with pytest.raises(ConfigError, match="unknown network 'resnet50'"):
        create_network("resnet50", SPECS["3x32x32"])


def test_convnet_average_pooling_equals_avg_pool2d_with_and_without_autograd():
    from condensation.networks.base import AveragePool2x2

    pool = AveragePool2x2()
    for shape in ((3, 5, 8, 6), (1, 2, 5, 7)):  # odd sizes drop the last row/column, as AvgPool2d does
        x = torch.randn(*shape)
        reference = torch.nn.functional.avg_pool2d(x, 2)
        with torch.no_grad():
            torch.testing.assert_close(pool(x), reference, rtol=0, atol=1e-6)  # the depthwise path
        with torch.inference_mode():
            torch.testing.assert_close(pool(x), reference, rtol=0, atol=1e-6)
        x64 = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradgradcheck(pool, (x64,))  # the autograd path keeps second derivatives
