"""Class-incremental continual learning (condensation.continual): streams, budgets, what each task sees, what
each evaluation tests on, resuming after a kill, the plot and the report section."""
from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

import condensation.continual as continual_module
from condensation.containers import create_container
from condensation.continual import (ContinualConfig, StoredMemory, continual, get_stream, load_stream_data,
                                    mnist_fashion_mnist, split_fashion_mnist, split_mnist)
from condensation.results.continual import load_continual, markdown_table, plot_continual
from condensation.data import DataSpec, Preprocessing, Split, load_dataset
from condensation.data.datasets import class_subset
from condensation.engine.real import RealPool
from condensation.errors import ArtifactError, BudgetError, ConfigError
from condensation.report import write_html_report

DIGIT_FLOATS = 1 * 8 * 8  # C x H x W of scikit-learn's digits
FASHION_FLOATS = 1 * 28 * 28


def _config(tmp_path, name="run", **overrides) -> ContinualConfig:
    values = dict(stream="split-digits", recipe="dm", ipc=1, iterations=2, protocol="smoke", out=str(tmp_path / name),
                  progress=False, objective_settings={"real_per_class": 16})
    values.update(overrides)
    return ContinualConfig(**values)


def _three_task_stream(tmp_path) -> str:
    path = tmp_path / "three.toml"
    path.write_text('name = "three-digit-tasks"\n' + "".join(
        f"[[tasks]]\ndataset = \"digits\"\nclasses = [{a}, {b}]\n" for a, b in ((0, 1), (2, 3), (4, 5))))
    return str(path)


# ------------------------------------------------------------------------------------------------ streams
def test_split_streams_draw_their_class_order_from_the_seed():
    for stream in (split_fashion_mnist, split_mnist):
        first, again, other = stream(0), stream(0), stream(1)
        assert first == again and first.order_seed == 0 and other.order_seed == 1
        assert [task.classes for task in first.tasks] != [task.classes for task in other.tasks]
        assert len(first.tasks) == 5 and all(len(task.classes) == 2 for task in first.tasks)
        assert sorted(c for task in first.tasks for c in task.classes) == list(range(10))
    assert get_stream("split-fashion-mnist", 3) == split_fashion_mnist(3)
    with pytest.raises(ConfigError, match="unknown stream 'split-cifar'.*split-fashion-mnist"):
        get_stream("split-cifar", 0)


def test_a_run_records_the_class_order_and_stream_seed_reproduces_it(tmp_path):
    record = continual(_config(tmp_path, recipe="random", stream_seed=7))
    order = [task["classes"] for task in record["stream"]["tasks"]]
    assert order == [list(task.classes) for task in get_stream("split-digits", 7).tasks]
    assert record["stream"]["order_seed"] == 7
    assert [task["stream_labels"] for task in record["stream"]["tasks"]] == [[2 * t, 2 * t + 1] for t in range(5)]
    assert record["label_names"] == [str(c) for task in order for c in task]  # digits' class names are digits
    # each task's own run directory condensed exactly its classes, under the run's seed
    for number, classes in enumerate(order, 1):
        metadata = json.loads((tmp_path / "run" / f"task-{number}" / "metadata.json").read_text())
        assert metadata["config"]["dataset_settings"]["classes"] == classes and metadata["seed"] == 0


def test_mnist_then_fashion_mnist_keeps_their_labels_apart(shared_data):
    stream = mnist_fashion_mnist(0)
    tasks = load_stream_data(stream, ContinualConfig(stream="mnist-fashion-mnist", recipe="random",
                                                     data_root=str(shared_data)))
    assert [t.task.dataset for t in tasks] == ["mnist", "fashion_mnist"]
    assert tasks[0].stream_labels == list(range(10)) and tasks[1].stream_labels == list(range(10, 20))
    for task, name, offset in ((tasks[0], "mnist", 0), (tasks[1], "fashion_mnist", 10)):
        test = load_dataset(name, shared_data).test
        assert len(task.test) == 10_000 and torch.equal(task.test.labels.unique(), torch.arange(offset, offset + 10))
        for c in range(10):  # digit c is stream label c, piece of clothing c is 10 + c: never the same label
            assert torch.equal(task.test.images[task.test.labels == offset + c], test.images[test.labels == c])


