"""Probes from elsewhere: another file (``--probe FILE``) or an estimate from the diffraction data."""

from __future__ import annotations

import numpy as np

PROBE_ESTIMATE = "estimate"
"""The ``--probe`` value that asks for an estimate from the data."""

ESTIMATE_NOTE = "estimated from the mean diffraction pattern (zero-phase; refine it with --refine-probe)"


def estimate_probe(diffraction: np.ndarray, batch: int = 256) -> np.ndarray:
    """A first probe guess from the data: the inverse transform of the root-mean-square far-field amplitude.

    For an object close to a transmitting one, the mean measured intensity is about ``|FFT(probe)|^2``; taking
    its square root with zero phase gives a centred probe with the right size, brightness and far-field
    extent (``sum |probe|^2`` equals the mean pattern's counts), which refinement then improves.

    Args:
        diffraction: ``[M, N, N]`` float amplitude sqrt(counts), DC at ``(N/2, N/2)`` (a memmap is read in
            batches).
        batch: patterns summed at a time.

    Returns:
        ``[N, N]`` complex64 probe on the object pixel grid, centred at ``(N/2, N/2)``.
    """
    import torch

    from ptychopinn.physics.fft import ifft2c

    m, n = diffraction.shape[0], diffraction.shape[-1]
    total = np.zeros((n, n), np.float64)
    for lo in range(0, m, batch):
        chunk = np.asarray(diffraction[lo:lo + batch], dtype=np.float64)
        total += np.einsum("mij,mij->ij", chunk, chunk)
    spectrum = torch.from_numpy(np.sqrt(total / max(m, 1)).astype(np.complex64))
    return ifft2c(spectrum).numpy().astype(np.complex64)
