"""The HTML report: tiny real runs in, one self-contained, escaped page out (rendered in Chromium when present)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from condensation.artifacts import metadata_digest
from condensation.io import atomic_write_json
from condensation.report import IMAGES_PER_CLASS, image_grid, write_html_report
from condensation.run import RunConfig, distill

HOSTILE_CLASS = '<img src=x onerror="alert(1)">'
HOSTILE_RECIPE = "<script>alert('recipe')</script>"
HOSTILE_DIRECTORY = 'run <b>&"quoted"'


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A dm run, a random run with more images per class than the grid shows (and a random-real baseline), and
    a copy of the dm run made hostile: HTML in its directory, recipe and first class name, another protocol."""
    torch.set_num_threads(1)  # module fixtures start before conftest's per-test thread limit
    root = tmp_path_factory.mktemp("report")
    dm, random = root / "dm", root / "random"
    distill(RunConfig(recipe="dm", dataset="digits", ipc=1, iterations=3, protocol="smoke", out=str(dm),
                      progress=False))
    distill(RunConfig(recipe="random", dataset="digits", ipc=IMAGES_PER_CLASS + 1, protocol="smoke", out=str(random),
                      random_baseline=True, random_baseline_draws=2, progress=False))
    hostile = root / HOSTILE_DIRECTORY
    shutil.copytree(dm, hostile)
    metadata = json.loads((hostile / "metadata.json").read_text())
    metadata["spec"]["class_names"][0] = HOSTILE_CLASS
    metadata["metadata_sha256"] = metadata_digest(metadata)  # still a valid artifact, so the class name is shown
    atomic_write_json(hostile / "metadata.json", metadata)
    results = json.loads((hostile / "results.json").read_text())
    results["recipe"] = HOSTILE_RECIPE
    results["protocol"]["name"] = "other"
    atomic_write_json(hostile / "results.json", results)
    return {"dm": dm, "random": random, "hostile": hostile}


def leaderboard_of(page: str) -> str:
    return page[page.index("<h2>Leaderboard"):page.index("</table>")]