def test_a_stream_file_names_classes_of_an_image_folder(tmp_path):
    """A user's own stream: an image folder of four classes as two tasks, classes named by folder."""
    generator = torch.Generator().manual_seed(0)
    for c, name in enumerate(("ant", "bee", "cat", "dog")):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for i in range(10):  # one brightness level per class, so that the classes are learnable
            pixels = (c * 60 + torch.randint(0, 40, (8, 8, 3), generator=generator)).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "folder" / name / f"{i}.png")
    stream = tmp_path / "pets.toml"
    stream.write_text(f'[[tasks]]\ndataset = "image_folder"\ndata_root = "{tmp_path / "folder"}"\n'
                      'classes = ["dog", "ant"]\n'
                      f'[[tasks]]\ndataset = "image_folder"\ndata_root = "{tmp_path / "folder"}"\nclasses = [1, 2]\n')
    record = continual(_config(tmp_path, stream=str(stream), recipe="random"))
    tasks = record["stream"]["tasks"]
    assert record["stream"]["name"] == "pets"
    assert [t["classes"] for t in tasks] == [[3, 0], [1, 2]]
    assert [t["class_names"] for t in tasks] == [["dog", "ant"], ["bee", "cat"]]
    assert record["tasks"][-1]["classes_seen"] == 4
    assert record["total_stored_floats"] == 4 * 1 * 3 * 8 * 8


@pytest.mark.parametrize("tasks, message", [
    ('classes = [0, 1]\n[[tasks]]\ndataset = "digits"\nclasses = [1, 2]', "more than one place"),
    ("classes = [3]", "a task needs at least two"),
    ("classes = [3, 10]", "not a class index"),
    ('classes = ["three", "4"]', "no class 'three'"),
    ('classes = [0, 1]\nsize = 3', "task 1 setting.*size; allowed: classes"),
])
def test_malformed_streams_are_refused_before_any_task_runs(tmp_path, tasks, message):
    stream = tmp_path / "bad.toml"
    stream.write_text(f'[[tasks]]\ndataset = "digits"\n{tasks}\n')
    with pytest.raises(ConfigError, match=message):
        continual(_config(tmp_path, stream=str(stream)))
    assert not (tmp_path / "run").exists()


def test_class_subset_keeps_the_full_datasets_split_and_relabels_in_order():
    full = load_dataset("digits")
    subset = load_dataset("digits", classes=[7, 2])
    assert subset.spec.num_classes == 2 and subset.spec.class_names == ("7", "2")
    for name in ("train", "validation", "test"):
        whole, part = getattr(full, name), getattr(subset, name)
        for new, old in ((0, 7), (1, 2)):  # the same images, in the same order, under the new label
            assert torch.equal(part.images[part.labels == new], whole.images[whole.labels == old])
        assert len(part) == int(((whole.labels == 7) | (whole.labels == 2)).sum())
    for bad in ([], [2, 2], [10], "7"):
        with pytest.raises(ConfigError):
            class_subset(full, bad)


# ------------------------------------------------------------------------------------------------- budget
def test_pixels_store_tasks_x_classes_x_ipc_images_and_each_task_stays_within_its_budget(tmp_path):
    record = continual(_config(tmp_path, recipe="random", ipc=2))
    assert record["total_stored_floats"] == 5 * 2 * 2 * DIGIT_FLOATS == record["total_budget_floats"]
    so_far = 0
    for entry in record["tasks"]:
        assert entry["stored_floats"] == entry["budget_floats"] == 2 * 2 * DIGIT_FLOATS
        so_far += entry["stored_floats"]
        assert entry["stored_floats_so_far"] == so_far


def test_containers_with_shared_parts_count_them_once_per_task_within_its_budget(tmp_path):
    # RTP's memories: 2 memories of 4 x 4 (ds 2) per task, shared by the task's two classes
    record = continual(_config(tmp_path, recipe="rtp", ipc=2, iterations=1, container_settings={"bases": 2},
                               objective_settings={"inner_steps": 2, "synthetic_per_class": 4}))
    for entry in record["tasks"]:
        parts = entry["stored_floats_by_part"]
        assert parts["memories"] == 2 * 4 * 4  # the task's own memories, counted in its own budget
        assert entry["stored_floats"] == sum(parts.values()) <= entry["budget_floats"] == 2 * 2 * DIGIT_FLOATS
    assert record["total_stored_floats"] == sum(e["stored_floats"] for e in record["tasks"]) <= record["total_budget_floats"]


