import torch

from condensation.containers import create_container
from condensation.selection import HerdingConfig, herding_order, select_herding

from .conftest import tiny_real


def test_herding_order_on_a_hand_example():
    # mean = (1, 0). Step 1: (1, 0) itself. Step 2: running sum (1, 0); (0, 0) gives mean (0.5, 0), distance 0.25,
    # the smallest. Step 3: (3, 0) gives (4/3, 0), distance 1/9, beating (1, 2) -> 5/9 and (0, -2) -> 8/9.
    features = torch.tensor([[3.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 2.0], [0.0, -2.0]])
    assert herding_order(features, 3).tolist() == [2, 1, 0]


def test_herding_tracks_the_mean_better_than_random_points():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 8, generator=generator)
    chosen = herding_order(features, 10)
    herding_error = (features[chosen].mean(0) - features.mean(0)).norm()
    random_errors = [(features[torch.randperm(400, generator=generator)[:10]].mean(0) - features.mean(0)).norm()
                     for _ in range(50)]
    assert herding_error < torch.stack(random_errors).quantile(0.05)
    assert len(set(chosen.tolist())) == 10


def test_herding_fills_the_container_with_real_images_of_each_class(gray_spec):
    real, pre = tiny_real(gray_spec)
    container = create_container("pixels", gray_spec, 2, pre)
    select_herding(container, real, torch.Generator().manual_seed(0), HerdingConfig(training_steps=2, training_batch_size=8))
    for c in range(3):
        class_images = real.inputs[real.labels == c]
        for image in container.images[2 * c:2 * c + 2]:
            assert (class_images == image).flatten(1).all(1).any()
