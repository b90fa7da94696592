"""Class-sharded condensation and distributed evaluation on gloo (CPU): an N-rank run gives the 1-process result.

Two kinds of test: whole runs launched by torchrun (``python -m torch.distributed.run``) as a user would, and
engine-level checks in processes started here with a file-based gloo rendezvous (no ports to collide)."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import traceback
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from condensation import distributed
from condensation.containers import create_container
from condensation.data import DataSpec, Preprocessing, Split
from condensation.engine.condense import LoopConfig, OptimizerConfig, condense
from condensation.engine.real import RealPool
from condensation.objectives import create_objective
from condensation.run import RunConfig, distill

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _torchrun(ranks: int, arguments: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "condensation.cli", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


RUNS = {
    # pixels: every gradient row belongs to one rank, so the all-reduce adds zeros and the result is bit-identical
    "dm-pixels": dict(recipe="dm", container=None, learning_rate=None, optimizer=None),
    # HMN's dataset memory and decoder are shared: their gradients are sums over ranks in another order
    "dm-hmn": dict(recipe="dm", container="hmn", learning_rate=1e-3, optimizer="adam"),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_two_ranks_on_gloo_give_the_one_process_artifact_and_accuracies(tmp_path, name):
    settings = RUNS[name]
    one = RunConfig(dataset="digits", ipc=2, iterations=3, protocol="smoke", out=str(tmp_path / "one"), progress=False,
                    objective_settings={"real_per_class": 16}, protocol_settings={"networks": 3},
                    **{k: v for k, v in settings.items() if v is not None})
    expected = distill(one)
    flags = ["distill", "--dataset", "digits", "--ipc", "2", "--iterations", "3", "--protocol", "smoke", "--quiet",
             "--objective-set", "real_per_class=16", "--protocol-set", "networks=3", "--out", str(tmp_path / "two"),
             "--recipe", settings["recipe"]]
    for flag, key in (("--container", "container"), ("--lr", "learning_rate"), ("--optimizer", "optimizer")):
        if settings[key] is not None:
            flags += [flag, str(settings[key])]
    done = _torchrun(2, flags)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    # the same networks (dealt to two ranks) reach the same accuracies, in the same order
    assert results["accuracy"] == expected["accuracy"]
    stored_one = load_file(str(tmp_path / "one" / "container.safetensors"))
    stored_two = load_file(str(tmp_path / "two" / "container.safetensors"))
    assert stored_one.keys() == stored_two.keys()
    for key in stored_one:
        if name == "dm-pixels":
            assert torch.equal(stored_one[key], stored_two[key]), key
        else:  # float32 sums of two partial gradients instead of one: rounding, nothing more
            torch.testing.assert_close(stored_two[key], stored_one[key], rtol=1e-4, atol=1e-5)
    # only rank 0 wrote: one metrics file with one row per logged iteration
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [0, 2]


def test_an_objective_that_does_not_split_over_classes_is_refused_with_several_ranks(tmp_path):
    done = _torchrun(2, ["distill", "--recipe", "rtp", "--dataset", "digits", "--ipc", "1", "--iterations", "1",
                         "--protocol", "smoke", "--quiet", "--out", str(tmp_path / "run")])
    assert done.returncode != 0
    assert "does not split over classes" in done.stderr and "(rank 0)" in done.stderr
    assert not (tmp_path / "run" / "metadata.json").exists()


# ------------------------------------------------------------------------------ engine-level, own processes
def _spawn(function, ranks: int, tmp_path: Path, *args) -> list:
    """Run ``function(tmp_path, *args)`` in ``ranks`` processes joined by gloo; each one's return value or error."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    store = tmp_path / f"store-{uuid.uuid4().hex}"  # a file store serves one process group only
    processes = [context.Process(target=_worker, args=(function, rank, ranks, str(store), queue, tmp_path, args))
                 for rank in range(ranks)]
    for process in processes:
        process.start()
    outcomes = dict(queue.get(timeout=240) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    return [outcomes[rank] for rank in range(ranks)]


def _worker(function, rank, ranks, store, queue, tmp_path, args):
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        if ranks > 1:
            dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=ranks)
        outcome = ("ok", function(tmp_path, *args))
    except BaseException as error:  # noqa: BLE001 - reported to the test, whatever it is
        outcome = ("error", type(error).__name__, str(error), traceback.format_exc())
    queue.put((rank, outcome))
    if ranks > 1 and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a peer may be gone already
            pass


def _gradients(tmp_path):
    """Rank r has gradient r+1 on ``a``, ``b`` only on rank 0, none on ``c`` anywhere."""
    a, b, c = (torch.zeros(3, requires_grad=True) for _ in range(3))
    a.grad = torch.full((3,), float(distributed.rank() + 1))
    if distributed.rank() == 0:
        b.grad = torch.ones(3)
    loss = distributed.all_reduce_gradients([a, b, c], torch.tensor(float(distributed.rank() + 10)))
    return a.grad.tolist(), b.grad.tolist(), c.grad, float(loss)