@pytest.mark.parametrize("later", [1, 0])
def test_later_tasks_address_the_stored_memories_and_pay_only_for_their_addresses(tmp_path, later):
    """reuse_memories: task t addresses every earlier task's memories (frozen, exactly as stored) plus ``later``
    new ones (0: addresses only)."""
    from condensation.artifacts import load_artifact

    record = continual(_config(tmp_path, recipe="rtp", ipc=2, iterations=1, container_settings={"bases": 2},
                               objective_settings={"inner_steps": 2, "synthetic_per_class": 4},
                               reuse_memories=True, later_bases=later))
    # B = 2 classes x 2 x 64 = 256 per task; a memory is 4 x 4 = 16 floats; task t's addresses cover every memory
    # so far, K_t = 2 + (t - 1) x later: r = (256 - 16 x own) // (2 x K_t)
    addressed = [2 + (t - 1) * later for t in range(1, 6)]
    own = [2] + [later] * 4
    images_per_class = [(256 - 16 * own[t]) // (2 * addressed[t]) for t in range(5)]
    assert images_per_class == ([56, 40, 30, 24, 20] if later else [56, 64, 64, 64, 64])
    artifacts = [load_artifact(tmp_path / "run" / f"task-{t}") for t in range(1, 6)]
    memories = []
    for t, (entry, artifact) in enumerate(zip(record["tasks"], artifacts)):
        container, r = artifact.container, images_per_class[t]
        assert container.generated_per_class() == r and entry["generated_images"] == 2 * r
        assert entry["stored_floats_by_part"] == {"memories": own[t] * 16, "addresses": 2 * r * addressed[t]}
        assert entry["stored_floats"] == own[t] * 16 + 2 * r * addressed[t] <= entry["budget_floats"] == 256
        if memories:  # exactly the earlier tasks' memories, in task order, untouched by this task's training
            assert torch.equal(container.reused_memories, torch.cat(memories))
        memories.append(container.memories.detach())
        assert torch.equal(container.generate_all().images, artifact.generated_images)
    assert record["total_stored_floats"] == sum(e["stored_floats"] for e in record["tasks"]) == (
        16 * sum(own) + sum(2 * r * k for r, k in zip(images_per_class, addressed)))
    assert record["config"]["reuse_memories"] is True and record["label"] == "rtp (reused memories)"


def test_memory_reuse_needs_the_memories_container(tmp_path):
    with pytest.raises(ConfigError, match="reuse_memories needs the memories container .*'dm' condenses into 'pixels'"):
        continual(_config(tmp_path, reuse_memories=True))
    with pytest.raises(ConfigError, match="later_bases .* with reuse_memories"):
        continual(_config(tmp_path, recipe="rtp", later_bases=0))
    assert not (tmp_path / "run").exists()


def test_a_budget_a_task_cannot_meet_fails_before_any_condensing(tmp_path):
    # 16 memories of 4 x 4 need 256 floats; a task of two digit classes at IPC 1 has 128
    with pytest.raises(BudgetError, match="task 1 .*memories"):
        continual(_config(tmp_path, recipe="rtp"))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- what a task sees, what is tested
@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory, shared_data):
    """Split-Fashion-MNIST, random real images at IPC 1 under the smoke protocol (2 networks), recording every
    dataset ``distill`` loaded, every real pool it condensed from and every evaluation's splits and memory."""
    torch.set_num_threads(1)  # module fixtures start before conftest's per-test thread limit
    out = tmp_path_factory.mktemp("fashion") / "run"
    seen = {"datasets": [], "pools": [], "evaluations": []}
    load, pool, evaluate = continual_module.load_dataset, RealPool, continual_module.evaluate_on_splits

    def loading(*args, **kwargs):
        dataset = load(*args, **kwargs)
        seen["datasets"].append(dataset)
        return dataset

    def pooling(split, *args, **kwargs):
        seen["pools"].append(split)
        return pool(split, *args, **kwargs)

    def evaluating(memory, splits, *args, **kwargs):
        batch = memory.evaluation_source()(torch.Generator().manual_seed(0))
        seen["evaluations"].append({"splits": splits, "spec": memory.spec, "labels": batch.labels.cpu()})
        return evaluate(memory, splits, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("condensation.run.load_dataset", loading)
        patch.setattr("condensation.run.RealPool", pooling)
        patch.setattr("condensation.continual.evaluate_on_splits", evaluating)
        record = continual(ContinualConfig(stream="split-fashion-mnist", recipe="random", ipc=1, protocol="smoke",
                                           protocol_settings={"networks": 2, "test_limit": 100},
                                           data_root=str(shared_data), out=str(out), progress=False))
    return {"record": record, "out": out, **seen, "full": load_dataset("fashion_mnist", shared_data)}


def test_fashion_mnist_stream_stores_ten_images_and_reports_every_task(fashion_run):
    record = fashion_run["record"]
    assert record["finished"] and len(record["tasks"]) == 5
    assert record["total_stored_floats"] == 5 * 2 * 1 * FASHION_FLOATS == 7_840
    assert [e["classes_seen"] for e in record["tasks"]] == [2, 4, 6, 8, 10]
    for entry in record["tasks"]:
        assert entry["accuracy"]["convnet"]["n"] == 2 and len(entry["accuracy"]["convnet"]["values"]) == 2
        assert set(entry["accuracy_by_task"]) == {f"task-{j}" for j in range(1, entry["task"] + 1)}
    after = record["accuracy_after_task"]["convnet"]
    assert after == [e["accuracy"]["convnet"]["mean"] for e in record["tasks"]]
    last = record["tasks"][-1]["accuracy_by_task"]
    assert record["final_average_accuracy"]["convnet"] == pytest.approx(sum(s["convnet"]["mean"] for s in last.values()) / 5)
    assert record["average_incremental_accuracy"]["convnet"] == pytest.approx(sum(after) / 5)
    assert load_continual(fashion_run["out"]) == record


def test_each_task_condenses_from_its_own_classes_training_images_only(fashion_run):
    full, order = fashion_run["full"], [t["classes"] for t in fashion_run["record"]["stream"]["tasks"]]
    task_datasets = [d for d in fashion_run["datasets"] if d.source.get("classes")]
    assert [d.source["classes"] for d in task_datasets] == order
    assert len(fashion_run["datasets"]) == 5  # distill loaded nothing but the five task subsets
    for dataset, classes, pool in zip(task_datasets, order, fashion_run["pools"][::2]):
        assert pool is dataset.train  # what the task condensed (selected) from
        for name in ("train", "validation"):
            part, whole = getattr(dataset, name), getattr(full, name)
            assert torch.equal(part.labels.unique(), torch.arange(2))
            assert len(part) == int(sum((whole.labels == c).sum() for c in classes))
            for new, old in enumerate(classes):
                assert torch.equal(part.images[part.labels == new], whole.images[whole.labels == old])


def test_evaluation_after_task_t_tests_only_on_the_classes_seen_so_far(fashion_run):
    full, tasks = fashion_run["full"], fashion_run["record"]["stream"]["tasks"]
    assert len(fashion_run["evaluations"]) == 5
    for t, evaluation in enumerate(fashion_run["evaluations"], 1):
        seen_classes = [c for task in tasks[:t] for c in task["classes"]]  # stream label i = seen_classes[i]
        assert list(evaluation["splits"]) == [f"task-{j}" for j in range(1, t + 1)]  # no future task's images
        test = Split(torch.cat([s.images for s in evaluation["splits"].values()]),
                     torch.cat([s.labels for s in evaluation["splits"].values()]))
        assert torch.equal(test.labels.unique(), torch.arange(2 * t))
        assert len(test) == 1000 * 2 * t  # Fashion-MNIST's test split holds 1,000 images per class
        for label, c in enumerate(seen_classes):
            assert torch.equal(test.images[test.labels == label], full.test.images[full.test.labels == c])
        # the protocol's test_limit of 100 applies per task: 100 images of each seen task
        assert fashion_run["record"]["tasks"][t - 1]["test_images"] == 100 * t
        assert evaluation["spec"].num_classes == 2 * t  # the network has one output per seen class
        # and it trains on one stored image of each seen class, under its stream label
        assert torch.equal(evaluation["labels"].sort().values, torch.arange(2 * t))


# ------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("where", ["condensation", "evaluation"])
def test_a_run_killed_during_the_third_task_resumes_to_the_uninterrupted_numbers(tmp_path, monkeypatch, where):
    stream = _three_task_stream(tmp_path)
    settings = dict(stream=stream, iterations=4, checkpoint_every=2, protocol_settings={"networks": 2})
    straight = continual(_config(tmp_path, "straight", **settings))

    import condensation.engine.condense as engine

    condense, evaluate = engine.condense, continual_module.evaluate_on_splits

    def killed_condense(*args, **kwargs):  # a kill after task 3's checkpoint at iteration 2
        if "task-3" in str(kwargs.get("checkpoint_path")):
            kwargs["on_iteration"] = lambda iteration, loss: _raise(KeyboardInterrupt) if iteration == 2 else None
        return condense(*args, **kwargs)

    def killed_evaluate(memory, *args, **kwargs):  # a kill while task 3's networks train
        if len(memory.containers) == 3:
            raise KeyboardInterrupt
        return evaluate(memory, *args, **kwargs)

    if where == "condensation":
        monkeypatch.setattr("condensation.run.condense", killed_condense)
    else:
        monkeypatch.setattr("condensation.continual.evaluate_on_splits", killed_evaluate)
    config = _config(tmp_path, "killed", **settings)
    with pytest.raises(KeyboardInterrupt):
        continual(config)
    killed = tmp_path / "killed"
    partial = json.loads((killed / "continual.json").read_text())
    assert len(partial["tasks"]) == 2 and not partial["finished"]
    assert (killed / ("task-3/checkpoint.pt" if where == "condensation" else "task-3/metadata.json")).exists()
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="pass --resume"):
        continual(config)
    resumed = continual(config, resume=True)

    def numbers(record):
        return [(e["accuracy"], e["accuracy_by_task"], e["stored_floats_so_far"]) for e in record["tasks"]], \
            {k: record[k] for k in ("final_accuracy", "final_average_accuracy", "average_incremental_accuracy",
                                    "total_stored_floats")}

    assert numbers(resumed) == numbers(straight)
    for number in (1, 2, 3):
        assert (killed / f"task-{number}" / "container.safetensors").read_bytes() == \
            (tmp_path / "straight" / f"task-{number}" / "container.safetensors").read_bytes()
    assert not (killed / "task-3" / "checkpoint.pt").exists()


