"""Trajectory matching: the functional network, the loss, 'recompute' == 'unrolled', TESLA's gradient, engine
determinism."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from condensation.containers import CONTAINERS, create_container
from condensation.data import DataSpec, Preprocessing, Split
from condensation.data.datasets import Dataset
from condensation.engine.condense import LoopConfig, OptimizerConfig, condense
from condensation.engine.real import RealPool
from condensation.engine.experts import MANIFEST, ExpertConfig, build_network, train_experts
from condensation.errors import ConfigError
from condensation.objectives import create_objective
from condensation.objectives.trajectory import FunctionalNetwork

from ..conftest import tiny_real

SPEC = DataSpec(1, 8, 8, 3, ("a", "b", "c"), flip_allowed=False)
NETWORK = {"width": 8, "depth": 1}


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """Two tiny experts x 3 epochs trained on the same data (and preprocessing) as ``tiny_real(SPEC)``."""
    real, _ = tiny_real(SPEC)
    train = Split(real.raw, real.labels)
    out = tmp_path_factory.mktemp("experts")
    config = ExpertConfig(network_settings=NETWORK, experts=2, epochs=3, batch_size=12, preprocessing="normalize")
    train_experts(Dataset("tiny", SPEC, train, train, train), config, out, torch.Generator().manual_seed(0), progress=False)
    return out


def make_container(name: str, dtype=torch.float32, seed: int = 3):
    real, preprocessing = tiny_real(SPEC)
    container = create_container(name, SPEC, 2, preprocessing)
    container.initialize(real, torch.Generator().manual_seed(seed))
    return container.to(dtype), real


def test_functional_step_equals_a_module_sgd_step():
    network = build_network("convnet", SPEC, NETWORK, seed=1)
    functional = FunctionalNetwork(build_network("convnet", SPEC, NETWORK, seed=2))
    theta = torch.cat([p.detach().reshape(-1) for p in network.parameters()]).requires_grad_(True)
    images, labels = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(functional(theta, images), network(images), atol=1e-6)
    stepped = theta - 0.05 * functional.gradient(theta, images, labels, create_graph=False)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05)
    F.cross_entropy(network(images), labels).backward()
    optimizer.step()
    expected = torch.cat([p.detach().reshape(-1) for p in network.parameters()])
    assert torch.allclose(stepped, expected, atol=1e-6)


def test_loss_is_zero_when_the_student_lands_on_the_target(tmp_path, experts):
    """A hand-made expert whose epoch 1 is exactly one student step on the container's images."""
    container, real = make_container("pixels", torch.float64)
    objective = create_objective("mtt", SPEC, experts=str(experts), syn_steps=1, expert_epochs=1, max_start_epoch=1,
                                 dsa=False, syn_lr=0.02)
    start = torch.randn(objective.functional.parameter_count, generator=torch.Generator().manual_seed(4),
                        dtype=torch.float64) * 0.1
    batch = container.generate_all(mode="distill")
    leaf = start.clone().requires_grad_(True)
    target = start - 0.02 * objective.functional.gradient(leaf, batch.images, batch.labels, create_graph=False)
    manifest = json.loads((experts / MANIFEST).read_text())
    save_file({"trajectory": torch.stack([start, target, target, target]).float()}, str(tmp_path / "expert_0000.safetensors"))
    data = (tmp_path / "expert_0000.safetensors").read_bytes()
    manifest["files"] = {"expert_0000.safetensors": {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    handmade = create_objective("mtt", SPEC, experts=str(tmp_path), syn_steps=1, expert_epochs=1, max_start_epoch=1,
                                dsa=False, syn_lr=0.02)
    loss = handmade.loss(container, real, [0, 1, 2], torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8  # float32 storage of the trajectory is the only error
    far = create_objective("mtt", SPEC, experts=str(tmp_path), syn_steps=1, expert_epochs=1, max_start_epoch=1,
                           dsa=False, syn_lr=0.05)
    assert far.loss(container, real, [0, 1, 2], torch.Generator().manual_seed(0)).item() > 0.1


@pytest.mark.parametrize("memory", ["unrolled", "recompute", "tesla"])
def test_gradient_reaches_the_container_and_the_step_size(experts, memory):
    container, real = make_container("pixels")
    objective = create_objective("mtt", SPEC, experts=str(experts), syn_steps=3, memory=memory)
    loss = float(objective.backward(container, real, [0, 1, 2], torch.Generator().manual_seed(0)))
    assert loss > 0
    assert container.images.grad is not None and float(container.images.grad.abs().sum()) > 0
    assert objective.syn_lr.grad is not None and float(objective.syn_lr.grad.abs()) > 0
    assert set(objective.artifact_tensors()) == {"learned_learning_rate"}


@pytest.mark.parametrize("container_name", CONTAINERS.names())  # every registered container
def test_recompute_memory_gives_the_unrolled_gradients(experts, container_name):
    """float64, DSA on, mini-batches smaller than the set: container and step-size gradients agree."""
    results = {}
    for memory in ("unrolled", "recompute"):
        container, real = make_container(container_name, torch.float64)
        objective = create_objective("mtt", SPEC, experts=str(experts), syn_steps=5, batch_syn=4, max_start_epoch=2,
                                     memory=memory)
        objective.syn_lr = torch.nn.Parameter(objective.syn_lr.detach().double())
        generator = torch.Generator().manual_seed(11)
        loss = float(objective.backward(container, real, [0, 1, 2], generator))
        results[memory] = (loss, [p.grad for p in container.parameters()], objective.syn_lr.grad, generator.get_state())
    (loss_u, grads_u, lr_u, state_u), (loss_c, grads_c, lr_c, state_c) = results["unrolled"], results["recompute"]
    assert loss_u == pytest.approx(loss_c, rel=1e-12)
    for unrolled, constant in zip(grads_u, grads_c):
        assert float((unrolled - constant).norm() / unrolled.norm()) < 1e-5
    assert float((lr_u - lr_c).abs() / lr_u.abs()) < 1e-5
    assert torch.equal(state_u, state_c)  # both leave the run generator in the same state


def _tesla_reference(objective, container, generator):
    """Autograd of L(theta_0 - alpha sum_i g_i(sg(theta_i), X_i)): TESLA's loss with the student's path fixed."""
    from condensation.objectives.trajectory import matching_loss

    episode = objective._episode(container, generator)
    theta, summed = episode.start, 0
    for indices in episode.steps:
        images, labels = objective._batch(container, indices, generator)
        gradient = objective.functional.gradient(theta.detach().requires_grad_(True), images, labels, create_graph=True)
        summed = summed + gradient
        theta = theta.detach() - objective.syn_lr.detach() * gradient.detach()
    loss = matching_loss(episode.start - objective.syn_lr * summed, episode.start, episode.target)
    loss.backward()
    return float(loss.detach())


@pytest.mark.parametrize("container_name", ["pixels", "factorization", "hmn"])
def test_tesla_gives_the_gradient_of_the_path_fixed_loss(experts, container_name):
    """TESLA drops the terms through dg_i/dtheta_i: its gradient is that of the loss with the student's
    path held fixed (exact there), and equals the unrolled gradient for one student step."""
    results = {}
    for memory in ("tesla", "reference"):
        container, real = make_container(container_name, torch.float64)
        objective = create_objective("mtt", SPEC, experts=str(experts), syn_steps=4, batch_syn=4, max_start_epoch=2,
                                     memory="tesla")
        objective.syn_lr = torch.nn.Parameter(objective.syn_lr.detach().double())
        generator = torch.Generator().manual_seed(11)
        if memory == "tesla":
            loss = float(objective.backward(container, real, [0, 1, 2], generator))
        else:
            loss = _tesla_reference(objective, container, generator)
        results[memory] = (loss, [p.grad for p in container.parameters()], objective.syn_lr.grad)
    (loss_t, grads_t, lr_t), (loss_r, grads_r, lr_r) = results["tesla"], results["reference"]
    assert loss_t == pytest.approx(loss_r, rel=1e-12)
    for tesla, reference in zip(grads_t, grads_r):
        if reference is None:
            assert tesla is None or float(tesla.abs().sum()) == 0
            continue
        assert float((tesla - reference).norm() / reference.norm()) < 1e-9
    assert float((lr_t - lr_r).abs() / lr_r.abs()) < 1e-9


def test_tesla_equals_the_unrolled_gradient_for_one_step_only(experts):
    def gradients(memory, steps):
        container, real = make_container("pixels", torch.float64)
        objective = create_objective("mtt", SPEC, experts=str(experts), syn_steps=steps, batch_syn=6, memory=memory)
        objective.syn_lr = torch.nn.Parameter(objective.syn_lr.detach().double())
        objective.backward(container, real, [0, 1, 2], torch.Generator().manual_seed(4))
        return container.images.grad, objective.syn_lr.grad

    for steps, same in ((1, True), (4, False)):
        (tesla, tesla_lr), (unrolled, unrolled_lr) = gradients("tesla", steps), gradients("unrolled", steps)
        difference = float((tesla - unrolled).norm() / unrolled.norm())
        assert (difference < 1e-9) == same, (steps, difference)
        if same:
            torch.testing.assert_close(tesla_lr, unrolled_lr)


def test_the_old_constant_mode_name_says_what_it_became(experts):
    with pytest.raises(ConfigError, match="renamed 'recompute'"):
        create_objective("mtt", SPEC, experts=str(experts), memory="constant")


def test_checks_experts_against_the_run(experts, tmp_path):
    with pytest.raises(ConfigError, match="needs experts"):
        create_objective("mtt", SPEC)
    with pytest.raises(ConfigError, match="shape"):
        create_objective("mtt", DataSpec(1, 8, 8, 4), experts=str(experts))
    with pytest.raises(ConfigError, match="trained 4 epochs"):
        create_objective("mtt", SPEC, experts=str(experts), max_start_epoch=3, expert_epochs=2)
    with pytest.raises(ConfigError, match="memory"):
        create_objective("mtt", SPEC, experts=str(experts), memory="tiny")
    objective = create_objective("mtt", SPEC, experts=str(experts), syn_steps=1)
    real, preprocessing = tiny_real(SPEC, seed=5)  # other data: its fitted mean and std differ from the experts'
    container = create_container("pixels", SPEC, 1, preprocessing)
    with pytest.raises(ConfigError, match="preprocessing"):
        objective.loss(container, real, [0, 1, 2], torch.Generator())


@pytest.mark.parametrize("container_name", ["pixels", "multi_formation"])
@pytest.mark.parametrize("memory", ["unrolled", "recompute", "tesla"])
def test_engine_run_is_deterministic(experts, container_name, memory):
    def run():
        container, real = make_container(container_name)
        objective = create_objective("mtt", SPEC, experts=str(experts), syn_steps=3, batch_syn=4, memory=memory,
                                     lr_lr=1e-3)
        result = condense(container, objective, real, OptimizerConfig("sgd", 10.0, 0.5), LoopConfig(2, 0),
                          torch.Generator().manual_seed(1), progress=False)
        return result.losses, [p.detach().clone() for p in container.parameters()], objective.syn_lr.detach().clone()

    first, second = run(), run()
    assert first[0] == second[0] and len(first[0]) == 2
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
    assert torch.equal(first[2], second[2]) and float(first[2]) != 0.01  # the step size was learned
    initial, _ = make_container(container_name)
    assert not all(torch.equal(a, b.detach()) for a, b in zip(first[1], initial.parameters()))


def test_resumed_run_finishes_like_an_uninterrupted_one(experts, tmp_path):
    """The learned step size and its momentum travel through the engine's checkpoint."""
    def setup():
        container, real = make_container("pixels")
        objective = create_objective("mtt", SPEC, experts=str(experts), syn_steps=2, memory="recompute", lr_lr=1e-3)
        return container, objective, real

    checkpoint = tmp_path / "checkpoint.pt"
    container, objective, real = setup()
    full = condense(container, objective, real, OptimizerConfig("sgd", 10.0, 0.5), LoopConfig(3, 1),
                    torch.Generator().manual_seed(1), checkpoint_path=checkpoint, progress=False)
    expected = (container.images.detach().clone(), objective.syn_lr.detach().clone())
    container, objective, real = setup()  # the checkpoint holds the state after iteration 2 of 3
    resumed = condense(container, objective, real, OptimizerConfig("sgd", 10.0, 0.5), LoopConfig(3, 1),
                       torch.Generator().manual_seed(1), checkpoint_path=checkpoint, resume=True, progress=False)
    assert resumed.losses == full.losses
    assert torch.equal(container.images, expected[0]) and torch.equal(objective.syn_lr.detach(), expected[1])


def test_distill_with_the_mtt_recipe_saves_the_learned_step_size(tmp_path):
    """End to end on the bundled digits: experts and run share dataset, split and preprocessing."""
    from condensation.data import load_dataset
    from condensation.run import RunConfig, distill

    experts_dir = tmp_path / "experts"
    config = ExpertConfig(network_settings={"width": 4, "depth": 1}, experts=1, epochs=3, real_images=200,
                          preprocessing="normalize")
    train_experts(load_dataset("digits"), config, experts_dir, torch.Generator().manual_seed(0), progress=False)
    run = RunConfig(recipe="mtt", dataset="digits", iterations=2, preprocessing="normalize", out=str(tmp_path / "run"),
                    device="cpu",
                    objective_settings={"experts": str(experts_dir), "syn_steps": 2}, evaluate=False, progress=False)
    distill(run)
    metadata = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert metadata["objective_values"]["learned_learning_rate"] > 0
    zca = ExpertConfig(network_settings={"width": 4, "depth": 1}, experts=1, epochs=3, real_images=200)
    train_experts(load_dataset("digits"), zca, tmp_path / "zca", torch.Generator().manual_seed(0), progress=False)
    with pytest.raises(ConfigError, match="'zca' preprocessing"):
        distill(RunConfig(**{**run.__dict__, "out": str(tmp_path / "run2"),
                             "objective_settings": {"experts": str(tmp_path / "zca"), "syn_steps": 2}}))


def test_experts_whitened_in_the_other_zca_order_are_refused(tmp_path):
    """Buffers made before ZCA moved to raw pixels whitened normalized images: same kind, mean and std, other
    inputs. Their manifest lacks zca_input, and a run with today's ZCA must not use them silently."""
    real, _ = tiny_real(SPEC)
    train = Split(real.raw, real.labels)
    config = ExpertConfig(network_settings=NETWORK, experts=1, epochs=2, batch_size=12, preprocessing="zca")
    train_experts(Dataset("tiny", SPEC, train, train, train), config, tmp_path, torch.Generator().manual_seed(0),
                  progress=False)
    manifest_path = tmp_path / "experts.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["preprocessing"]["zca_input"] == "pixels"
    zca = Preprocessing("zca").fit(real.raw)
    container = create_container("pixels", SPEC, 1, zca)
    objective = create_objective("mtt", SPEC, experts=str(tmp_path), syn_steps=1, max_start_epoch=1, expert_epochs=1)
    objective.loss(container, RealPool(train, 3, zca), [0, 1, 2], torch.Generator())  # same order: accepted
    del manifest["preprocessing"]["zca_input"]  # as written before the fix
    manifest_path.write_text(json.dumps(manifest))
    objective = create_objective("mtt", SPEC, experts=str(tmp_path), syn_steps=1, max_start_epoch=1, expert_epochs=1)
    with pytest.raises(ConfigError, match="preprocessing"):
        objective.loss(container, RealPool(train, 3, zca), [0, 1, 2], torch.Generator())
