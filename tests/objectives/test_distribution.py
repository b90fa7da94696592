import pytest
import torch

from condensation.containers import create_container
from condensation.objectives import create_objective
from condensation.objectives.distribution import mmd_squared

from ..conftest import tiny_real


def test_linear_kernel_mmd_equals_dm_exactly():
    generator = torch.Generator().manual_seed(0)
    synthetic = torch.randn(7, 16, generator=generator, dtype=torch.float64)
    real = torch.randn(11, 16, generator=generator, dtype=torch.float64)
    dm = mmd_squared(synthetic, real, "mean")
    linear = mmd_squared(synthetic, real, "linear")
    assert torch.allclose(dm, linear, rtol=1e-12, atol=1e-12)
    assert torch.allclose(dm, ((synthetic.mean(0) - real.mean(0)) ** 2).sum())


@pytest.mark.parametrize("kernel", ["gaussian", "polynomial", "linear"])
def test_mmd_is_zero_for_identical_sets_and_positive_otherwise(kernel):
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(float(mmd_squared(x, x.clone(), kernel))) < 1e-10
    assert float(mmd_squared(x, x + 1.0, kernel)) > 1e-3


def test_gaussian_bandwidth_carries_no_gradient():
    generator = torch.Generator().manual_seed(2)
    synthetic = torch.randn(5, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    real = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    loss = mmd_squared(synthetic, real, "gaussian")
    (gradient,) = torch.autograd.grad(loss, synthetic)
    # reference: the same loss with the bandwidth computed beforehand as a constant
    from condensation.objectives.distribution import kernel_matrix

    joint = torch.cat([synthetic.detach(), real])
    bandwidth = torch.cdist(joint, joint).pow(2).sum() / (13 * 12)
    reference = (kernel_matrix("gaussian", synthetic, synthetic, bandwidth).mean()
                 - 2 * kernel_matrix("gaussian", synthetic, real, bandwidth).mean()
                 + kernel_matrix("gaussian", real, real, bandwidth).mean())
    (expected,) = torch.autograd.grad(reference, synthetic)
    torch.testing.assert_close(gradient, expected)


@pytest.mark.parametrize("name", ["dm", "echo"])
def test_distribution_losses_reach_the_container_and_keep_no_real_graph(name, gray_spec):
    real, pre = tiny_real(gray_spec)
    container = create_container("pixels", gray_spec, 2, pre)
    objective = create_objective(name, gray_spec, real_per_class=8)
    generator = torch.Generator().manual_seed(0)
    objective.begin_iteration(0, generator)
    assert not any(p.requires_grad for p in objective.network.parameters())
    loss = objective.loss(container, real, [0, 1, 2], generator)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert container.images.grad is not None and container.images.grad.abs().sum() > 0


def test_echo_renews_its_network_every_five_iterations(gray_spec):
    objective = create_objective("echo", gray_spec)
    generator = torch.Generator().manual_seed(0)
    networks = []
    for iteration in range(11):
        objective.begin_iteration(iteration, generator)
        networks.append(id(objective.network))
    assert len(set(networks[0:5])) == 1 and len(set(networks[5:10])) == 1
    assert networks[0] != networks[5] != networks[10]
    assert objective.per_class and objective.config.kernel == "gaussian"


@pytest.mark.parametrize("network", ["convnet", "convnet_bn"])
def test_real_chunking_never_changes_the_loss_even_with_batch_norm(gray_spec, network):
    """Batch norm couples the images of a forward pass: with it, DM forwards every real image at once."""
    real, preprocessing = tiny_real(gray_spec)
    losses = []
    for chunk in (5, 1000):
        container = create_container("pixels", gray_spec, 2, preprocessing)
        objective = create_objective("dm", gray_spec, network=network, real_per_class=12, real_chunk=chunk)
        generator = torch.Generator().manual_seed(0)
        container.initialize(real, generator)
        objective.begin_iteration(0, generator)
        losses.append(float(objective.loss(container, real, [0, 1, 2], generator).detach()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
