"""Label-mixture queries: Container.query for every container, the mix parser, query_artifact's files."""
import json
import math

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from condensation.artifacts import GRID_MIN_CELL, save_artifact
from condensation.containers import CONTAINERS, create_container
from condensation.data import DataSpec
from condensation.errors import ConfigError
from condensation.query import mix_label, parse_mix, parse_mixes, query_artifact

from .conftest import tiny_real

# small settings per container on the 8x8 gray fixture (IPC 4)
SETTINGS = {
    "pixels": {},
    "multi_formation": {"factor": 2},
    "memories": {"bases": 4},
    "factorization": {"adversarial": False, "budget_mode": "paper"},  # 5 hallucinators x 4 bases per class
    "hmn": {"dataset_channels": 2, "feature_channels": 3, "class_channels": 1, "instance_channels": 1,
            "decoder_width": 4},
}
LINEAR = ["pixels", "multi_formation", "memories", "factorization"]
FASHION = DataSpec(1, 28, 28, 10, ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                   "Sneaker", "Bag", "Ankle boot"))


def _container(name, spec, seed=0):
    real, pre = tiny_real(spec)
    container = create_container(name, spec, 4, pre, **SETTINGS[name])
    container.initialize(real, torch.Generator().manual_seed(seed))
    return container


def _class_images(container):
    """The generated set as (classes, n, C, H, W), in its fixed order."""
    images = container.generate_all().images
    return images.view(container.num_classes, container.generated_per_class(), *images.shape[1:])


def _mixtures(count, classes, seed):
    weights = torch.rand(count, classes, generator=torch.Generator().manual_seed(seed))
    return weights / weights.sum(1, keepdim=True)


