"""Per-class steps: a class's own parameters move only in its own step, with the update they would get alone
(issue item 10: with one tensor for every class, Adam's moments moved every class at every class's step)."""
import pytest
import torch

from condensation.engine.condense import ContainerOptimizer, OptimizerConfig

CLASSES, ROWS = 3, 2


def grads(steps: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(CLASSES * ROWS, 4, generator=generator) for _ in range(steps)]


def run(config: OptimizerConfig, schedule: list[list[int]], gradients: list[torch.Tensor]) -> list[torch.Tensor]:
    """Step a (classes x rows, 4) per-class parameter; the gradient of class c's step is zero outside c's rows,
    as an objective's per-class loss gives. Returns the parameter after every step."""
    parameter = torch.nn.Parameter(torch.ones(CLASSES * ROWS, 4))
    optimizer = ContainerOptimizer(config, [{"params": [parameter], "lr": config.learning_rate}], [parameter], CLASSES)
    history = []
    for classes, gradient in zip(schedule, gradients):
        optimizer.zero_grad()
        mask = torch.zeros(CLASSES * ROWS, 1)
        for c in classes:
            mask[c * ROWS:(c + 1) * ROWS] = 1
        parameter.grad = gradient * mask
        optimizer.step(classes)
        history.append(parameter.detach().clone())
    return history


@pytest.mark.parametrize("name,momentum", [("adam", 0.0), ("sgd", 0.5)])
def test_a_class_does_not_move_in_another_class_step(name, momentum):
    schedule = [[0], [1], [2]] * 4
    history = run(OptimizerConfig(name, 0.1, momentum, isolate_classes=True), schedule, grads(12))
    for step in range(1, 12):
        stepped = schedule[step][0]
        for c in range(CLASSES):
            rows = slice(c * ROWS, (c + 1) * ROWS)
            moved = not torch.equal(history[step][rows], history[step - 1][rows])
            assert moved == (c == stepped), (step, c)


@pytest.mark.parametrize("name,momentum", [("adam", 0.0), ("sgd", 0.5)])
def test_each_class_gets_the_update_it_would_get_alone(name, momentum):
    gradients = grads(12)
    schedule = [[0], [1], [2]] * 4
    interleaved = run(OptimizerConfig(name, 0.1, momentum, isolate_classes=True), schedule, gradients)[-1]
    for c in range(CLASSES):
        alone = torch.nn.Parameter(torch.ones(ROWS, 4))
        reference = (torch.optim.Adam([alone], lr=0.1) if name == "adam" else
                     torch.optim.SGD([alone], lr=0.1, momentum=momentum))
        for step, gradient in enumerate(gradients):
            if schedule[step] == [c]:
                alone.grad = gradient[c * ROWS:(c + 1) * ROWS].clone()
                reference.step()
        torch.testing.assert_close(interleaved[c * ROWS:(c + 1) * ROWS], alone.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,momentum", [("adam", 0.0), ("sgd", 0.5)])
def test_one_group_of_all_classes_is_torchs_optimizer(name, momentum):
    gradients = grads(5, seed=3)
    ours = run(OptimizerConfig(name, 0.05, momentum, isolate_classes=True), [[0, 1, 2]] * 5, gradients)[-1]
    parameter = torch.nn.Parameter(torch.ones(CLASSES * ROWS, 4))
    reference = (torch.optim.Adam([parameter], lr=0.05) if name == "adam" else
                 torch.optim.SGD([parameter], lr=0.05, momentum=momentum))
    for gradient in gradients:
        parameter.grad = gradient.clone()
        reference.step()
    torch.testing.assert_close(ours, parameter.detach(), rtol=1e-6, atol=1e-7)


def test_without_isolation_momentum_moves_every_class_as_in_idcs_code():
    schedule = [[0], [1], [2]] * 2
    history = run(OptimizerConfig("sgd", 0.1, 0.5, isolate_classes=False), schedule, grads(6))
    # class 0's rows keep moving (momentum) during classes 1 and 2's steps, as IDC's single SGD optimizer does
    assert not torch.equal(history[1][:ROWS], history[0][:ROWS])


def test_shared_parameters_still_step_every_time():
    shared = torch.nn.Parameter(torch.zeros(3))
    own = torch.nn.Parameter(torch.zeros(CLASSES, 2))
    optimizer = ContainerOptimizer(OptimizerConfig("adam", 0.1, isolate_classes=True),
                                   [{"params": [shared, own], "lr": 0.1}], [own], CLASSES)
    for c in range(CLASSES):
        optimizer.zero_grad()
        shared.grad, own.grad = torch.ones(3), torch.ones(CLASSES, 2)
        optimizer.step([c])
    assert optimizer.shared.state[shared]["step"] == 3
    state = optimizer.state_dict()
    assert state["rowwise"][0]["step"].tolist() == [1.0, 1.0, 1.0]


def test_hmn_memories_of_a_class_stay_put_in_other_classes_idc_steps():
    """End to end: HMN (Adam) with IDC's per-class steps and isolation asked for (not the recipe's default)."""
    from condensation.containers import create_container
    from condensation.data.datasets import DataSpec
    from condensation.engine.condense import LoopConfig, condense
    from condensation.objectives import create_objective
    from tests.conftest import tiny_real

    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"), flip_allowed=False)
    real, preprocessing = tiny_real(spec)
    container = create_container("hmn", spec, 4, preprocessing, dataset_channels=2, feature_channels=3,
                                 class_channels=1, instance_channels=1, decoder_width=4)
    container.initialize(real, torch.Generator().manual_seed(0))
    objective = create_objective("idc", spec, real_per_class=6, synthetic_per_class=4, real_training_images=12,
                                 network="convnet_w32")
    snapshots = []
    original = ContainerOptimizer.step

    def step(self, classes):
        before = [p.detach().clone() for p in container.per_class_parameters()]
        original(self, classes)
        snapshots.append((classes, before, [p.detach().clone() for p in container.per_class_parameters()]))

    ContainerOptimizer.step = step
    try:
        condense(container, objective, real, OptimizerConfig("adam", 1e-2, isolate_classes=True), LoopConfig(2, 0),
                 torch.Generator().manual_seed(1), progress=False)
    finally:
        ContainerOptimizer.step = original
    assert len(snapshots) == 2 * 3
    for classes, before, after in snapshots:
        for old, new in zip(before, after):
            per_class = old.shape[0] // 3
            for c in range(3):
                rows = slice(c * per_class, (c + 1) * per_class)
                assert torch.equal(old[rows], new[rows]) == (c not in classes)


def test_isolation_is_opt_in_as_no_official_code_keeps_per_class_optimizer_state():
    # DC, DM, IDC, MTT, HaBa and RTP's code each keep one optimizer over whole tensors
    assert OptimizerConfig().isolate_classes is False
    schedule = [[0], [1], [2]] * 2
    default, explicit = (run(config, schedule, grads(6)) for config in
                         (OptimizerConfig("adam", 0.1, 0.0), OptimizerConfig("adam", 0.1, 0.0, isolate_classes=False)))
    torch.testing.assert_close(default[-1], explicit[-1], rtol=0, atol=0)
