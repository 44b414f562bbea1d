"""Property tests for ptychopinn.physics.patches: bilinear extraction and placement.

The overlap constraint and the reference surface's supervised patches go through these two functions, so
their geometry is pinned here (reference pitfall 6: sign conventions that forked between modules): a patch
centred at (x, y) has its pixel (h//2, w//2) on image (row=y, col=x); place is the exact adjoint of extract
for every position, inside or outside the image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptychopinn.physics.patches import extract_patches, place_patches


def _crand(shape: tuple[int, ...], rng: np.random.Generator, complex_: bool = True) -> torch.Tensor:
    a = rng.standard_normal(shape)
    if complex_:
        a = a + 1j * rng.standard_normal(shape)
    return torch.from_numpy(a)


def _inner(a: torch.Tensor, b: torch.Tensor) -> float:
    """Real inner product of (real, imag) parts: Re sum(a * conj(b))."""
    return float((a * b.conj()).real.sum()) if a.is_complex() else float((a * b).sum())


def _index_image(h: int, w: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Image whose pixel (r, c) holds 1000 r + c, so every read value names its source pixel."""
    r = torch.arange(h, dtype=dtype)[:, None]
    c = torch.arange(w, dtype=dtype)[None, :]
    return 1000 * r + c


# ----------------------------------------------------------------------------------------------------
# Adjointness


def _check_adjoint(rng: np.random.Generator, k: int, height: int, width: int, h: int, w: int, p: int,
                   complex_: bool = True, with_index: bool = True) -> None:
    images = _crand((k, height, width), rng, complex_)
    patches = _crand((p, h, w), rng, complex_)
    # Positions from well outside on one side to well outside on the other, so some patches are
    # fully inside, some straddle an edge and some miss the image entirely.
    pos = np.stack([rng.uniform(-w - 2, width + w + 2, p), rng.uniform(-h - 2, height + h + 2, p)], axis=1)
    positions = torch.from_numpy(pos)
    idx = torch.from_numpy(rng.integers(0, k, p)) if with_index else None
    lhs = _inner(extract_patches(images, positions, (h, w), idx), patches)
    rhs = _inner(images, place_patches(patches, positions, (k, height, width), idx))
    scale = float(images.abs().pow(2).sum().sqrt() * patches.abs().pow(2).sum().sqrt())
    assert abs(lhs - rhs) <= 1e-12 * scale, (lhs, rhs)


@pytest.mark.parametrize("seed", range(4))
def test_adjoint_dot_product_identity(seed: int) -> None:
    rng = np.random.default_rng(seed)
    _check_adjoint(rng, k=3, height=17, width=13, h=6, w=9, p=40)


def test_adjoint_real_images_without_index() -> None:
    _check_adjoint(np.random.default_rng(10), k=1, height=12, width=12, h=5, w=5, p=30,
                   complex_=False, with_index=False)


def test_adjoint_holds_for_positions_fully_outside() -> None:
    # Patches that miss the image read zeros and place nothing: both sides of the identity are 0.
    rng = np.random.default_rng(11)
    images = _crand((1, 8, 8), rng)
    positions = torch.tensor([[-20.5, 3.0], [40.25, 4.0], [3.0, -9.75], [2.0, 30.0]], dtype=torch.float64)
    out = extract_patches(images, positions, 4)
    assert float(out.abs().max()) == 0.0
    placed = place_patches(_crand((4, 4, 4), rng), positions, (8, 8))
    assert placed.shape == (8, 8)
    assert float(placed.abs().max()) == 0.0


def test_place_is_autograd_transpose_of_extract() -> None:
    # The vector-Jacobian product of extraction with cotangent P is place(P): same operator pair
    # that the training loss differentiates through.
    rng = np.random.default_rng(12)
    images = _crand((2, 11, 14), rng, complex_=False).requires_grad_(True)
    positions = torch.from_numpy(rng.uniform(-3, 15, (9, 2)))
    idx = torch.from_numpy(rng.integers(0, 2, 9))
    cot = _crand((9, 5, 4), rng, complex_=False)
    extract_patches(images, positions, (5, 4), idx).backward(cot)
    torch.testing.assert_close(images.grad, place_patches(cot, positions, (2, 11, 14), idx),
                               rtol=0.0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 3), height=st.integers(1, 12), width=st.integers(1, 12),
    h=st.integers(1, 7), w=st.integers(1, 7), p=st.integers(1, 6), seed=st.integers(0, 2**31 - 1),
)
def test_adjoint_property(k: int, height: int, width: int, h: int, w: int, p: int, seed: int) -> None:
    _check_adjoint(np.random.default_rng(seed), k, height, width, h, w, p)


