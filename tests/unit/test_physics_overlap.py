"""Property tests for ptychopinn.physics.overlap.enforce_overlap (the gridsize > 1 constraint).

Geometry: member i of a group is centred at group centre + relative offset (x, y); its patch pixel
(r, c) shows object point (centre_y + rel_y - N//2 + r, centre_x + rel_x - N//2 + c). The tests build
patches in that frame and compare them pixel by pixel in the object frame.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.physics.overlap import enforce_overlap
from ptychopinn.physics.patches import extract_patches
from ptychopinn.physics.probe import central_window
from ptychopinn.physics.shift import extract_exact

N = 16
REL = [(-3, -2), (4, 1), (0, 5), (-2, 3)]  # integer (x, y) offsets, non-collinear, all overlapping


def _cobj(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return torch.from_numpy(a).to(dtype)


def _consistent_group(rel: list[tuple[float, float]], seed: int, dtype: torch.dtype = torch.complex128,
                      size: int = 48) -> torch.Tensor:
    """[C, N, N] patches cut from ONE random object at centre + rel_i: a perfectly consistent set."""
    obj = _cobj((size, size), seed, dtype)
    centre = torch.tensor([size // 2, size // 2], dtype=torch.float64)
    pos = centre[None, :] + torch.tensor(rel, dtype=torch.float64)
    return extract_patches(obj, pos, N)


def _to_object_frame(patches: torch.Tensor, rel: list[tuple[int, int]], reach: int) -> np.ndarray:
    """[C, F, F] complex array: member i's pixels at their object points, NaN where it has none."""
    f = N + 2 * reach
    out = np.full((len(rel), f, f), np.nan + 0j, dtype=np.complex128)
    for i, (x, y) in enumerate(rel):
        r0, c0 = reach + y, reach + x
        out[i, r0:r0 + N, c0:c0 + N] = patches[i].detach().to(torch.complex128).numpy()
    return out


def test_single_member_is_identity() -> None:
    p = _cobj((3, 1, N, N), seed=0)
    assert enforce_overlap(p, torch.zeros(3, 1, 2)) is p


@pytest.mark.parametrize("dtype, tol", [(torch.complex128, 1e-5), (torch.complex64, 1e-5)])
def test_consistent_patches_pass_through_unchanged(dtype: torch.dtype, tol: float) -> None:
    # THE property that justifies the design: if the C patches already agree on the object (cut
    # from one object), the constraint must not alter them anywhere -- neither in the overlap of the
    # central windows (the consensus is the common value) nor outside every window (each member
    # keeps its own prediction). A co-masking error or a sign error in the offsets breaks this.
    # The tolerance is the eps = 1e-6 in the consensus denominator (relative bias <= 1e-6).
    patches = _consistent_group(REL, seed=1, dtype=dtype)[None]
    rel = torch.tensor(REL, dtype=torch.float64)[None]
    out = enforce_overlap(patches, rel)
    assert out.dtype == dtype and out.shape == patches.shape
    torch.testing.assert_close(out, patches, rtol=tol, atol=tol)


def test_consistency_check_is_sensitive_to_the_offset_sign() -> None:
    # Control for the test above: the same patches with mirrored offsets (-rel) do not agree on the
    # object, so the constraint must change them. Without this a no-op would pass.
    patches = _consistent_group(REL, seed=2)[None]
    rel = -torch.tensor(REL, dtype=torch.float64)[None]
    out = enforce_overlap(patches, rel)
    assert float((out - patches).abs().max()) > 0.1


def test_inconsistent_patches_become_consistent_where_windows_cover() -> None:
    rel = REL
    reach = 5
    patches = _cobj((1, len(rel), N, N), seed=3)
    out = enforce_overlap(patches, torch.tensor(rel, dtype=torch.float64)[None])[0]
    frames_out = _to_object_frame(out, rel, reach)
    frames_in = _to_object_frame(patches[0], rel, reach)
    win = central_window(N).double()
    windows = _to_object_frame(win.expand(len(rel), N, N).to(torch.complex128), rel, reach).real
    windows = np.nan_to_num(windows, nan=0.0)
    covered = windows.sum(axis=0)  # number of central windows over each object point
    assert (covered >= 2).sum() > 0  # the windows do overlap (else the test would be vacuous)

    # Every member that sees a window-covered point shows the same value there: the window-weighted
    # mean of the members whose central windows cover that point.
    weighted = np.nansum(np.where(windows > 0, frames_in, 0), axis=0)
    expected = np.where(covered > 0, weighted / np.maximum(covered, 1), np.nan)
    for i in range(len(rel)):
        seen = ~np.isnan(frames_out[i]) & (covered > 0)
        np.testing.assert_allclose(frames_out[i][seen], expected[seen], rtol=2e-6, atol=2e-6)
        # Pixels of member i that no window covers keep the member's own prediction.
        free = ~np.isnan(frames_out[i]) & (covered == 0)
        assert free.sum() > 0
        np.testing.assert_array_equal(frames_out[i][free], frames_in[i][free])

    # In particular members now agree pairwise on the overlap of their own central windows.
    for i in range(len(rel)):
        for j in range(i + 1, len(rel)):
            both = (windows[i] > 0) & (windows[j] > 0)
            if both.any():
                np.testing.assert_allclose(frames_out[i][both], frames_out[j][both], rtol=1e-12, atol=1e-12)


def test_output_is_a_projection() -> None:
    # Applying the constraint twice changes nothing more (consistent sets are fixed points).
    patches = _cobj((2, 4, N, N), seed=4)
    rel = torch.tensor([REL, [(1, 1), (-1, 1), (1, -1), (-1, -1)]], dtype=torch.float64)
    once = enforce_overlap(patches, rel)
    torch.testing.assert_close(enforce_overlap(once, rel), once, rtol=1e-5, atol=1e-5)


