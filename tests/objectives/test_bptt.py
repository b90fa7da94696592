"""Unrolled BPTT: the recompute sweep equals full autograd; engine runs are deterministic."""
from __future__ import annotations

import pytest
import torch

from condensation.containers import CONTAINERS, create_container
from condensation.engine.condense import LoopConfig, OptimizerConfig, condense
from condensation.errors import ConfigError
from condensation.objectives import create_objective

from ..conftest import tiny_real

SMALL = {"network_settings": {"width": 8, "depth": 1}, "inner_steps": 6}


def make_container(name, spec, dtype=torch.float32):
    real, preprocessing = tiny_real(spec)
    container = create_container(name, spec, 2, preprocessing)
    container.initialize(real, torch.Generator().manual_seed(3))
    return container.to(dtype), real


@pytest.mark.parametrize("container_name", CONTAINERS.names())  # every registered container
def test_recompute_equals_full_autograd_through_the_unrolled_loop(gray_spec, container_name):
    """float64; DSA, weight decay and a random subset of each class per step exercise the replay."""
    results = {}
    for memory in ("unrolled", "recompute"):
        container, real = make_container(container_name, gray_spec, torch.float64)
        objective = create_objective("bptt", gray_spec, memory=memory, dsa=True, inner_weight_decay=5e-4,
                                     synthetic_per_class=3, real_per_class=5, **SMALL)
        generator = torch.Generator().manual_seed(7)
        objective.begin_iteration(0, generator)
        loss = float(objective.backward(container, real, [0, 1, 2], generator))
        results[memory] = (loss, [p.grad for p in container.parameters()], generator.get_state())
    (loss_u, grads_u, state_u), (loss_r, grads_r, state_r) = results["unrolled"], results["recompute"]
    assert loss_u == pytest.approx(loss_r, rel=1e-12)
    for unrolled, recomputed in zip(grads_u, grads_r):
        assert float(unrolled.norm()) > 0
        assert float((unrolled - recomputed).norm() / unrolled.norm()) < 1e-5
    assert torch.equal(state_u, state_r)


def test_unrolled_gradient_matches_finite_differences(gray_spec):
    """The reference itself: a directional derivative of the outer loss w.r.t. the pixels."""
    container, real = make_container("pixels", gray_spec, torch.float64)
    objective = create_objective("bptt", gray_spec, memory="unrolled", **{**SMALL, "inner_steps": 3})
    generator = torch.Generator().manual_seed(2)
    objective.begin_iteration(0, generator)
    state = generator.get_state()
    objective.backward(container, real, [0, 1, 2], generator)
    direction = torch.randn(container.images.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    analytic = float((container.images.grad * direction).sum())

    def loss_at(shift: float) -> float:
        with torch.no_grad():
            container.images += shift * direction
        generator.set_state(state)
        value = float(objective.loss(container, real, [0, 1, 2], generator).detach())
        with torch.no_grad():
            container.images -= shift * direction
        return value

    epsilon = 1e-5
    numeric = (loss_at(epsilon) - loss_at(-epsilon)) / (2 * epsilon)
    assert numeric == pytest.approx(analytic, rel=1e-5)


def test_rejects_bad_settings(gray_spec):
    with pytest.raises(ConfigError, match="memory"):
        create_objective("bptt", gray_spec, memory="checkpoint")
    with pytest.raises(ConfigError, match="inner_steps"):
        create_objective("bptt", gray_spec, inner_steps=0)


@pytest.mark.parametrize("container_name", ["pixels", "multi_formation"])
@pytest.mark.parametrize("memory", ["unrolled", "recompute"])
def test_engine_run_is_deterministic(gray_spec, container_name, memory):
    def run():
        container, real = make_container(container_name, gray_spec)
        objective = create_objective("bptt", gray_spec, memory=memory, **{**SMALL, "inner_steps": 3})
        result = condense(container, objective, real, OptimizerConfig("sgd", 0.1, 0.5, gradient_clip=2.0),
                          LoopConfig(2, 0), torch.Generator().manual_seed(1), progress=False)
        return result.losses, [p.detach().clone() for p in container.parameters()]

    first, second = run(), run()
    assert first[0] == second[0] and len(first[0]) == 2
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
    initial, _ = make_container(container_name, gray_spec)
    assert not all(torch.equal(a, b.detach()) for a, b in zip(first[1], initial.parameters()))


def test_truncated_bptt_reaches_only_the_last_k_steps_and_both_memory_modes_agree(gray_spec):
    """truncate = K: the recompute sweep equals autograd through the graph of the last K steps; K = T is full BPTT,
    and a truncated gradient differs from the full one."""
    def gradient(memory, truncate):
        container, real = make_container("pixels", gray_spec, torch.float64)
        objective = create_objective("bptt", gray_spec, memory=memory, truncate=truncate, synthetic_per_class=2,
                                     real_per_class=4, **SMALL)
        generator = torch.Generator().manual_seed(5)
        objective.begin_iteration(0, generator)
        objective.backward(container, real, [0, 1, 2], generator)
        return container.images.grad.clone()

    full = gradient("unrolled", 0)
    torch.testing.assert_close(gradient("recompute", 6), full, rtol=1e-9, atol=1e-12)  # K = T: no truncation
    for k in (1, 3):
        unrolled, recomputed = gradient("unrolled", k), gradient("recompute", k)
        torch.testing.assert_close(recomputed, unrolled, rtol=1e-6, atol=1e-10)
        assert float((unrolled - full).norm()) > 1e-6 * float(full.norm())
    with pytest.raises(ConfigError, match="truncate"):
        create_objective("bptt", gray_spec, truncate=7, **SMALL)
