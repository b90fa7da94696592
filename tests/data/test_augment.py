"""Differentiable siamese augmentation (DSA) and CutMix."""
from __future__ import annotations

import pytest
import torch

from condensation.data.augment import DSA, OPERATIONS, DSAConfig, cutmix, siamese
from condensation.errors import ConfigError


def images(n: int = 6, channels: int = 3, height: int = 8, width: int = 8, seed: int = 0) -> torch.Tensor:
    """Strictly positive random images, so a zero can only come from the augmentation."""
    return torch.rand(n, channels, height, width, generator=torch.Generator().manual_seed(seed)) + 0.5


def dsa(strategy: str, flip_allowed: bool = True, **config) -> DSA:
    return DSA(DSAConfig(strategy=strategy, **config), flip_allowed=flip_allowed)


def zero_rectangle(mask: torch.Tensor) -> tuple[int, int]:
    """mask: (H, W) bool of zeroed pixels; asserts it is one filled axis-aligned rectangle, returns its sides."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    assert len(rows) > 0
    top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    assert mask[top : bottom + 1, left : right + 1].all()
    assert int(mask.sum()) == (bottom - top + 1) * (right - left + 1)
    return bottom - top + 1, right - left + 1


def test_config_is_validated():
    with pytest.raises(ConfigError, match="unknown augmentation"):
        DSAConfig(strategy="color_blur")
    with pytest.raises(ConfigError, match="mode"):
        DSAConfig(mode="all")


@pytest.mark.parametrize("strategy", list(OPERATIONS) + ["color_crop_cutout_flip_scale_rotate"])
@pytest.mark.parametrize("mode", ["single", "chain"])
def test_shape_is_kept_and_gradient_reaches_the_input(strategy, mode):
    x = images(height=8, width=12).requires_grad_(True)  # not square, on purpose
    out = dsa(strategy, mode=mode)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("strategy", list(OPERATIONS) + ["color_crop_cutout_flip_scale_rotate"])
def test_siamese_applies_the_same_transform_to_batches_of_different_sizes(strategy):
    real = images(6)
    synthetic = real[:2].clone()  # the same two images in a smaller batch
    augment = dsa(strategy)
    for seed in range(4):
        out_real, out_synthetic = siamese(augment, [real, synthetic], torch.Generator().manual_seed(seed))
        assert out_real.shape == real.shape and out_synthetic.shape == synthetic.shape
        assert torch.allclose(out_real[:2], out_synthetic, atol=1e-6)


def test_shared_draw_treats_every_image_alike_and_unshared_does_not():
    one = images(1)
    batch = one.expand(8, -1, -1, -1).contiguous()
    augment = dsa("crop", crop_pad_ratio=0.25)
    shared = augment(batch, torch.Generator().manual_seed(0), shared=True)
    assert torch.equal(shared, shared[:1].expand_as(shared))
    unshared = augment(batch, torch.Generator().manual_seed(0), shared=False)
    assert not torch.equal(unshared, unshared[:1].expand_as(unshared))


def test_siamese_without_augmentation_returns_the_batches():
    batches = [images(2), images(3)]
    assert siamese(None, batches, torch.Generator()) is batches


def test_flip_is_disabled_when_not_allowed():
    x = images()
    assert "flip" not in dsa("color_crop_cutout_flip_scale_rotate", flip_allowed=False).operations
    assert "flip" in dsa("color_crop_cutout_flip_scale_rotate").operations
    never = dsa("flip", flip_allowed=False, flip_probability=1.0)
    always = dsa("flip", flip_allowed=True, flip_probability=1.0)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(never(x, generator), x)
    assert torch.equal(always(x, generator), x.flip(3))


def test_crop_with_zero_shift_is_the_identity():
    x = images(height=8, width=12)
    augment = dsa("crop", crop_pad_ratio=0.0)  # shifts are drawn from [-0, 0]
    for seed in range(3):
        assert torch.equal(augment(x, torch.Generator().manual_seed(seed)), x)


def test_crop_translates_with_zero_fill():
    """out[i, :, r, c] == x[i, :, r + ty_i, c + tx_i] where that is inside the image, else 0."""
    x = images(16, height=8, width=8)
    out = dsa("crop", crop_pad_ratio=0.25)(x, torch.Generator().manual_seed(3))  # shifts in [-2, 2]
    shifts = []
    for i in range(len(x)):
        matches = []
        for ty in range(-2, 3):
            for tx in range(-2, 3):
                expected = torch.zeros_like(x[i])
                rows, cols = slice(max(0, -ty), min(8, 8 - ty)), slice(max(0, -tx), min(8, 8 - tx))
                expected[:, rows, cols] = x[i][:, rows.start + ty : rows.stop + ty, cols.start + tx : cols.stop + tx]
                if torch.equal(out[i], expected):
                    matches.append((ty, tx))
        assert len(matches) == 1, f"image {i}: output is not one zero-filled translation ({matches})"
        shifts.append(matches[0])
    assert len(set(shifts)) > 1  # each image draws its own shift


def test_cutout_zeroes_one_contiguous_square():
    x = images(64, height=8, width=8)
    out = dsa("cutout", cutout_ratio=0.5)(x, torch.Generator().manual_seed(0))  # 4x4 squares
    full_squares = 0
    for i in range(len(x)):
        mask = out[i] == 0  # (C, H, W)
        assert torch.equal(mask, mask[:1].expand_as(mask))  # all channels cut alike
        height, width = zero_rectangle(mask[0])
        assert height <= 4 and width <= 4  # clipped at the border, never larger
        full_squares += (height, width) == (4, 4)
        assert torch.equal(out[i][~mask], x[i][~mask])  # the rest is untouched
    assert full_squares > 0


def test_chain_applies_every_operation_and_single_applies_one():
    x = images(4)
    flipped = x.flip(3)
    chain = dsa("flip_cutout", mode="chain", flip_probability=1.0)
    out = chain(x, torch.Generator().manual_seed(0))
    for i in range(len(x)):
        mask = out[i, 0] == 0
        zero_rectangle(mask)  # cutout ran
        assert torch.equal(out[i][:, ~mask], flipped[i][:, ~mask])  # and flip ran
    single = dsa("flip_cutout", mode="single", flip_probability=1.0)
    outcomes = set()
    for seed in range(12):
        out = single(x, torch.Generator().manual_seed(seed))
        if torch.equal(out, flipped):
            outcomes.add("flip")
        else:
            mask = out == 0
            assert mask.any() and torch.equal(out[~mask], x[~mask])  # cutout only, not flipped
            outcomes.add("cutout")
    assert outcomes == {"flip", "cutout"}


def test_deterministic_under_a_seeded_generator():
    x = images(8)
    augment = dsa("color_crop_cutout_flip_scale_rotate")
    first = augment(x, torch.Generator().manual_seed(42))
    again = augment(x, torch.Generator().manual_seed(42))
    assert torch.equal(first, again)
    others = [augment(x, torch.Generator().manual_seed(seed)) for seed in range(5)]
    assert any(not torch.allclose(first, other) for other in others)


def test_cutmix_lambda_is_the_unpasted_area():
    n, h, w = 6, 10, 12
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, h, w).contiguous()
    labels = torch.arange(n)
    proper_cuts = 0
    for seed in range(20):
        mixed, labels_a, labels_b, lam = cutmix(x, labels, torch.Generator().manual_seed(seed))
        assert mixed.shape == x.shape and torch.equal(labels_a, labels)
        for i in range(n):
            own = mixed[i] == x[i, 0, 0, 0]
            pasted = mixed[i] == x[labels_b[i], 0, 0, 0]
            assert (own | pasted).all()  # every pixel is its own or its partner's
            if labels_b[i] != i:
                assert own.float().mean().item() == pytest.approx(lam)
                if lam < 1:
                    zero_rectangle(~own[0])  # the pasted part is one rectangle
                    proper_cuts += 1
        assert 0.0 <= lam <= 1.0
    assert proper_cuts > 0


def test_cutmix_refuses_other_betas():
    with pytest.raises(ConfigError, match="beta"):
        cutmix(images(2), torch.arange(2), torch.Generator(), beta=0.5)
