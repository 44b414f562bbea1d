"""Mixed-state (multi-mode) probes: a partially coherent beam as K mutually incoherent modes.

A detector records the sum of the modes' intensities, ``I = sum_k |F(P_k O)|**2``, so K modes describe a
beam whose coherence is partial (a source larger than the coherence length, vibrations, a detector
point-spread), which a single probe cannot explain however it is refined. The model is unchanged by any
unitary mixing of the modes, so after each pass with probe updates they are *orthogonalised*: the singular
value decomposition ``P = U S V^H`` of the ``[K, N*N]`` mode matrix gives the modes ``S V^H`` (the same
density matrix ``P^H P``), strongest first, mutually orthogonal.

Start (:func:`initial_modes`): the modes the file carries (``ScanData.probe_modes``), then, up to K, new
modes that are the first mode times low-order polynomials of the position over the probe (``x``, ``y``,
``x y``, ``x**2 - y**2``, ...; the shapes a small incoherent blur of the beam adds), each with
:data:`NEW_MODE_POWER` of the total power, orthogonalised; the total power is the first mode's (the data's
counts fix it). New modes are only a start: they must be refined (``refine_probe``).
"""

from __future__ import annotations

import numpy as np
import torch

from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError

__all__ = ["MAX_MODES", "NEW_MODE_POWER", "file_modes", "initial_modes", "orthogonalise", "resolve_modes"]

NEW_MODE_POWER = 0.05
"""Power of each added mode as a fraction of the total, before orthogonalisation."""

MAX_MODES = 8
"""Most modes a refinement takes (each one costs a probe's worth of transforms per pattern)."""

_MODULATIONS = ((1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (2, 1), (1, 2))
"""Powers ``(a, b)`` of ``x**a y**b`` that shape the added modes, in order."""


def file_modes(scan: ScanData) -> int:
    """How many probe modes ``scan`` carries (1 without ``probe_modes``)."""
    return 1 if scan.probe_modes is None else int(scan.probe_modes.shape[0])


def resolve_modes(scan: ScanData, requested: int | None) -> int:
    """The number of modes a refinement of ``scan`` uses: ``requested``, or the scan's own (None).

    Raises:
        ConfigError: more than :data:`MAX_MODES`.
    """
    k = file_modes(scan) if requested is None else int(requested)
    if k > MAX_MODES:
        raise ConfigError(f"probe_modes: expected at most {MAX_MODES} modes, found {k}; use fewer modes")
    return k


def orthogonalise(modes: torch.Tensor) -> torch.Tensor:
    """``[K, N, N]`` complex modes made mutually orthogonal, strongest first, with the same density matrix
    (module docstring); ``[N, N]`` (one mode) is returned as is."""
    if modes.dim() == 2:
        return modes
    k, n = int(modes.shape[0]), int(modes.shape[-1])
    u, s, vh = torch.linalg.svd(modes.reshape(k, n * n), full_matrices=False)
    return (s.to(modes.dtype)[:, None] * vh).reshape(k, n, n)


def initial_modes(scan: ScanData, k: int) -> np.ndarray:
    """The ``[k, N, N]`` complex64 start of a ``k``-mode probe of ``scan`` (module docstring); ``[N, N]`` for
    ``k == 1`` (the scan's ``probe``)."""
    probe = np.asarray(scan.probe, np.complex64)
    if k <= 1:
        return probe
    given = [probe] if scan.probe_modes is None else list(np.asarray(scan.probe_modes, np.complex64))
    given = given[:k]
    total = float(sum(np.sum(np.abs(m.astype(np.complex128)) ** 2) for m in given))
    n = probe.shape[-1]
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    weight = np.abs(probe.astype(np.complex128)) ** 2
    w = weight / max(float(weight.sum()), 1e-300)
    cx, cy = float((w * xx).sum()), float((w * yy).sum())
    sx = max(float(np.sqrt((w * (xx - cx) ** 2).sum())), 1.0)
    sy = max(float(np.sqrt((w * (yy - cy) ** 2).sum())), 1.0)
    x, y = (xx - cx) / sx, (yy - cy) / sy
    added = []
    for a, b in _MODULATIONS[:k - len(given)]:
        mode = probe * (x**a * y**b)
        power = float(np.sum(np.abs(mode) ** 2))
        added.append(mode * np.sqrt(NEW_MODE_POWER * total / max(power, 1e-300)))
    modes = torch.from_numpy(np.stack([*given, *added]).astype(np.complex64))
    modes = orthogonalise(modes)
    # the data's counts fix the total power: the given modes' total
    modes = modes * float(np.sqrt(total / max(float(modes.abs().square().sum()), 1e-300)))
    return modes.numpy().astype(np.complex64)