def _raise(error):
    raise error


def test_finished_and_foreign_directories_are_never_overwritten(tmp_path):
    config = _config(tmp_path, recipe="random")
    record = continual(config)
    before = (tmp_path / "run" / "continual.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a finished continual run"):
        continual(config)
    assert continual(config, resume=True) == record  # nothing left to do
    with pytest.raises(ConfigError, match="another configuration"):
        continual(_config(tmp_path, recipe="random", ipc=2), resume=True)
    assert (tmp_path / "run" / "continual.json").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no continual run"):
        continual(_config(tmp_path, "other", recipe="random"))
    with pytest.raises(ConfigError, match="nothing to resume"):
        continual(_config(tmp_path, "fresh", recipe="random"), resume=True)


# ------------------------------------------------------------------------------------------ stored memory
def test_stored_memory_maps_every_task_into_task_ones_input_space_with_stream_labels():
    spec = DataSpec(1, 4, 4, 2, ("a", "b"))
    generator = torch.Generator().manual_seed(0)
    containers = []
    for brightness in (0.2, 0.8):  # two tasks whose preprocessings differ
        images = (brightness + 0.1 * torch.rand(6, 1, 4, 4, generator=generator)).clamp(0, 1)
        preprocessing = Preprocessing("normalize").fit(images)
        pixels = create_container("pixels", spec, 1, preprocessing)
        pixels.initialize(RealPool(Split(images, torch.tensor([0, 1] * 3)), 2, preprocessing), generator)
        containers.append(pixels)
    memory = StoredMemory(containers, [0, 2], DataSpec(1, 4, 4, 4, ("a", "b", "c", "d")))
    batch = memory.evaluation_source()(None)
    assert torch.equal(batch.labels, torch.tensor([0, 1, 2, 3]))
    first, second = (c.generate_all() for c in containers)
    assert torch.equal(batch.images[:2], first.images)  # task 1's space is the stream's: untouched
    pixels_of_second = containers[1].preprocessing.inverse(second.images)
    assert torch.allclose(batch.images[2:], containers[0].preprocessing(pixels_of_second), atol=1e-5)
    assert memory.stored_floats() == 2 * 2 * 16


