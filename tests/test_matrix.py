"""Every registered objective with every registered container takes one engine iteration on tiny tensors:
the generated shapes are right, the loss is finite and a non-zero gradient reaches every stored tensor of the
container (or the tensor is listed in NOT_TRAINED with the reason)."""
from __future__ import annotations

import pytest
import torch

from condensation.containers import CONTAINERS, create_container
from condensation.data import DataSpec, Split
from condensation.data.datasets import Dataset
from condensation.engine.condense import ContainerOptimizer, LoopConfig, OptimizerConfig, condense
from condensation.engine.experts import ExpertConfig, train_experts
from condensation.objectives import OBJECTIVES, create_objective

from .conftest import tiny_real

SPEC = DataSpec(1, 8, 8, 3, ("a", "b", "c"), flip_allowed=False)
SMALL = {  # the smallest settings of each objective that still exercise its whole path
    "dm": {"real_per_class": 6},
    "echo": {"real_per_class": 6, "synthetic_per_class": 4},
    "dc": {"real_per_class": 6, "network": "convnet_w32"},
    "dsa": {"real_per_class": 6, "network": "convnet_w32"},
    "idc": {"real_per_class": 6, "synthetic_per_class": 4, "real_training_images": 12, "network": "convnet_w32"},
    "mtt": {"syn_steps": 2, "batch_syn": 6, "expert_epochs": 1, "max_start_epoch": 1},
    "bptt": {"inner_steps": 2, "synthetic_per_class": 2, "real_per_class": 4, "network_settings": {"width": 8}},
}


# (objective, container) -> {stored tensor: why this objective never trains it}; every other stored tensor of
# every container must get a non-zero gradient from every objective in one iteration
NOT_TRAINED: dict[tuple[str, str], dict[str, str]] = {}


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    real, _ = tiny_real(SPEC)
    train = Split(real.raw, real.labels)
    out = tmp_path_factory.mktemp("matrix-experts")
    config = ExpertConfig(network_settings={"width": 32}, experts=1, epochs=2, batch_size=12, preprocessing="normalize")
    train_experts(Dataset("tiny", SPEC, train, train, train), config, out, torch.Generator().manual_seed(0), progress=False)
    return out


def test_every_objective_has_small_settings():
    assert set(OBJECTIVES.names()) == set(SMALL), "add the new objective to SMALL so the matrix covers it"


@pytest.mark.parametrize("container_name", CONTAINERS.names())
@pytest.mark.parametrize("objective_name", OBJECTIVES.names())
def test_objective_times_container(objective_name, container_name, experts):
    real, preprocessing = tiny_real(SPEC)
    container = create_container(container_name, SPEC, 2, preprocessing)
    generator = torch.Generator().manual_seed(0)
    container.initialize(real, generator)
    settings = dict(SMALL[objective_name])
    if objective_name == "mtt":
        settings["experts"] = str(experts)
    objective = create_objective(objective_name, SPEC, **settings)
    before = [p.detach().clone() for p in container.parameters()]

    batch = container.generate_all(generator)
    assert batch.images.shape == (container.total_generated(), 1, 8, 8)

    gradients = {}  # name -> summed |gradient| over every optimizer step of the iteration (every class group)
    original_step = ContainerOptimizer.step

    def capture(self, *args, **kwargs):  # look at the container's gradients just before each step
        for name, p in container.named_parameters():
            if p.grad is not None:
                gradients[name] = gradients.get(name, 0) + p.grad.detach().abs()
        return original_step(self, *args, **kwargs)

    ContainerOptimizer.step = capture
    try:
        result = condense(container, objective, real, OptimizerConfig(learning_rate=1e-3), LoopConfig(1), generator,
                          progress=False)
    finally:
        ContainerOptimizer.step = original_step
    assert all(torch.isfinite(torch.tensor(loss)) for loss in result.losses)
    assert gradients, "no gradient reached the container"
    assert all(torch.isfinite(g).all() for g in gradients.values())
    untrained = {name for name, p in container.named_parameters() if p.requires_grad
                 and (name not in gradients or not gradients[name].sum() > 0)}
    assert untrained == set(NOT_TRAINED.get((objective_name, container_name), {})), \
        f"stored tensors that got no gradient: {sorted(untrained)}"
    assert any(not torch.equal(a, b) for a, b in zip(before, container.parameters()))


def _flat_tensors(value, prefix=""):
    """Every tensor in a nested state (dicts, lists, optimizer states) by a path name."""
    if torch.is_tensor(value):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return {k: v for key, item in items for k, v in _flat_tensors(item, f"{prefix}/{key}").items()}


def _three_dm_iterations(container_name: str, seed: int):
    real, preprocessing = tiny_real(SPEC)
    container = create_container(container_name, SPEC, 2, preprocessing)
    generator = torch.Generator().manual_seed(seed)
    container.initialize(real, generator)
    start = {k: v.clone() for k, v in container.state_dict().items()}
    result = condense(container, create_objective("dm", SPEC, **SMALL["dm"]), real, OptimizerConfig(learning_rate=0.1),
                      LoopConfig(3, checkpoint_every=0), generator, progress=False)
    return start, container, result


@pytest.mark.parametrize("container_name", CONTAINERS.names())
def test_every_container_condenses_deterministically(container_name):
    """One seed, one result: the stored tensors and the training-only state (HaBa's adversary) are equal
    between two runs; another seed starts elsewhere."""
    start, first, result = _three_dm_iterations(container_name, 7)
    _, second, again = _three_dm_iterations(container_name, 7)
    assert result.losses == again.losses and len(result.losses) == 3
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), f"{name} differs between two runs with one seed"
    training, training_again = _flat_tensors(first.training_state()), _flat_tensors(second.training_state())
    assert training.keys() == training_again.keys()
    assert all(torch.equal(training[k], training_again[k]) for k in training)
    assert any(not torch.equal(v, first.state_dict()[k]) for k, v in start.items()), "three iterations changed nothing"
    other_start, _, _ = _three_dm_iterations(container_name, 8)
    assert any(not torch.equal(v, start[k]) for k, v in other_start.items()), "the seed does not move the start"