def test_gradients_and_loss_are_summed_and_a_missing_gradient_stays_missing(tmp_path):
    for outcome in _spawn(_gradients, 2, tmp_path):
        assert outcome[0] == "ok", outcome
        a, b, c, loss = outcome[1]
        assert a == [3.0, 3.0, 3.0] and b == [1.0, 1.0, 1.0] and c is None and loss == 21.0


def _different_configs(tmp_path):
    distributed.check_same({"ipc": 1 + distributed.rank()}, "run configurations")


def test_ranks_started_with_different_configurations_are_refused(tmp_path):
    for outcome in _spawn(_different_configs, 2, tmp_path):
        assert outcome[:2] == ("error", "ConfigError") and "rank(s) 1 differ from rank 0" in outcome[2]


def _rank_one_dies(tmp_path):
    if distributed.rank() == 1:
        os._exit(3)  # killed: no clean shutdown, no message
    distributed.all_reduce_gradients([torch.zeros(2, requires_grad=True)], 0.0)


def test_a_rank_that_dies_stops_the_others_with_a_message(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_worker, args=(_rank_one_dies, rank, 2, str(tmp_path / "store"), queue,
                                                       tmp_path, ())) for rank in range(2)]
    for process in processes:
        process.start()
    rank, outcome = queue.get(timeout=240)  # only rank 0 reports; rank 1 died
    for process in processes:
        process.join(timeout=60)
    assert rank == 0 and outcome[:2] == ("error", "DistributedError"), outcome
    assert "lost the other ranks during the gradient all-reduce" in outcome[2]
    assert processes[1].exitcode == 3


def _too_many_ranks(tmp_path):
    spec = DataSpec(1, 6, 6, 2, ("a", "b"), flip_allowed=False)
    container, objective, real = _tiny_problem(spec, "pixels")
    condense(container, objective, real, OptimizerConfig(), LoopConfig(1, 0), torch.Generator().manual_seed(0),
             progress=False)


def test_more_ranks_than_classes_are_refused(tmp_path):
    for outcome in _spawn(_too_many_ranks, 3, tmp_path):
        assert outcome[:2] == ("error", "ConfigError") and "3 ranks but only 2 classes" in outcome[2]


SPEC = DataSpec(1, 12, 12, 4, ("a", "b", "c", "d"), flip_allowed=False)


def _tiny_problem(spec=SPEC, container_name="hmn"):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(spec.num_classes * 10, 1, spec.height, spec.width, generator=generator)
    labels = torch.arange(spec.num_classes).repeat_interleave(10)
    preprocessing = Preprocessing("normalize").fit(images)
    real = RealPool(Split(images, labels), spec.num_classes, preprocessing)
    container = create_container(container_name, spec, 1, preprocessing)
    container.initialize(real, torch.Generator().manual_seed(2))
    objective = create_objective("dm", spec, real_per_class=6, network="mlp")
    return container, objective, real


class _Stop(Exception):
    pass


def _condense_tiny(tmp_path, iterations, stop_after, resume, run_name):
    """4 iterations of DM on a tiny HMN container, checkpoint every 2; stop (as a kill) after ``stop_after``."""
    container, objective, real = _tiny_problem()

    def hook(iteration, loss):
        if iteration + 1 == stop_after:
            raise _Stop

    try:
        condense(container, objective, real, OptimizerConfig(name="adam", learning_rate=1e-2), LoopConfig(iterations, 2),
                 torch.Generator().manual_seed(3), checkpoint_path=tmp_path / f"{run_name}.pt", resume=resume,
                 fingerprint="tiny", progress=False, on_iteration=hook if stop_after else None)
    except _Stop:
        return None
    return {k: v.tolist() for k, v in container.state_dict().items()}  # plain data: the process ends at once


def test_a_checkpoint_of_two_ranks_resumes_with_two_or_with_one(tmp_path):
    reference = _spawn(_condense_tiny, 1, tmp_path, 4, 0, False, "reference")[0]
    assert reference[0] == "ok", reference
    for resumed_ranks in (2, 1):
        name = f"killed-then-{resumed_ranks}"
        stopped = _spawn(_condense_tiny, 2, tmp_path, 4, 3, False, name)  # checkpoint at 2, killed during the 4th
        assert all(outcome == ("ok", None) for outcome in stopped), stopped
        for outcome in _spawn(_condense_tiny, resumed_ranks, tmp_path, 4, 0, True, name):
            assert outcome[0] == "ok", outcome
            for key, value in reference[1].items():
                torch.testing.assert_close(torch.tensor(outcome[1][key]), torch.tensor(value), rtol=1e-4, atol=1e-5)
