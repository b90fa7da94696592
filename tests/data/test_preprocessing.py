"""Preprocessing: per-channel normalization and ZCA whitening, fitted on training data and serializable."""
from __future__ import annotations

import pytest
import torch

from condensation.data import Preprocessing
from condensation.errors import ArtifactError, ConfigError


def correlated_images(n: int = 2000, seed: int = 0) -> torch.Tensor:
    """(n, 2, 4, 4) images with strongly correlated but well-conditioned pixels, roughly in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    dim = 2 * 4 * 4
    mixing = torch.eye(dim) + 0.3 * torch.randn(dim, dim, generator=generator) / dim**0.5
    flat = torch.randn(n, dim, generator=generator) @ mixing.T
    return (0.5 + 0.1 * flat).reshape(n, 2, 4, 4)


def covariance(flat: torch.Tensor) -> torch.Tensor:
    centered = flat.double() - flat.double().mean(dim=0)
    return centered.T @ centered / (flat.shape[0] - 1)


def test_normalize_fits_mean_and_std_of_known_data():
    # channel 0: half zeros, half ones; channel 1: the constant 0.25 plus a +-0.5 checkerboard
    images = torch.zeros(4, 2, 2, 2)
    images[:2, 0] = 1.0
    images[:, 1] = 0.25
    images[:, 1, 0, 0] += 0.5
    images[:, 1, 1, 1] -= 0.5
    pre = Preprocessing("normalize").fit(images)
    # 16 values per channel, unbiased std: channel 0 -> sqrt(16 * 0.25 / 15); channel 1 -> sqrt(8 * 0.25 / 15)
    assert torch.allclose(pre.tensors["mean"], torch.tensor([0.5, 0.25]))
    assert torch.allclose(pre.tensors["std"], torch.tensor([(4 / 15) ** 0.5, (2 / 15) ** 0.5]))
    out = pre(images)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(out.transpose(0, 1).reshape(2, -1).std(dim=1), torch.ones(2), atol=1e-6)
    assert torch.allclose(pre.inverse(out), images, atol=1e-6)


def test_none_is_the_identity():
    images = torch.rand(5, 3, 4, 4)
    pre = Preprocessing("none").fit(images)
    assert torch.equal(pre(images), images)
    assert torch.equal(pre.inverse(images), images)


def test_bad_kind_and_unfitted_use_are_refused():
    with pytest.raises(ConfigError, match="unknown preprocessing 'whiten'"):
        Preprocessing("whiten")
    with pytest.raises(RuntimeError, match="before fit"):
        Preprocessing("zca")(torch.rand(1, 1, 2, 2))


def test_zca_inverse_undoes_forward():
    images = correlated_images()
    pre = Preprocessing("zca", zca_epsilon=0.1).fit(images)
    other = torch.rand(7, 2, 4, 4)  # unseen data too, not only the training set
    for x in (images[:50], other):
        out = pre(x)
        assert out.shape == x.shape
        assert torch.allclose(pre.inverse(out), x, atol=1e-4)


def test_zca_whitens_raw_pixels_as_kornia_does_for_mtt():
    """MTT and HaBa whiten [0, 1] pixels (no per-channel normalization first): X -> (X - mean) W^T with
    W = U diag((l + eps)^-1/2) U^T from the unbiased pixel covariance U diag(l) U^T, computed here by hand."""
    images = correlated_images()
    flat = images.reshape(len(images), -1).double()
    centered = flat - flat.mean(dim=0)
    eigenvalues, eigenvectors = torch.linalg.eigh(centered.T @ centered / (len(images) - 1))
    whitening = (eigenvectors * (eigenvalues + 0.1).rsqrt()) @ eigenvectors.T
    expected = (centered @ whitening.T).float().reshape(images.shape)
    pre = Preprocessing("zca", zca_epsilon=0.1).fit(images)
    assert pre.zca_input == "pixels"
    torch.testing.assert_close(pre(images), expected, atol=2e-5, rtol=1e-4)
    # whitening normalized images instead (the order before the fix) gives other inputs at the same eps
    legacy = Preprocessing("zca", zca_epsilon=0.1, zca_input="normalized").fit(images)
    assert (legacy(images) - expected).abs().max() > 0.1


def test_artifacts_saved_before_zca_input_existed_load_as_the_legacy_order():
    images = correlated_images()
    legacy = Preprocessing("zca", zca_epsilon=0.1, zca_input="normalized").fit(images)
    restored = Preprocessing.from_state({"kind": "zca", "zca_epsilon": 0.1}, legacy.state_dict())  # old metadata
    assert restored.zca_input == "normalized"
    torch.testing.assert_close(restored(images), legacy(images))
    torch.testing.assert_close(restored.inverse(legacy(images)), images, atol=1e-4, rtol=0)


def test_zca_whitened_covariance_has_the_regularized_form():
    """With training pixels of covariance U diag(l) U^T, ZCA with eps gives U diag(l / (l + eps)) U^T."""
    images = correlated_images()
    epsilon = 0.1
    pre = Preprocessing("zca", zca_epsilon=epsilon).fit(images)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance(images.reshape(len(images), -1)))
    expected = (eigenvectors * (eigenvalues / (eigenvalues + epsilon))) @ eigenvectors.T
    whitened = pre(images).reshape(len(images), -1)
    assert torch.allclose(covariance(whitened), expected, atol=1e-4)
    assert whitened.mean(dim=0).abs().max() < 1e-5  # centred on the training mean
    # the regularization matters here: the result is visibly not the identity
    assert (expected - torch.eye(len(expected), dtype=expected.dtype)).abs().max() > 0.01


def test_zca_with_tiny_epsilon_whitens_to_the_identity():
    images = correlated_images()
    pre = Preprocessing("zca", zca_epsilon=1e-8).fit(images)
    whitened = pre(images).reshape(len(images), -1)
    assert torch.allclose(covariance(whitened), torch.eye(whitened.shape[1], dtype=torch.float64), atol=1e-4)
    # the raw pixels were far from white
    raw = covariance(images.reshape(len(images), -1))
    assert (raw / raw.diagonal().mean() - torch.eye(raw.shape[0], dtype=raw.dtype)).abs().max() > 0.05


def test_zca_is_differentiable():
    pre = Preprocessing("zca").fit(correlated_images(200))
    x = torch.rand(3, 2, 4, 4, requires_grad=True)
    pre(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["normalize", "zca", "none"])
def test_state_round_trip_gives_identical_outputs(kind):
    pre = Preprocessing(kind, zca_epsilon=0.05).fit(correlated_images(300))
    restored = Preprocessing.from_state(pre.config(), pre.state_dict())
    assert restored.kind == kind and restored.zca_epsilon == 0.05 and restored.zca_input == "pixels"
    x = torch.rand(6, 2, 4, 4)
    assert torch.equal(restored(x), pre(x))
    assert torch.equal(restored.inverse(x), pre.inverse(x))


def test_incomplete_state_is_refused():
    state = Preprocessing("zca").fit(correlated_images(300)).state_dict()
    del state["zca_inverse"]
    with pytest.raises(ArtifactError, match="zca_inverse"):
        Preprocessing.from_state({"kind": "zca"}, state)