# ---------------------------------------------------------------------------------- plot, table, report
def _colors(png: bytes) -> set[tuple[int, int, int]]:
    return {color for _, color in Image.open(io.BytesIO(png)).convert("RGB").getcolors(1 << 24)}


def test_the_plot_has_a_panel_per_ipc_and_a_line_per_method(tmp_path):
    runs = [continual(_config(tmp_path, f"{recipe}-{ipc}", recipe=recipe, ipc=ipc))
            for recipe in ("random", "dm") for ipc in (1, 2)]
    png = plot_continual([tmp_path / f"{recipe}-{ipc}" for recipe in ("random", "dm") for ipc in (1, 2)])
    wide, one = Image.open(io.BytesIO(png)), Image.open(tmp_path / "dm-1" / "continual.png")
    assert wide.width == 2 * one.width  # IPC 1 and IPC 2: two panels
    colors = _colors(png)
    assert {(0x4e, 0x79, 0xa7), (0xf2, 0x8e, 0x2b)} <= colors  # random's line and dm's
    assert (0xf2, 0x8e, 0x2b) not in _colors((tmp_path / "random-1" / "continual.png").read_bytes())
    # drawn alone, dm takes the first colour; given the order of every plot, it keeps its colour (orange)
    alone, ordered = plot_continual([tmp_path / "dm-1"]), plot_continual([tmp_path / "dm-1"], color_order=["random", "dm"])
    assert (0x4e, 0x79, 0xa7) in _colors(alone) and (0xf2, 0x8e, 0x2b) not in _colors(alone)
    assert (0xf2, 0x8e, 0x2b) in _colors(ordered) and (0x4e, 0x79, 0xa7) not in _colors(ordered)
    table = markdown_table(runs)
    assert table.count("\n| random |") == 2 and table.count("\n| dm |") == 2 and "after task 5" in table


