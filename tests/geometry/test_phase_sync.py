"""Phase synchronisation (src/ptychopinn/inference/phase_sync.py): true patches given random per-patch phase
offsets and amplitude gains stitch back to the truth once the offsets are solved for the whole scan."""

from __future__ import annotations

import numpy as np
from exact_scan import jittered_raster, smooth_object, true_patches

from ptychopinn.inference.stitch import Stitcher
from ptychopinn.metrics import evaluate

N, WINDOW = 64, 20


def _stitch(patches: np.ndarray, pos: np.ndarray, shape: tuple[int, int], **kw: object) -> tuple[np.ndarray, Stitcher]:
    st = Stitcher(shape, WINDOW, **kw)  # type: ignore[arg-type]
    st.add(patches[:100], pos[:100])  # in two batches: synchronisation sees the whole scan
    st.add(patches[100:], pos[100:])
    obj, _ = st.result()
    return obj, st


def test_random_phase_offsets_and_gains_are_undone() -> None:
    obj = smooth_object(192, cutoff=0.2, seed=5)
    pos = jittered_raster(40.0, 8.0, 14, jitter=1.0, seed=6)
    rng = np.random.default_rng(7)
    offsets = rng.uniform(-np.pi, np.pi, len(pos))
    gains = np.exp(rng.normal(0.0, 0.2, len(pos)))
    patches = true_patches(obj, pos, N) * (gains * np.exp(1j * offsets))[:, None, None].astype(np.complex64)
    mask = np.zeros(obj.shape, bool)
    mask[44:40 + 8 * 13 - 4, 44:40 + 8 * 13 - 4] = True

    plain, _ = _stitch(patches, pos, obj.shape)
    phase_only, _ = _stitch(patches, pos, obj.shape, sync=True, sync_amplitude=False)
    both, st = _stitch(patches, pos, obj.shape, sync=True)
    q_plain = evaluate(plain, obj, mask=mask, align=False)
    q_phase = evaluate(phase_only, obj, mask=mask, align=False)
    q_both = evaluate(both, obj, mask=mask, align=False)
    assert q_plain["phase"]["ssim"] < 0.5  # averaging random offsets destroys the phase
    assert q_phase["phase"]["ssim"] > 0.99, q_phase["phase"]
    assert q_both["phase"]["ssim"] > 0.99 and q_both["amplitude"]["ssim"] > 0.99, q_both
    # the solved gains undo the applied ones up to one global complex factor
    assert st.gains is not None
    undone = st.gains * gains * np.exp(1j * offsets)
    undone /= undone.mean()
    assert np.max(np.abs(undone - 1)) < 1e-3


def test_isolated_windows_keep_unit_gain() -> None:
    obj = smooth_object(200, seed=1)
    pos = np.array([[50.0, 50.0], [150.0, 150.0]])  # 100 px apart: their windows never overlap
    patches = true_patches(obj, pos, N) * np.exp(1j * np.array([0.5, -1.0]))[:, None, None].astype(np.complex64)
    st = Stitcher(obj.shape, WINDOW, sync=True)
    st.add(patches, pos)
    st.result()
    assert st.gains is not None and np.allclose(st.gains, 1.0)
