"""Process speed settings and the bf16 precision of no-gradient forwards."""
import sys

import pytest
import torch

from condensation.containers import create_container
from condensation.errors import ConfigError
from condensation.networks import create_network
from condensation.objectives import create_objective
from condensation.objectives.gradient import cosine_distance, matching_loss, parameter_gradients
from condensation.run import parse_duration
from condensation.runtime import autocast, check_precision, forward_in_chunks, no_grad_forward, tune_allocator

from .conftest import tiny_real


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (a no-op elsewhere)")
def test_the_allocator_is_tuned_on_linux_and_tuning_twice_is_harmless():
    assert tune_allocator() is True
    assert tune_allocator() is True


def test_fp32_adds_no_autocast_and_bf16_runs_convolutions_in_bfloat16(gray_spec):
    network = create_network("convnet", gray_spec, width=8)
    x = torch.randn(4, 1, 8, 8)
    with autocast("fp32", "cpu"):
        assert network.embed(x).dtype == torch.float32
    with no_grad_forward("bf16", "cpu"):
        features = network.embed(x)
        assert features.dtype == torch.bfloat16 and not features.requires_grad
    with pytest.raises(ConfigError, match="precision"):
        check_precision("fp16")


def test_forward_in_chunks_equals_one_forward(gray_spec):
    network = create_network("convnet", gray_spec, width=8)
    x = torch.randn(11, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(forward_in_chunks(network.embed, x, 4), network.embed(x))


@pytest.mark.parametrize("objective_name", ["dm", "echo"])
def test_bf16_real_features_give_the_fp32_loss_and_gradient_to_bf16_accuracy(gray_spec, objective_name):
    """Only the real images' forward runs in bf16: loss and image gradient stay within ~1% of fp32."""
    real, preprocessing = tiny_real(gray_spec)
    results = {}
    for precision in ("fp32", "bf16"):
        container = create_container("pixels", gray_spec, 2, preprocessing)
        objective = create_objective(objective_name, gray_spec, precision=precision, real_per_class=12, dsa=False,
                                     synthetic_per_class=0)
        generator = torch.Generator().manual_seed(0)
        container.initialize(real, generator)
        objective.begin_iteration(0, generator)
        loss = objective.loss(container, real, [0, 1, 2], generator)
        loss.backward()
        results[precision] = (float(loss.detach()), container.images.grad.clone())
    (loss32, grad32), (loss16, grad16) = results["fp32"], results["bf16"]
    assert loss16 == pytest.approx(loss32, rel=0.05)
    cosine = torch.nn.functional.cosine_similarity(grad32.flatten(), grad16.flatten(), dim=0)
    assert cosine > 0.99


def test_bf16_real_gradients_are_float32_and_close_to_fp32(gray_spec):
    # a fixed draw: with width 8, the per-unit cosine of a few tiny gradients can move by several % in bf16
    torch.manual_seed(0)
    network = create_network("convnet", gray_spec, width=8)
    parameters = [p for p in network.parameters() if p.ndim > 1]
    real = torch.randn(12, 1, 8, 8)
    reference = parameter_gradients(network, parameters, real, 1, create_graph=False)
    synthetic = torch.randn(2, 1, 8, 8, requires_grad=True)
    loss32 = matching_loss(network, parameters, real, synthetic, 1, cosine_distance, "fp32")
    loss16 = matching_loss(network, parameters, real, synthetic, 1, cosine_distance, "bf16")
    assert loss16.dtype == torch.float32 and float(loss16.detach()) == pytest.approx(float(loss32.detach()), rel=0.02)
    with autocast("bf16", "cpu"):
        approximate = parameter_gradients(network, parameters, real, 1, create_graph=False)
    for exact, rough in zip(reference, approximate):
        assert rough.dtype == torch.float32  # the parameters' dtype: only the arithmetic was bf16
        assert torch.nn.functional.cosine_similarity(exact.flatten(), rough.flatten(), dim=0) > 0.99


@pytest.mark.parametrize("text, seconds", [(3600, 3600.0), ("3600", 3600.0), ("90s", 90.0), ("20m", 1200.0),
                                           ("1.5h", 5400.0), (" 2M ", 120.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "abc", "-1", "0", "0s", "inf", "nan", "10d"])
def test_bad_durations_are_refused_by_name(text):
    with pytest.raises(ConfigError, match="time_limit"):
        parse_duration(text)