# ----------------------------------------------------------------------------------------------------
# Geometry of integer positions


@pytest.mark.parametrize("h, w", [(5, 5), (4, 6), (7, 2), (1, 1)])
def test_integer_positions_are_exact_slices(h: int, w: int) -> None:
    img = _index_image(20, 30)
    positions = torch.tensor([[10.0, 7.0], [4.0, 12.0], [25.0, 15.0]], dtype=torch.float64)
    out = extract_patches(img, positions, (h, w))
    assert out.shape == (3, h, w)
    for (x, y), patch in zip(positions.long().tolist(), out, strict=True):
        # Patch pixel (h//2, w//2) sits on image (row=y, col=x).
        assert float(patch[h // 2, w // 2]) == 1000 * y + x
        r0, c0 = y - h // 2, x - w // 2
        torch.testing.assert_close(patch, img[r0:r0 + h, c0:c0 + w], rtol=0.0, atol=0.0)


def test_l_shape_orientation() -> None:
    # An 'L' drawn with its corner at (row=8, col=3): vertical arm goes UP (rows 4..8, col 3),
    # horizontal arm goes RIGHT (row 8, cols 3..9). Any transpose or mirror of the geometry moves
    # one of the specific pixels checked below.
    img = torch.zeros(12, 14, dtype=torch.float64)
    img[4:9, 3] = 1.0
    img[8, 3:10] = 2.0
    n = 7
    patch = extract_patches(img, torch.tensor([[3.0, 8.0]], dtype=torch.float64), n)[0]  # x=3 col, y=8 row
    c = n // 2
    assert float(patch[c, c]) == 2.0  # the corner is at the patch centre
    assert float(patch[c - 3, c]) == 1.0  # arm going up (smaller row index)
    assert float(patch[c + 1, c]) == 0.0  # nothing below the corner
    assert float(patch[c, c + 3]) == 2.0  # arm going right (larger column index)
    assert float(patch[c, c - 1]) == 0.0  # nothing left of the corner
    # Patch centred one column left of the corner: the corner appears one column right of centre.
    patch2 = extract_patches(img, torch.tensor([[2.0, 8.0]], dtype=torch.float64), n)[0]
    assert float(patch2[c, c + 1]) == 2.0 and float(patch2[c, c]) == 0.0
    # Placing a patch with a single hot pixel at its centre lights image (row=y, col=x).
    hot = torch.zeros(1, n, n, dtype=torch.float64)
    hot[0, c, c] = 1.0
    placed = place_patches(hot, torch.tensor([[5.0, 2.0]], dtype=torch.float64), (12, 14))
    assert placed.nonzero().tolist() == [[2, 5]]


def test_partly_outside_reads_zero_fill() -> None:
    img = _index_image(6, 6) + 1.0  # +1 so real pixels are never zero
    patch = extract_patches(img, torch.tensor([[0.0, 0.0]], dtype=torch.float64), 4)[0]
    # Rows/cols -2, -1 are outside; rows/cols 0, 1 are the image's top-left 2 x 2 block.
    assert float(patch[:2].abs().max()) == 0.0 and float(patch[:, :2].abs().max()) == 0.0
    torch.testing.assert_close(patch[2:, 2:], img[:2, :2], rtol=0.0, atol=0.0)


def test_image_index_selects_the_stack_member() -> None:
    stack = torch.stack([_index_image(9, 9), -_index_image(9, 9), 7 + 0 * _index_image(9, 9)])
    positions = torch.tensor([[4.0, 4.0]] * 3, dtype=torch.float64)
    out = extract_patches(stack, positions, 3, torch.tensor([2, 0, 1]))
    assert float(out[0, 1, 1]) == 7.0
    assert float(out[1, 1, 1]) == 4004.0
    assert float(out[2, 1, 1]) == -4004.0
    with pytest.raises(IndexError):
        extract_patches(stack, positions, 3, torch.tensor([0, 1, 3]))


def test_coverage_counts_from_place_of_extract_of_constant() -> None:
    # Extracting from an all-ones image and placing back counts how many patches cover each pixel.
    height, width, n = 16, 18, 5
    positions = torch.tensor([[4.0, 4.0], [6.0, 4.0], [4.0, 9.0], [0.0, 0.0], [17.0, 15.0]],
                             dtype=torch.float64)
    ones = torch.ones(height, width, dtype=torch.float64)
    cover = place_patches(extract_patches(ones, positions, n), positions, (height, width))
    expected = np.zeros((height, width))
    for x, y in positions.long().tolist():
        r0, c0 = y - n // 2, x - n // 2
        expected[max(r0, 0):max(r0 + n, 0), max(c0, 0):max(c0 + n, 0)] += 1
    np.testing.assert_array_equal(cover.numpy(), expected)


def test_subpixel_coverage_conserves_mass_inside() -> None:
    # Bilinear weights sum to one: a patch of ones placed well inside deposits exactly h*w.
    positions = torch.tensor([[10.3, 9.7], [12.5, 11.25], [9.9, 13.01]], dtype=torch.float64)
    placed = place_patches(torch.ones(3, 5, 6, dtype=torch.float64), positions, (25, 25))
    assert float(placed.sum()) == pytest.approx(3 * 30, rel=1e-13)
    ones = torch.ones(25, 25, dtype=torch.float64)
    torch.testing.assert_close(extract_patches(ones, positions, (5, 6)), torch.ones(3, 5, 6, dtype=torch.float64),
                               rtol=0.0, atol=1e-13)


def test_place_into_accumulator_adds_in_place() -> None:
    rng = np.random.default_rng(13)
    patches = _crand((5, 4, 4), rng)
    positions = torch.from_numpy(rng.uniform(0, 10, (5, 2)))
    idx = torch.tensor([0, 1, 1, 0, 1])
    start = _crand((2, 10, 10), rng)
    acc = start.clone()
    result = place_patches(patches, positions, (2, 10, 10), idx, out=acc)
    assert result is acc
    torch.testing.assert_close(acc, start + place_patches(patches, positions, (2, 10, 10), idx),
                               rtol=0.0, atol=1e-13)


# ----------------------------------------------------------------------------------------------------
# Sub-pixel sampling


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-10), (torch.float32, 2e-3)])
def test_subpixel_extraction_of_linear_ramp_is_exact(dtype: torch.dtype, atol: float) -> None:
    # Bilinear interpolation reproduces affine functions exactly, so sampling the ramp
    # f(r, c) = 3 r - 2 c + 5 at any interior sub-pixel point returns f at that point. This pins
    # the sub-pixel direction: a position +0.25 to the right reads the ramp at col + 0.25.
    height, width, h, w = 30, 40, 6, 7
    img = 3 * torch.arange(height, dtype=dtype)[:, None] - 2 * torch.arange(width, dtype=dtype)[None, :] + 5
    pos = torch.tensor([[12.25, 10.5], [20.1, 14.9], [17.999, 8.001], [30.7, 20.3]], dtype=torch.float64)
    out = extract_patches(img, pos, (h, w))
    assert out.dtype == dtype
    rr = torch.arange(h, dtype=torch.float64)[None, :, None] + pos[:, 1, None, None] - h // 2
    cc = torch.arange(w, dtype=torch.float64)[None, None, :] + pos[:, 0, None, None] - w // 2
    torch.testing.assert_close(out.to(torch.float64), 3 * rr - 2 * cc + 5, rtol=0.0, atol=atol)


def test_subpixel_positions_accept_float32_tensors() -> None:
    img = _index_image(20, 20)
    a = extract_patches(img, torch.tensor([[8.5, 9.25]], dtype=torch.float32), 4)
    b = extract_patches(img, torch.tensor([[8.5, 9.25]], dtype=torch.float64), 4)
    torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)


def test_complex64_extraction_and_gradient() -> None:
    rng = np.random.default_rng(14)
    img = _crand((1, 12, 12), rng).to(torch.complex64).requires_grad_(True)
    pos = torch.tensor([[5.3, 6.6], [2.0, 9.5]])
    out = extract_patches(img, pos, 5)
    assert out.dtype == torch.complex64
    out.abs().pow(2).sum().backward()
    assert img.grad is not None and img.grad.dtype == torch.complex64
    placed = place_patches(out.detach(), pos, (12, 12))
    assert placed.dtype == torch.complex64