def test_every_registered_container_declares_query_support():
    assert set(SETTINGS) == set(CONTAINERS.names())  # a new container must be added here
    for name in CONTAINERS.names():
        cls = CONTAINERS.get(name)
        assert cls.supports_queries, name
        assert cls.linear_queries == (name in LINEAR), name


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_one_hot_query_is_the_class_own_images(name, gray_spec):
    container = _container(name, gray_spec)
    with torch.no_grad():
        expected = _class_images(container)  # (3, n, 1, 8, 8)
        queried = container.query(torch.eye(3)[[2, 0, 1]])
    assert queried.shape == (3, container.generated_per_class(), 1, 8, 8)
    torch.testing.assert_close(queried, expected[[2, 0, 1]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", LINEAR)
def test_linear_queries_are_linear_and_mix_the_class_images(name, gray_spec):
    container = _container(name, gray_spec)
    x, y = _mixtures(4, 3, seed=1), _mixtures(4, 3, seed=2)
    with torch.no_grad():
        for a in (0.0, 0.3, 1.0):
            torch.testing.assert_close(container.query(a * x + (1 - a) * y),
                                       a * container.query(x) + (1 - a) * container.query(y), rtol=1e-4, atol=1e-5)
        # image i of a query is the weighted sum of image i of every class
        torch.testing.assert_close(container.query(x), torch.einsum("qc,cn...->qn...", x, _class_images(container)),
                                   rtol=1e-4, atol=1e-5)


def test_hmn_mixes_its_codes_before_the_nonlinear_decoder(gray_spec):
    container = _container("hmn", gray_spec)
    weights = torch.tensor([[0.5, 0.5, 0.0]])
    with torch.no_grad():
        codes = container.codes(torch.arange(container.total_generated()))  # (3 * n, D, 2, 2)
        codes = codes.view(3, container.generated_per_class(), *codes.shape[1:])
        expected = container.decoder(0.5 * codes[0] + 0.5 * codes[1])
        queried = container.query(weights)[0]
        blended = 0.5 * _class_images(container)[0] + 0.5 * _class_images(container)[1]
    torch.testing.assert_close(queried, expected, rtol=1e-5, atol=1e-6)
    assert (queried - blended).abs().max() > 1e-3  # not the blend of the images: the decoder is nonlinear


def test_queries_normalize_rows_and_keep_the_graph(gray_spec):
    container = _container("memories", gray_spec)
    with torch.no_grad():
        torch.testing.assert_close(container.query(torch.tensor([[2.0, 0.0, 6.0]])),
                                   container.query(torch.tensor([[0.25, 0.0, 0.75]])))
    assert torch.equal(container.query_weights(torch.tensor([[2, 0, 6]])), torch.tensor([[0.25, 0.0, 0.75]]))
    container.query(torch.tensor([[1.0, 1.0, 0.0]])).sum().backward()
    assert container.coefficients.grad.abs().sum() > 0 and container.memories.grad.abs().sum() > 0


@pytest.mark.parametrize("soft_labels, message", [
    (torch.ones(2, 4), r"shape \(Q, 3\)"),
    (torch.ones(3), r"shape \(Q, 3\)"),
    (torch.ones(0, 3), r"shape \(Q, 3\)"),
    (torch.tensor([[1.0, 0.0, 0.0], [0.5, -0.1, 0.6]]), r"negative weights in row\(s\) 1"),
    (torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), r"row\(s\) 1, 2 are all zero"),
    (torch.tensor([[1.0, float("nan"), 0.0]]), r"NaN or infinite weights in row\(s\) 0"),
    (torch.tensor([[float("inf"), 0.0, 0.0]]), r"NaN or infinite"),
])
def test_bad_soft_labels_are_refused_by_name(soft_labels, message, gray_spec):
    container = _container("pixels", gray_spec)
    with pytest.raises(ConfigError, match=message):
        container.query(soft_labels)


def test_memories_slot_queries_match_the_full_query(gray_spec):
    container = _container("memories", gray_spec)
    weights = torch.tensor([[0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    with torch.no_grad():
        every_slot = container.query(weights)  # (2, r, 1, 8, 8)
        torch.testing.assert_close(container.query(weights, torch.tensor([3, 0])), every_slot[[0, 1], [3, 0]])
    with pytest.raises(ConfigError, match="slots"):
        container.query(weights, torch.tensor([0, container.generated_per_class()]))


# ------------------------------------------------------------------------------------------- parser
@pytest.mark.parametrize("text, expected", [
    ("Shirt", {6: 1.0}),
    ("shirt", {6: 1.0}),  # case is ignored where one class matches
    ("0.5*T-shirt/top+0.5*Shirt", {0: 0.5, 6: 0.5}),
    (" 0.5 * Sneaker + 0.5 * Ankle boot ", {7: 0.5, 9: 0.5}),
    ("2*3+1*5", {3: 2.0, 5: 1.0}),
    ("Bag+.25*Coat+1e-1*Bag", {8: 1.1, 4: 0.25}),  # a class named twice adds up
    ("0*Bag+Coat", {4: 1.0}),
])
def test_parse_mix(text, expected):
    weights = torch.zeros(10, dtype=torch.float64)
    weights[list(expected)] = torch.tensor(list(expected.values()), dtype=torch.float64)
    torch.testing.assert_close(parse_mix(text, FASHION), weights)


def test_parse_mixes_gives_one_row_per_mix():
    rows = parse_mixes(["Shirt", "0.5*Sneaker+0.5*Ankle boot"], FASHION)
    assert rows.shape == (2, 10) and rows[0, 6] == 1 and rows[1, 7] == rows[1, 9] == 0.5
    assert torch.equal(parse_mixes("Bag", FASHION), parse_mix("Bag", FASHION).unsqueeze(0))
    with pytest.raises(ConfigError, match="at least one mix"):
        parse_mixes([], FASHION)


@pytest.mark.parametrize("text, message", [
    ("0.5*Shrt+0.5*Shirt", r"unknown class 'Shrt'; valid classes \(name or index\): 0 'T-shirt/top', .*9 'Ankle boot'"),
    ("12", "class index 12 is out of range; indices are 0 to 9"),
    ("Shirt+", "empty term"),
    ("0.5*", "empty term"),
    ("", "at least one class"),
    ("-0.5*Shirt+Bag", "weight -0.5 must be a finite number >= 0"),
    ("1e999*Bag", "weight inf must be a finite number"),
    ("0*Shirt", "every class weight 0"),
    ("0.5 Shirt", "unknown class '0.5 Shirt'"),
])
def test_parse_errors_name_the_fault(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_mix(text, FASHION)


def test_names_holding_plus_signs_and_integers():
    spec = DataSpec(1, 4, 4, 4, ("a+b", "a", "b", "2"))
    assert parse_mix("a+b", spec).tolist() == [1, 0, 0, 0]  # the longest name wins
    assert parse_mix("1*a+1*b", spec).tolist() == [0, 1, 1, 0]  # weights split it
    assert parse_mix("2", spec).tolist() == [0, 0, 0, 1]  # a name before an index
    assert parse_mix("0+1", spec).tolist() == [1, 1, 0, 0]
    duplicated = DataSpec(1, 4, 4, 2, ("x", "x"))
    with pytest.raises(ConfigError, match="classes 0, 1 are all named 'x'"):
        parse_mix("x", duplicated)
    assert parse_mix("1", duplicated).tolist() == [0, 1]
    unnamed = DataSpec(1, 4, 4, 3)
    assert parse_mix("2*0+2", unnamed).tolist() == [2, 0, 1]
    with pytest.raises(ConfigError, match="names no classes: use indices 0 to 2"):
        parse_mix("cat", unnamed)


def test_mix_labels_are_short():
    assert mix_label(parse_mix("Shirt", FASHION), FASHION) == "Shirt"
    assert mix_label(parse_mix("0.5*Sneaker+0.5*Ankle boot", FASHION), FASHION) == "50%Sneaker+50%Ankle boot"
    assert mix_label(parse_mix("2*3+1*5", FASHION), FASHION) == "66.7%Dress+33.3%Sandal"


# ------------------------------------------------------------------------------------------- artifact
@pytest.fixture
def memories_artifact(tmp_path):
    spec = DataSpec(1, 8, 8, 3, ("T-shirt/top", "Shirt", "Ankle boot"), flip_allowed=False)
    save_artifact(tmp_path / "run", _container("memories", spec), {"recipe": "rtp"})
    return tmp_path / "run"


def test_query_artifact_files_round_trip(memories_artifact, tmp_path):
    from condensation.artifacts import load_artifact

    mixes = ["Shirt", "0.5*T-shirt/top+0.5*Shirt", "2*2+2*0"]
    result = query_artifact(memories_artifact, mixes, tmp_path / "out", images_per_mix=5)
    container = load_artifact(memories_artifact).container
    weights = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])
    with torch.no_grad():
        expected = container.query(weights)
    saved = load_file(str(tmp_path / "out" / "queries.safetensors"))
    r = container.generated_per_class()
    assert saved["images"].shape == (3, r, 1, 8, 8) and saved["pixels"].shape == (3, r, 1, 8, 8)
    torch.testing.assert_close(saved["images"], expected)
    torch.testing.assert_close(saved["pixels"], container.preprocessing.inverse(expected.flatten(0, 1))
                               .clamp(0, 1).view_as(expected))
    assert float(saved["pixels"].min()) >= 0 and float(saved["pixels"].max()) <= 1
    torch.testing.assert_close(saved["soft_labels"], weights)
    with safe_open(str(tmp_path / "out" / "queries.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["mixes"]) == mixes and metadata["container"] == "memories"
    assert json.loads(metadata["linear_queries"]) is True
    assert result.labels == ["Shirt", "50%T-shirt/top+50%Shirt", "50%T-shirt/top+50%Ankle boot"]


def test_a_one_class_grid_has_the_expected_size(memories_artifact, tmp_path):
    result = query_artifact(memories_artifact, ["Ankle boot"], tmp_path / "grid", images_per_mix=4)
    scale = math.ceil(GRID_MIN_CELL / 8)  # 8x8 images are upscaled by an integer factor
    cell = 8 * scale + 2  # make_grid pads 2 pixels around every image
    with Image.open(result.grid_path) as grid:
        width, height = grid.size
    assert result.grid_path == tmp_path / "grid" / "queries.png"
    assert height == 1 * cell + 2  # one row, no note under it
    assert width > 4 * cell + 2  # four images, and the label column before them
    assert result.shown_per_mix == 4


def test_query_artifact_default_directory_and_errors(memories_artifact):
    result = query_artifact(memories_artifact, "Shirt")
    assert result.tensors_path == memories_artifact / "queries" / "queries.safetensors" and result.tensors_path.exists()
    with pytest.raises(ConfigError, match="unknown class 'Sirt'.*0 'T-shirt/top', 1 'Shirt', 2 'Ankle boot'"):
        query_artifact(memories_artifact, ["Shirt", "Sirt"])
    with pytest.raises(ConfigError, match="images per mix"):
        query_artifact(memories_artifact, "Shirt", images_per_mix=0)


def test_every_pixel_of_a_one_hot_query_matches_the_saved_generated_set(memories_artifact, tmp_path):
    from condensation.artifacts import load_artifact

    artifact = load_artifact(memories_artifact)
    result = query_artifact(memories_artifact, ["T-shirt/top", "Shirt", "Ankle boot"], tmp_path / "q")
    torch.testing.assert_close(result.images.flatten(0, 1), artifact.generated_images)


def test_a_container_without_queries_names_those_with_them(gray_spec):
    from condensation.containers.pixels import Pixels, PixelsConfig

    class Stored(Pixels):  # a container that declares no queries
        supports_queries = False

    _, pre = tiny_real(gray_spec)
    with pytest.raises(ConfigError, match=r"does not support queries; these containers do: factorization \(linear\), "
                                          r"hmn \(not linear\), memories \(linear\)"):
        Stored(gray_spec, 1, pre, PixelsConfig()).query(torch.eye(3))
