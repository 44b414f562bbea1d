"""Shared helpers for the ``ptycho_torch`` compatibility tests: small simulated N=32 scans, NPZ files the way
ptychodus 1.7.0 exports them, and a comparison with the ground truth."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

N = 32
OBJECT_SIZE = 96


@functools.lru_cache(maxsize=8)
def sim_scan(seed: int, size: int = OBJECT_SIZE, kind: str = "lines") -> Any:
    """A simulated N=32 scan (ScanData: amplitude diffraction, positions (x, y), probe, truth object)."""
    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_scan

    return simulate_scan(SimulationConfig(N=N, object_size=size, object_kind=kind, seed=seed, nphotons=1e6))


def counts_of(scan: Any, dtype: Any = np.uint16) -> np.ndarray:
    """The scan's diffraction as photon counts (amplitude squared, rounded) in ``dtype``."""
    return np.round(scan.diffraction.astype(np.float64) ** 2).astype(dtype)


def norm_corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def phase_corr_with_truth(canvas: np.ndarray, truth: np.ndarray, positions_xy: np.ndarray, N: int = N) -> float:
    """Phase correlation of a canvas returned by ``predict_and_stitch`` with the truth.

    The canvas centre is the midpoint of the scan's bounding box (documented convention); the comparison uses
    the box spanned by the scan positions (every pixel there is covered), after removing the global phase."""
    mid_x = 0.5 * (positions_xy[:, 0].min() + positions_xy[:, 0].max())
    mid_y = 0.5 * (positions_xy[:, 1].min() + positions_xy[:, 1].max())
    h, w = canvas.shape
    r0 = int(round(mid_y - (h - 1) / 2))
    c0 = int(round(mid_x - (w - 1) / 2))
    y_lo, y_hi = int(np.ceil(positions_xy[:, 1].min())), int(np.floor(positions_xy[:, 1].max()))
    x_lo, x_hi = int(np.ceil(positions_xy[:, 0].min())), int(np.floor(positions_xy[:, 0].max()))
    rec = canvas[y_lo - r0:y_hi - r0 + 1, x_lo - c0:x_hi - c0 + 1]
    t = truth[y_lo:y_hi + 1, x_lo:x_hi + 1]
    assert rec.shape == t.shape and (np.abs(rec) > 0).mean() > 0.99
    rot = np.exp(-1j * np.angle(np.sum(rec * np.conj(t))))
    return norm_corr(np.angle(rec * rot), np.angle(t))


def write_export_npz(path: Path, scan: Any, diff3d: np.ndarray) -> Path:
    """Write ``path`` with the keys, shapes and dtypes of ptychodus's ``save_ptychopinn_training_data``."""
    x = scan.positions[:, 0].astype(np.float64)
    y = scan.positions[:, 1].astype(np.float64)
    np.savez(path, xcoords=x, ycoords=y, xcoords_start=x, ycoords_start=y, diff3d=diff3d,
             bad_pixels=np.zeros(diff3d.shape[-2:], dtype=bool), probeGuess=scan.probe[None].astype(np.complex64),
             objectGuess=scan.obj.astype(np.complex64), scan_index=np.zeros(len(x), dtype=int))
    return path
