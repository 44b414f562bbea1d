"""Small numpy helpers shared by the compatibility modules (layout fixes for legacy array shapes)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ptychopinn.errors import DataFormatError, describe_array

logger = logging.getLogger("ptycho")


def to_numpy(a: Any) -> np.ndarray:
    """A numpy view of ``a`` (numpy array, torch tensor on any device, or array-like)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor; no torch import needed to detect it
        return a.detach().cpu().numpy()
    return np.asarray(a)


def probe_2d(probe: Any, name: str = "probeGuess") -> np.ndarray:
    """The probe as ``[N, N]`` complex64, from any of the layouts seen in the wild.

    Accepted: ``(N, N)``; modes-first ``(K, N, N)`` (ptychodus: ``(incoherent modes, N, N)``) and
    ``(1, K, N, N)``; channels-last ``(N, N, 1)`` (the reference's TF layout). With several modes the
    first (dominant) mode is used and a warning is logged, because the PINN forward model is
    single-mode.
    """
    p = to_numpy(probe)
    if not (np.issubdtype(p.dtype, np.number) and p.dtype != np.bool_):
        raise DataFormatError(f"{name}: expected a complex [N, N] probe, found {describe_array(p)}; "
                              f"pass the probe as a complex array")
    if p.ndim == 3 and p.shape[0] == p.shape[1] and p.shape[2] == 1 and p.shape[1] != p.shape[2]:
        p = p[..., 0]  # (N, N, 1) channels-last
    while p.ndim > 2 and p.shape[-1] == p.shape[-2]:
        if p.shape[0] > 1:
            logger.warning("%s has %d modes along axis 0 (shape %s); using mode 0 only, the PINN forward "
                           "model is single-mode", name, p.shape[0], p.shape)
        p = p[0]
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 2:
        raise DataFormatError(f"{name}: expected a square probe (N, N), (modes, N, N) or (N, N, 1), found "
                              f"{describe_array(p)}; pass the probe on the N x N detector-size grid")
    if not np.all(np.isfinite(p)):
        raise DataFormatError(f"{name}: expected finite values, found NaN/Inf; repair the probe")
    return np.ascontiguousarray(p, dtype=np.complex64)