def test_members_are_permutation_equivariant() -> None:
    patches = _cobj((1, 4, N, N), seed=5)
    rel = torch.tensor(REL, dtype=torch.float64)[None]
    perm = torch.tensor([2, 0, 3, 1])
    out = enforce_overlap(patches, rel)
    out_perm = enforce_overlap(patches[:, perm], rel[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-12, atol=1e-12)


def test_gradient_flows_to_all_members_and_couples_them() -> None:
    patches = _cobj((2, 4, N, N), seed=6, dtype=torch.complex64).requires_grad_(True)
    rel = torch.tensor([REL, REL], dtype=torch.float32)
    out = enforce_overlap(patches, rel)
    out.abs().pow(2).sum().backward()
    grad = patches.grad
    assert grad is not None and grad.dtype == torch.complex64
    assert bool(torch.isfinite(torch.view_as_real(grad)).all())
    for b in range(2):
        for c in range(4):
            assert float(grad[b, c].abs().sum()) > 0.0
    # Output member 1 depends on input member 0 through the shared consensus (and on nothing from
    # the other group).
    p = patches.detach().clone().requires_grad_(True)
    enforce_overlap(p, rel)[0, 1].abs().pow(2).sum().backward()
    assert float(p.grad[0, 0].abs().sum()) > 0.0
    assert float(p.grad[1].abs().sum()) == 0.0


def test_groups_with_different_offset_magnitudes_in_one_batch() -> None:
    # The canvas is sized by the largest offset in the batch; a group with small offsets must give
    # the same result as when processed alone on its own smaller canvas.
    small = [(1, 0), (0, -1), (-1, 1), (1, 1)]
    large = [(-7, 6), (7, -5), (6, 7), (-6, -7)]
    patches = _cobj((2, 4, N, N), seed=7)
    rel = torch.tensor([small, large], dtype=torch.float64)
    both = enforce_overlap(patches, rel)
    torch.testing.assert_close(both[0:1], enforce_overlap(patches[0:1], rel[0:1]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(both[1:2], enforce_overlap(patches[1:2], rel[1:2]), rtol=1e-12, atol=1e-12)
    # And consistent sets of both magnitudes pass through in the same batch.
    consistent = torch.stack([_consistent_group(small, seed=8), _consistent_group(large, seed=9)])
    torch.testing.assert_close(enforce_overlap(consistent, rel), consistent, rtol=1e-5, atol=1e-5)


def test_members_without_any_overlap_are_untouched() -> None:
    # Offsets so far apart that no two N x N patches share an object point: each member's own
    # window covers only itself, so consensus == own value and nothing changes.
    patches = _cobj((1, 2, N, N), seed=10)
    rel = torch.tensor([[(-20, 0), (20, 0)]], dtype=torch.float64)
    torch.testing.assert_close(enforce_overlap(patches, rel), patches, rtol=1e-5, atol=1e-5)


def test_complex64_in_complex64_out_with_subpixel_offsets() -> None:
    patches = _cobj((3, 4, N, N), seed=11, dtype=torch.complex64)
    rel = torch.tensor(np.random.default_rng(12).uniform(-4, 4, (3, 4, 2)), dtype=torch.float32)
    out = enforce_overlap(patches, rel)
    assert out.dtype == torch.complex64 and out.shape == (3, 4, N, N)
    assert bool(torch.isfinite(torch.view_as_real(out)).all())


def test_subpixel_consistent_patches_pass_through_unchanged() -> None:
    # Real scan offsets are sub-pixel. Patches cut from one object with the exact rule (integer window +
    # Fourier shift, as the simulator and refinement see the object) agree on the object, so the
    # constraint must leave them as they are to round-off: nothing is interpolated, nothing blurred.
    obj = _cobj((48, 48), seed=14)
    rel_sub = [(-2.5, 1.25), (3.75, -0.5), (0.25, 2.0), (-1.0, -3.5)]
    pos = np.array([24.0, 24.0])[None] + np.array(rel_sub)
    cut = extract_exact(obj, pos, N)[None]
    out_sub = enforce_overlap(cut, torch.tensor(rel_sub, dtype=torch.float64)[None])
    torch.testing.assert_close(out_sub, cut, rtol=1e-5, atol=1e-5)  # eps of the consensus


def test_subpixel_offsets_keep_the_highest_frequencies() -> None:
    # A checkerboard (Nyquist) seen by two members half a pixel apart: bilinear placement would average
    # it away; the exact rule keeps the members' agreeing content at full contrast.
    yy, xx = np.mgrid[:48, :48]
    obj = torch.from_numpy(np.exp(1j * 0.5 * (-1.0) ** (yy + xx)))
    rel_sub = [(-0.25, 0.0), (0.25, 0.0)]
    pos = np.array([24.0, 24.0])[None] + np.array(rel_sub)
    cut = extract_exact(obj, pos, N)[None]
    out = enforce_overlap(cut, torch.tensor(rel_sub, dtype=torch.float64)[None])
    torch.testing.assert_close(out, cut, rtol=1e-5, atol=1e-5)
    assert float(out.angle().std()) > 0.4


def test_custom_window_all_ones_averages_everywhere() -> None:
    patches = _consistent_group(REL, seed=13)[None]
    rel = torch.tensor(REL, dtype=torch.float64)[None]
    out = enforce_overlap(patches, rel, window=torch.ones(N, N))
    torch.testing.assert_close(out, patches, rtol=1e-5, atol=1e-5)
