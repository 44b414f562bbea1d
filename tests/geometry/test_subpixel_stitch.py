"""Stitching the TRUE patches of a jittered scan gives back the object (src/ptychopinn/inference/stitch.py).

The patches are cut exactly at sub-pixel positions (Fourier shift of a band-limited periodic object), so any
loss is the stitcher's own. Bilinear placement of the same windows (what stitching did before) is measured
alongside: it low-pass filters every window and loses structural similarity.
"""

from __future__ import annotations

import numpy as np
import torch
from exact_scan import jittered_raster, smooth_object, true_patches

from ptychopinn.inference.stitch import Stitcher, canvas_geometry, crop_window, stitch_patches
from ptychopinn.metrics import evaluate
from ptychopinn.physics.patches import place_patches

N, WINDOW = 64, 20


def _bilinear(patches: np.ndarray, pos: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    win = crop_window(torch.from_numpy(patches), WINDOW)
    p = torch.from_numpy(pos)
    num = place_patches(win, p, shape)
    den = place_patches(torch.ones(win.shape, dtype=torch.float32), p, shape)
    return torch.where(den > 1e-6, num / den.clamp_min(1e-6), 0).numpy()


def test_exact_patches_of_a_jittered_scan_reproduce_the_object() -> None:
    obj = smooth_object(192, cutoff=0.3, seed=3)
    pos = jittered_raster(40.0, 9.0, 13, jitter=1.0, seed=4)  # 169 points, +-1 px sub-pixel jitter
    assert np.abs(pos - np.round(pos)).min() > 0 and np.abs(pos - np.round(pos)).max() > 0.45
    patches = true_patches(obj, pos, N)
    rec, cov = stitch_patches(patches, pos, WINDOW, shape=obj.shape)
    mask = cov > 0
    assert np.all(cov == np.round(cov))  # windows land on whole pixels: coverage counts windows
    q = evaluate(rec, obj, mask=mask, align=False)
    assert q["amplitude"]["ssim"] >= 0.99 and q["phase"]["ssim"] >= 0.99, q
    assert q["amplitude"]["psnr"] >= 60.0 and q["phase"]["psnr"] >= 60.0, q
    assert float(np.abs(rec[mask] - obj[mask]).max()) < 5e-3
    # The bilinear placement the stitcher used before loses detail on the very same windows.
    old = evaluate(_bilinear(patches, pos, obj.shape), obj, mask=mask, align=False)
    assert old["amplitude"]["ssim"] < q["amplitude"]["ssim"] - 0.01, (old, q)


def test_streaming_with_fractional_origin_matches_the_object_grid() -> None:
    """A canvas whose origin is a fraction of a pixel samples the object between its pixels: stitched in
    small batches, it equals the truth moved by that fraction."""
    obj = smooth_object(128, cutoff=0.25, seed=5)
    pos = jittered_raster(40.0, 6.0, 9, jitter=1.0, seed=6)
    patches = true_patches(obj, pos, N)
    origin = (10.3, 7.6)
    shape, _ = canvas_geometry(pos - np.asarray(origin), N, WINDOW)
    st = Stitcher(shape, WINDOW, origin=origin, flush_size=16)
    for s in range(0, len(pos), 10):
        st.add(patches[s:s + 10], pos[s:s + 10])
    rec, cov = st.result()
    # truth sampled at object points (origin_y + row, origin_x + col)
    moved = true_patches(obj, np.array([origin]), max(shape), centre=0)[0][:shape[0], :shape[1]]
    mask = cov > 0
    assert mask.sum() > 2000
    assert float(np.abs(rec[mask] - moved[mask]).max()) < 5e-3