def test_the_report_gives_continual_runs_their_own_section(tmp_path):
    record = continual(_config(tmp_path, recipe="random"))
    record["label"] = "<script>alert(1)</script>"  # a hostile directory must not inject markup
    (tmp_path / "run" / "continual.json").write_text(json.dumps(record))
    page = write_html_report([tmp_path / "run", tmp_path / "run" / "task-1"], tmp_path / "report.html").read_text()
    section = page[page.index("<section id='continual'>"):]
    assert "<h2>Continual learning</h2>" in section and "Leaderboard" in page  # task-1 is an ordinary run
    assert section.count("<tr><td>") == 5 and "data:image/png;base64," in section
    first = record["tasks"][0]["accuracy"]["convnet"]["mean"]
    assert f"{first:.2f} (n=1)" in section and "7,840" not in section and "640" in section
    assert "<script>" not in page and "&lt;script&gt;" in section
    (tmp_path / "run" / "continual.json").write_text('{"kind": "continual"}')
    with pytest.raises(ArtifactError, match="label is missing"):
        write_html_report([tmp_path / "run"], tmp_path / "broken.html")


def test_the_command_runs_and_prints_the_table(tmp_path, capsys):
    from condensation.cli import main

    assert main(["continual", "--stream", "split-digits", "--recipe", "random", "--ipc", "1", "--out",
                 str(tmp_path / "cli"), "--protocol", "smoke", "--protocol-set", "networks=2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    record = load_continual(tmp_path / "cli")
    assert record["protocol"]["networks"] == 2
    assert "final average accuracy" in printed and f"{record['total_stored_floats']:,} floats in all" in printed
    assert str(tmp_path / "cli" / "continual.png") in printed


def test_accuracy_on_all_seen_classes_is_each_networks_exact_union_of_the_tasks():
    from condensation.evaluation.evaluate import AccuracySummary

    # network 1: 3 of 7 right on task 1, 5 of 6 on task 2; network 2: 7 of 7 and 0 of 6
    by_task = {"task-1": {"convnet": AccuracySummary.of([100 * 3 / 7, 100.0])},
               "task-2": {"convnet": AccuracySummary.of([100 * 5 / 6, 0.0])}}
    union = continual_module.union_accuracy(by_task, {"task-1": 7, "task-2": 6})["convnet"]
    assert union.values == [round(100 * 8 / 13, 4), round(100 * 7 / 13, 4)]
    assert union.mean == pytest.approx(100 * 7.5 / 13) and union.n == 2


def test_the_command_line_passes_memory_reuse_on(monkeypatch, tmp_path):
    from condensation.cli import _continual, build_parser

    seen = {}

    def fake_continual(config, resume=False):
        seen["config"] = config
        raise SystemExit(0)  # stop before any work: only the flags' way into the config is tested here

    monkeypatch.setattr(continual_module, "continual", fake_continual)
    args = build_parser().parse_args(["continual", "--stream", "split-digits", "--recipe", "rtp", "--reuse-memories",
                                      "--later-bases", "0", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        _continual(args)
    assert seen["config"].reuse_memories is True and seen["config"].later_bases == 0
    plain = build_parser().parse_args(["continual", "--stream", "split-digits", "--recipe", "rtp"])
    with pytest.raises(SystemExit):
        _continual(plain)
    assert seen["config"].reuse_memories is False and seen["config"].later_bases is None
