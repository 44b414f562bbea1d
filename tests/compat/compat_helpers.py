"""Shared helpers (imported as ``compat_helpers``) for the ``ptycho`` compatibility tests: small simulated
scans, NPZ files written the way ptychodus 1.7.0 writes them (``save_ptychopinn_training_data``), untrained
models and an orientation-aware comparison with the ground truth."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

N = 32
OBJECT_SIZE = 64


@functools.lru_cache(maxsize=8)
def sim_scan(seed: int, size: int = OBJECT_SIZE, kind: str = "lines") -> Any:
    """A simulated N=32 scan (ScanData: amplitude diffraction, positions, probe, truth object)."""
    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_scan

    return simulate_scan(SimulationConfig(N=N, object_size=size, object_kind=kind, seed=seed, nphotons=1e6))


def counts_of(scan: Any, dtype: Any = np.uint16) -> np.ndarray:
    """The scan's diffraction as photon counts (amplitude squared, rounded) in ``dtype``."""
    counts = np.round(scan.diffraction.astype(np.float64) ** 2)
    return counts.astype(dtype)


def write_ptychodus_npz(path: Path, scan: Any, diff3d: np.ndarray) -> Path:
    """Write ``path`` with exactly the keys, shapes and dtypes of ptychodus's training-data export (§5)."""
    x = scan.positions[:, 0].astype(np.float64)
    y = scan.positions[:, 1].astype(np.float64)
    np.savez(path, xcoords=x, ycoords=y, xcoords_start=x, ycoords_start=y, diff3d=diff3d,
             bad_pixels=np.zeros(diff3d.shape[-2:], dtype=bool),
             probeGuess=scan.probe[None].astype(np.complex64),  # (1, N, N) modes first
             objectGuess=scan.obj.astype(np.complex64), scan_index=np.zeros(len(x), dtype=int))
    return path


def untrained_model(gridsize: int = 1, intensity_scale: float = 30.0, seed: int = 0) -> Any:
    """A randomly initialised PtychoPINN (N=32, n_filters_scale=1): fast, deterministic, untrained."""
    import torch

    from ptychopinn.config import ModelConfig
    from ptychopinn.models.pinn import PtychoPINN

    torch.manual_seed(seed)
    probe = sim_scan(1).probe
    return PtychoPINN(ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1), probe, intensity_scale).eval()


def _norm_corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def compare_with_truth(canvas: np.ndarray, truth: np.ndarray, margin: int = 2) -> dict[str, Any]:
    """Quality and orientation of a stitched canvas on the truth's pixel grid.

    Works on the bounding box of the covered (nonzero) pixels shrunk by ``margin``; removes the global
    phase offset. Returns ``phase_corr``/``amp_corr`` (Pearson, recon vs truth), ``shift`` (dy, dx) from
    ``skimage.registration.phase_cross_correlation`` of the phase images (0 = no displacement), and
    ``flipped_phase_corr``: Pearson of the recon phase with the truth flipped up-down, left-right and
    transposed (each must correlate worse than the unflipped truth).
    """
    from skimage.registration import phase_cross_correlation

    assert canvas.shape == truth.shape
    rows = np.flatnonzero(np.abs(canvas).sum(axis=1) > 0)
    cols = np.flatnonzero(np.abs(canvas).sum(axis=0) > 0)
    r0, r1 = rows[0] + margin, rows[-1] + 1 - margin
    c0, c1 = cols[0] + margin, cols[-1] + 1 - margin
    rec = canvas[r0:r1, c0:c1]
    covered = np.abs(rec) > 0
    assert covered.mean() > 0.99, "the scanned box must be fully covered"

    def box(t: np.ndarray) -> np.ndarray:
        return t[r0:r1, c0:c1]

    t = box(truth)
    rot = np.exp(-1j * np.angle(np.sum(rec * np.conj(t))))  # remove the global phase offset
    rec_phase = np.angle(rec * rot)
    t_phase = np.angle(t)
    shift, _, _ = phase_cross_correlation(t_phase, rec_phase, upsample_factor=10, normalization=None)
    flips = {"updown": truth[::-1, :], "leftright": truth[:, ::-1], "transpose": truth.T}
    return {
        "phase_corr": _norm_corr(rec_phase, t_phase),
        "amp_corr": _norm_corr(np.abs(rec), np.abs(t)),
        "shift": (float(shift[0]), float(shift[1])),
        "flipped_phase_corr": {k: _norm_corr(rec_phase, np.angle(box(v))) for k, v in flips.items()},
        "box": (int(r0), int(r1), int(c0), int(c1)),
    }