def test_page_is_self_contained(runs, tmp_path):
    page = write_html_report(list(runs.values()), tmp_path / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"url\((?!#)", page)  # only the inline SVGs' references to their own clip paths
    images = re.findall(r"<img\b[^>]*>", page)
    assert len(images) >= 10  # at least one row per digit class
    assert all(re.search(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', image) for image in images)
    assert page.count("<svg") >= 6  # loss curve, accuracy strip, budget bar per run


def test_leaderboard_lists_each_run(runs, tmp_path):
    page = write_html_report([runs["dm"], runs["random"]], tmp_path / "report.html").read_text(encoding="utf-8")
    table = leaderboard_of(page)
    for run in (runs["dm"], runs["random"]):
        results = json.loads((run / "results.json").read_text())
        assert f"<td>{results['recipe']}</td>" in table and f"<td>{results['dataset']}</td>" in table
        accuracy = results["accuracy"]["convnet"]
        assert accuracy["n"] == 1 and f"{accuracy['mean']:.2f} (n=1)" in table
        assert f"{accuracy['mean']:.2f} ± " not in table  # one network: no std to claim
    baseline = json.loads((runs["random"] / "results.json").read_text())["random_baseline"]
    assert f"{baseline['mean']:.2f} ± {baseline['std']:.2f} (n=2)" in table
    assert "not comparable" not in page  # one protocol
    # the random run stores more images per class than the grid shows, and says so
    assert f"{IMAGES_PER_CLASS + 1} generated image(s) per class" in page and f"the first {IMAGES_PER_CLASS}" in page
    assert 'id="loss-curve"' in page  # the dm run's loss curve (matplotlib SVG)


def test_hostile_text_is_escaped_and_protocols_are_marked(runs, tmp_path):
    page = write_html_report(list(runs.values()), tmp_path / "report.html").read_text(encoding="utf-8")
    for raw in (HOSTILE_CLASS, HOSTILE_RECIPE, HOSTILE_DIRECTORY):
        assert raw not in page
    assert "&lt;script&gt;alert(&#x27;recipe&#x27;)&lt;/script&gt;" in leaderboard_of(page)
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "run &lt;b&gt;&amp;&quot;quoted&quot;" in page
    assert "accuracies under different protocols are not comparable" in page
    assert 'class="mixed"' in leaderboard_of(page)


def test_leaderboard_order_and_runs_without_artifact(runs, tmp_path):
    """Sorted by dataset, IPC, then accuracy descending; a results.json alone still makes a row and a section."""
    base = json.loads((runs["dm"] / "results.json").read_text())
    rows = [("b", "digits", 1, 40.0), ("a", "digits", 1, 60.0), ("c", "digits", 5, 90.0), ("d", "cifar10", 10, 10.0)]
    for name, dataset, ipc, mean in rows:
        (tmp_path / name).mkdir()
        accuracy = {"convnet": {"mean": mean, "std": 1.5, "n": 3, "values": [mean - 1.5, mean, mean + 1.5]}}
        results = {**base, "dataset": dataset, "ipc": ipc, "accuracy": accuracy}
        atomic_write_json(tmp_path / name / "results.json", results)
    page = write_html_report([tmp_path / name for name, *_ in rows], tmp_path / "out" / "report.html").read_text()
    table = leaderboard_of(page)
    order = [table.index(f">{name}</a>") for name in "dabc"]
    assert order == sorted(order)
    assert "60.00 ± 1.50 (n=3)" in table
    assert page.count("no artifact (metadata.json)") == 4


def test_damaged_metrics_and_artifact_become_notes(runs, tmp_path):
    run = tmp_path / "damaged"
    shutil.copytree(runs["dm"], run)
    with open(run / "metrics.jsonl", "a") as file:
        file.write("not json\n{\"iteration\": 5}\n")
    (run / "generated.safetensors").write_bytes(b"truncated")
    page = write_html_report([run], tmp_path / "report.html").read_text()
    assert "2 line(s) without a finite iteration and loss were skipped" in page
    assert "the artifact could not be loaded" in page and 'id="loss-curve"' in page


def test_image_grid_upscales_and_labels_each_class():
    pixels = np.random.default_rng(0).random((3 * 12, 1, 8, 8))
    labels = np.repeat(np.arange(3), 12)
    rows, note = image_grid(pixels, labels, ("a", "b", "c"))
    assert [name for name, _, _ in rows] == ["a", "b", "c"] and all(shown == IMAGES_PER_CLASS for *_, shown in rows)
    assert "12 generated image(s) per class" in note and "8×8 pixels shown at 6×" in note


def _browser() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def test_page_renders_in_headless_chromium(runs, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome binary on PATH")
    page = write_html_report(list(runs.values()), tmp_path / "report.html")
    screenshot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={screenshot}", "--window-size=1400,2000", page.resolve().as_uri()],
                   check=True, timeout=120, capture_output=True)
    assert screenshot.exists()
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1400, 2000)
    assert len(image.getcolors(maxcolors=1 << 20)) > 50  # text, plots and digit images, not a blank page


def test_a_setting_an_older_run_did_not_record_is_not_a_protocol_difference():
    from condensation.report import protocol_key

    current = {"protocol": {"name": "cpu", "augment_strategy": "color_crop_cutout_flip_scale_rotate", "steps": 200}}
    older = {"protocol": {"name": "cpu", "steps": 200}}  # written before augment_strategy existed
    assert protocol_key(current) == protocol_key(older)
    overridden = {"protocol": {"name": "cpu", "steps": 100}}
    assert protocol_key(overridden) != protocol_key(older)


def test_the_report_does_not_import_the_training_code(tmp_path):
    """condense report reads results files: it must not pull in the runner, the objectives or network training."""
    import subprocess
    import sys

    from condensation.run import RunConfig, distill

    distill(RunConfig(recipe="random", dataset="digits", ipc=1, protocol="smoke", out=str(tmp_path / "run"),
                      progress=False))
    code = ("import sys; from condensation.report import write_html_report; "
            f"write_html_report([{str(tmp_path / 'run')!r}], {str(tmp_path / 'page.html')!r}); "
            "print(','.join(sorted(m for m in sys.modules if m.startswith('condensation'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(",")
    training = [m for m in loaded if m.startswith(("condensation.run", "condensation.continual", "condensation.engine",
                                                   "condensation.objectives", "condensation.evaluation.evaluate",
                                                   "condensation.pruning"))]
    assert not training and "condensation.results.continual" in loaded
