import pytest
import torch
import torch.nn.functional as F

from condensation.containers import CONTAINERS, create_container
from condensation.data import DataSpec
from condensation.errors import BudgetError, ConfigError

from ..conftest import tiny_real


def test_pixels_store_exactly_the_budget(gray_spec):
    _, pre = tiny_real(gray_spec)
    container = create_container("pixels", gray_spec, 4, pre)
    # B = classes x IPC x C x H x W = 3 x 4 x 1 x 8 x 8
    assert container.stored_floats() == 3 * 4 * 64 == container.budget_floats
    assert container.stored_bytes() == 4 * 3 * 4 * 64
    assert container.generated_per_class() == 4
    container.check_budget()


def test_fashion_mnist_budget_matches_the_field():
    spec = DataSpec(1, 28, 28, 10)
    assert spec.budget_floats(1) == 7840
    assert DataSpec(3, 32, 32, 10).budget_floats(1) == 30720


def test_multi_formation_counts_and_decoding(gray_spec):
    _, pre = tiny_real(gray_spec)
    container = create_container("multi_formation", gray_spec, 2, pre, factor=2)
    assert container.stored_floats() == gray_spec.budget_floats(2)
    assert container.generated_per_class() == 8
    stored = container.pixels.detach()
    # class 1, generated index 5 = stored image 1 of class 1 (5 // 4), crop 1 = top-right quadrant
    image = container.generate(torch.tensor([1 * 8 + 5])).images[0]
    crop = stored[1 * 2 + 1, :, 0:4, 4:8].unsqueeze(0)
    expected = pre(F.interpolate(crop, size=(8, 8), mode="bilinear", align_corners=False))[0]
    torch.testing.assert_close(image, expected)
    assert container.labels_of(torch.tensor([0, 7, 8, 23])).tolist() == [0, 0, 1, 2]


def test_mosaic_init_holds_downscaled_real_images_of_the_class(gray_spec):
    real, pre = tiny_real(gray_spec)
    container = create_container("multi_formation", gray_spec, 1, pre, factor=2)
    container.initialize(real, torch.Generator().manual_seed(0))
    raw_class_means = [real.raw[real.labels == c].mean() for c in range(3)]
    for c in range(3):  # every quadrant is a downscaled real image in [0, 1]
        assert 0 <= container.pixels[c].min() and container.pixels[c].max() <= 1
        assert abs(float(container.pixels[c].detach().mean()) - float(raw_class_means[c])) < 0.2


def test_over_budget_containers_are_refused(gray_spec):
    _, pre = tiny_real(gray_spec)
    container = create_container("pixels", gray_spec, 2, pre)
    container.images_per_class = 1  # pretend the budget shrank: 2x the floats of IPC 1
    with pytest.raises(BudgetError, match="over its budget"):
        container.check_budget()
    container.check_budget(allowed_ratio=2.0)  # explicit over-budget state is allowed


def test_unknown_names_and_settings_are_refused(gray_spec):
    _, pre = tiny_real(gray_spec)
    with pytest.raises(ConfigError, match="choose one of"):
        create_container("pixles", gray_spec, 1, pre)
    with pytest.raises(ConfigError, match="factr"):
        create_container("multi_formation", gray_spec, 1, pre, factr=2)
    with pytest.raises(ConfigError, match="ipc"):
        create_container("pixels", gray_spec, 0, pre)
    with pytest.raises(ConfigError, match="divide"):
        create_container("multi_formation", gray_spec, 1, pre, factor=3)


@pytest.mark.parametrize("name", CONTAINERS.names())
def test_every_container_generates_its_declared_shape(name, gray_spec):
    real, pre = tiny_real(gray_spec)
    container = create_container(name, gray_spec, 2, pre)
    container.initialize(real, torch.Generator().manual_seed(0))
    batch = container.generate_all(torch.Generator().manual_seed(0))
    assert batch.images.shape == (container.total_generated(), 1, 8, 8)
    assert torch.bincount(batch.labels, minlength=3).tolist() == [container.generated_per_class()] * 3
    assert torch.isfinite(batch.images).all()
