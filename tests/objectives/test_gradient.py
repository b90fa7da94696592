"""Gradient matching (DC, DSA, IDC): distances, gradients, the loop schedule, determinism and exact resume."""
import pytest
import torch

from condensation.containers import create_container
from condensation.engine.checkpoint import load_checkpoint
from condensation.engine.condense import LoopConfig, OptimizerConfig, condense
from condensation.errors import ConfigError
from condensation.networks import seeded_network
from condensation.objectives import create_objective
from condensation.objectives import gradient as gradient_module
from condensation.objectives.gradient import (
    absolute_distance, cosine_distance, dc_loops, layer_cosine_distance, matching_loss, squared_distance,
)

from ..conftest import tiny_real

# small but complete settings: every schedule event (renewal, training between steps) happens in 3 iterations
FAST = {
    "dc": {"network": "convnet_w32", "real_per_class": 8, "outer_loop": 2, "inner_loop": 1},
    "dsa": {"network": "convnet_w32", "real_per_class": 8, "outer_loop": 2, "inner_loop": 1},
    "idc": {"network": "convnet_w32", "real_per_class": 8, "renew_every": 2, "real_training_images": 16},
}


class Interrupted(Exception):
    pass


def _per_unit_reference(real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """A slow, literal reading of DC's distance_wb: one output unit at a time."""
    total = torch.zeros((), dtype=real.dtype)
    for unit in range(real.shape[0]):
        r, s = real[unit].flatten(), synthetic[unit].flatten()
        total = total + 1 - (r @ s) / (r.norm() * s.norm() + 1e-6)
    return total


# --------------------------------------------------------------------------------------------- distances
@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (4, 7), (6, 2, 4)])
def test_layer_distance_equals_a_per_unit_computation(shape):
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(shape, generator=generator, dtype=torch.float64)
    synthetic = torch.randn(shape, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(layer_cosine_distance(real, synthetic), _per_unit_reference(real, synthetic))


def test_one_dimensional_parameters_contribute_nothing():
    generator = torch.Generator().manual_seed(1)
    bias_real, bias_synthetic = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    assert float(layer_cosine_distance(bias_real, bias_synthetic)) == 0.0
    weights = [torch.randn(4, 3, 3, 3, generator=generator), torch.randn(3, 10, generator=generator)]
    others = [torch.randn_like(w) for w in weights]
    with_biases = cosine_distance(weights + [bias_real], others + [bias_synthetic])
    assert float(with_biases) == float(cosine_distance(weights, others))


def test_identical_gradients_are_at_distance_zero():
    generator = torch.Generator().manual_seed(2)
    gradients = [torch.randn(4, 3, 3, 3, generator=generator, dtype=torch.float64),
                 torch.randn(3, 10, generator=generator, dtype=torch.float64)]
    copies = [g.clone() for g in gradients]
    assert abs(float(cosine_distance(gradients, copies))) < 1e-5  # only DC's 1e-6 in the denominator remains
    assert float(squared_distance(gradients, copies)) == 0.0
    assert float(absolute_distance(gradients, copies)) == 0.0
    assert float(cosine_distance(gradients, [-g for g in gradients])) == pytest.approx(2 * (4 + 3), rel=1e-5)


def test_dc_loop_rule_by_images_per_class():
    assert dc_loops(1) == (1, 1) and dc_loops(10) == (10, 50) and dc_loops(50) == (50, 10)
    assert dc_loops(3) == (1, 1)  # nearest listed IPC: 1
    assert dc_loops(7) == (10, 50)  # nearest: 10
    assert dc_loops(15) == (10, 50)  # tie between 10 and 20: the smaller
    assert dc_loops(200) == (50, 10)


# --------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("distance", [cosine_distance, squared_distance])
def test_matching_loss_gradient_agrees_with_finite_differences(gray_spec, distance):
    network = seeded_network("convnet", gray_spec, torch.Generator().manual_seed(0), "cpu", width=4, depth=1).double()
    parameters = [p for p in network.parameters() if p.ndim > 1]
    generator = torch.Generator().manual_seed(3)
    real = torch.randn(6, 1, 8, 8, generator=generator, dtype=torch.float64)
    synthetic = torch.randn(2, 1, 8, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    loss = lambda images: matching_loss(network, parameters, real, images, 1, distance)  # noqa: E731
    (gradient,) = torch.autograd.grad(loss(synthetic), synthetic)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 1e-6  # not trivially zero
    assert torch.autograd.gradcheck(loss, (synthetic,), eps=1e-6, atol=1e-5)


def test_matching_only_weight_matrices_equals_dc_matching_every_parameter(gray_spec):
    """DC differentiates w.r.t. every parameter and lets 1-D ones add 0; skipping them gives the same loss."""
    network = seeded_network("convnet", gray_spec, torch.Generator().manual_seed(1), "cpu", width=8).double()
    generator = torch.Generator().manual_seed(4)
    real = torch.randn(10, 1, 8, 8, generator=generator, dtype=torch.float64)
    synthetic = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    labels_real, labels_synthetic = torch.full((10,), 2), torch.full((3,), 2)
    everything = list(network.parameters())
    real_gradients = torch.autograd.grad(torch.nn.functional.cross_entropy(network(real), labels_real), everything)
    synthetic_gradients = torch.autograd.grad(
        torch.nn.functional.cross_entropy(network(synthetic), labels_synthetic), everything)
    reference = sum(_per_unit_reference(r, s) for r, s in zip(real_gradients, synthetic_gradients) if r.ndim > 1)
    weights = [p for p in everything if p.ndim > 1]
    torch.testing.assert_close(matching_loss(network, weights, real, synthetic, 2, cosine_distance), reference)


@pytest.mark.parametrize("name", ["dc", "dsa", "idc"])
def test_the_loss_reaches_the_container_and_not_the_network(name, gray_spec):
    real, pre = tiny_real(gray_spec)
    container = create_container("pixels", gray_spec, 2, pre)
    objective = create_objective(name, gray_spec, **FAST[name])
    generator = torch.Generator().manual_seed(0)
    container.initialize(real, generator)
    objective.begin_iteration(0, generator)
    classes = objective.class_groups(gray_spec.num_classes)[0]
    value = objective.backward(container, real, classes, generator)
    gradient = container.images.grad
    assert value > 0 and gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    assert all(p.grad is None for p in objective.network.parameters())  # no wasted second-order weight gradients


def test_idc_matches_conv_weights_only_and_dc_every_weight_matrix(gray_spec):
    generator = torch.Generator().manual_seed(0)
    idc, dc = create_objective("idc", gray_spec), create_objective("dc", gray_spec)
    idc.begin_iteration(0, generator)
    dc.begin_iteration(0, generator)
    assert [p.ndim for p in idc.matched_parameters()] == [4, 4, 4]
    assert [p.ndim for p in dc.matched_parameters()] == [4, 4, 4, 2]
    assert idc.per_class and not dc.per_class
    assert len(idc.class_groups(3)) == 3 and dc.class_groups(3) == [[0, 1, 2]]


def test_dc_freezes_batch_norm_statistics_on_real_data(gray_spec):
    real, pre = tiny_real(gray_spec)
    container = create_container("pixels", gray_spec, 1, pre)
    objective = create_objective("dc", gray_spec, network="convnet_bn", real_per_class=8)
    generator = torch.Generator().manual_seed(0)
    objective.begin_iteration(0, generator)
    norms = [m for m in objective.network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    tracked = [int(m.num_batches_tracked) for m in norms]
    loss = objective.loss(container, real, [0, 1, 2], generator)
    assert norms and not any(m.training for m in norms)  # frozen while the matching loss is computed
    assert [int(m.num_batches_tracked) for m in norms] == [t + 1 for t in tracked]  # one real batch set them
    assert torch.isfinite(loss)


def test_bad_settings_are_refused(gray_spec):
    with pytest.raises(ConfigError, match="distance"):
        create_objective("idc", gray_spec, distance="cosine")
    with pytest.raises(ConfigError, match="outer_loop"):
        create_objective("dc", gray_spec, outer_loop=-1)
    with pytest.raises(ConfigError, match="unknown"):
        create_objective("dsa", gray_spec, renew_every=3)


# ----------------------------------------------------------------------------------------------- schedule
def _recording_train_network(monkeypatch) -> list:
    calls = []
    original = gradient_module.train_network

    def recording(network, epoch_batch, settings, generator, augment=None, on_epoch=None, optimizer=None):
        calls.append((settings, len(epoch_batch(torch.Generator().manual_seed(0)).labels), augment))
        return original(network, epoch_batch, settings, generator, augment, on_epoch, optimizer)

    monkeypatch.setattr(gradient_module, "train_network", recording)
    return calls


def _run(spec, objective_name, container_name="pixels", iterations=3, settings=None, checkpoint=None,
         resume=False, stop_after=None, on_iteration=None, images_per_class=2):
    real, pre = tiny_real(spec)
    container = create_container(container_name, spec, images_per_class, pre)
    objective = create_objective(objective_name, spec, **(FAST[objective_name] if settings is None else settings))
    generator = torch.Generator().manual_seed(7)
    container.initialize(real, generator)

    def after(iteration, loss):
        if on_iteration is not None:
            on_iteration(iteration, objective)
        if stop_after is not None and iteration + 1 == stop_after:
            raise Interrupted

    result = condense(container, objective, real, OptimizerConfig("sgd", 0.1, 0.5), LoopConfig(iterations, 2),
                      generator, checkpoint_path=checkpoint, resume=resume, fingerprint="f", progress=False,
                      on_iteration=after)
    return container, objective, result


def test_dc_renews_its_network_every_outer_loop_and_trains_it_in_between(gray_spec, monkeypatch):
    calls = _recording_train_network(monkeypatch)
    seen = []
    _run(gray_spec, "dsa", iterations=7, settings={**FAST["dsa"], "outer_loop": 3, "inner_loop": 2},
         on_iteration=lambda it, objective: seen.append(
             (objective.networks_created, objective.network_trainings, objective.steps_on_network)))
    # iterations 0..6 -> positions 0,1,2,0,1,2,0: fresh networks at 0, 3, 6; training after positions 0 and 1
    assert [s[0] for s in seen] == [1, 1, 1, 2, 2, 2, 3]
    assert [s[1] for s in seen] == [1, 2, 2, 3, 4, 4, 5]
    assert [s[2] for s in seen] == [1, 2, 0, 1, 2, 0, 1]
    assert len(calls) == 5
    for settings, size, augment in calls:  # inner_loop epochs on the generated set (3 classes x IPC 2)
        assert settings.epochs == 2 and settings.momentum == 0.0 and settings.learning_rate == 0.01
        assert size == 6 and augment is not None  # DSA trains the network with augmentation


def test_dc_loops_follow_the_container_ipc_by_default(gray_spec, monkeypatch):
    calls = _recording_train_network(monkeypatch)
    seen = []
    _run(gray_spec, "dc", iterations=3, settings={"real_per_class": 8}, images_per_class=1,
         on_iteration=lambda it, objective: seen.append(objective.networks_created))
    assert seen == [1, 2, 3] and calls == []  # IPC 1: (1, 1), a fresh network every step, never trained


def test_idc_renews_every_k_iterations_and_trains_on_real_data_with_cutmix(gray_spec, monkeypatch):
    calls = _recording_train_network(monkeypatch)
    seen = []
    _run(gray_spec, "idc", "multi_formation", iterations=5,
         settings=FAST["idc"],
         on_iteration=lambda it, objective: seen.append((objective.networks_created, objective.network_trainings)))
    assert seen == [(1, 1), (1, 1), (2, 2), (2, 2), (3, 3)]  # the epoch before a renewal is skipped
    for settings, size, augment in calls:
        assert settings.epochs == 1 and settings.cutmix_probability == 0.5 and settings.momentum == 0.9
        assert settings.weight_decay == 5e-4 and size == 16 and augment.operations == ("color", "crop")


# ------------------------------------------------------------------------------- determinism and resume
@pytest.mark.parametrize("container_name", ["pixels", "multi_formation"])
@pytest.mark.parametrize("name", ["dc", "dsa", "idc"])
def test_three_engine_iterations_change_the_container_deterministically(gray_spec, name, container_name):
    real, pre = tiny_real(gray_spec)
    start = create_container(container_name, gray_spec, 2, pre)
    start.initialize(real, torch.Generator().manual_seed(7))
    first, _, result = _run(gray_spec, name, container_name)
    second, _, _ = _run(gray_spec, name, container_name)
    assert len(result.losses) == 3 and all(loss > 0 for loss in result.losses)
    for before, a, b in zip(start.parameters(), first.parameters(), second.parameters()):
        assert not torch.equal(before, a)
        assert torch.equal(a, b)


@pytest.mark.parametrize("name,container_name", [("dc", "pixels"), ("dsa", "multi_formation"),
                                                 ("idc", "multi_formation")])
def test_resume_mid_schedule_equals_an_uninterrupted_run(gray_spec, tmp_path, name, container_name):
    # lifetime 3: the checkpoint at iteration 2 holds a network that has already been trained
    settings = {**FAST[name], **({"renew_every": 3} if name == "idc" else {"outer_loop": 3})}
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):
        _run(gray_spec, name, container_name, 4, settings, checkpoint, stop_after=3)
    state = load_checkpoint(checkpoint)
    assert state["iteration"] == 2 and state["objective"]["network"] is not None
    resumed, resumed_objective, resumed_result = _run(gray_spec, name, container_name, 4, settings, checkpoint,
                                                      resume=True)
    uninterrupted, objective, result = _run(gray_spec, name, container_name, 4, settings)
    for a, b in zip(resumed.parameters(), uninterrupted.parameters()):
        assert torch.equal(a, b)
    assert resumed_result.losses == result.losses
    for a, b in zip(resumed_objective.network.parameters(), objective.network.parameters()):
        assert torch.equal(a, b)


