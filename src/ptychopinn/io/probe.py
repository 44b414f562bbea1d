"""Probes from elsewhere: another file (``--probe FILE``) or an estimate from the diffraction data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ptychopinn.io.frames import CropWindow

PROBE_ESTIMATE = "estimate"
"""The ``--probe`` value that asks for an estimate from the data."""

PROBE_ESTIMATED = "probe_estimated"
"""``ScanData.metadata`` key, True when the scan's probe is :func:`estimate_probe`'s (refinement then starts it
from the best of several defocus candidates and refines it, :mod:`ptychopinn.refine.probe_choice`)."""



def probe_is_estimated(metadata: Mapping[str, Any]) -> bool:
    """Whether a scan's probe is :func:`estimate_probe`'s (``metadata[PROBE_ESTIMATED]``, set by every reader)."""
    return bool(metadata.get(PROBE_ESTIMATED, False))


ESTIMATE_NOTE = "estimated from the mean diffraction pattern (aperture fitted, zero phase; refinement chooses " \
                "its defocus and refines it)"

APERTURE_LEVEL = 0.1
"""The fitted aperture is where the smoothed root-mean-square far-field amplitude reaches this fraction of its
peak (enclosed holes, such as a zone plate's central stop, included)."""


def mean_far_field(diffraction: np.ndarray, batch: int = 256) -> np.ndarray:
    """``[N, N]`` float64 root-mean-square amplitude over all patterns (DC at ``(N/2, N/2)``), read in batches."""
    m, n = diffraction.shape[0], diffraction.shape[-1]
    total = np.zeros((n, n), np.float64)
    for lo in range(0, m, batch):
        chunk = np.asarray(diffraction[lo:lo + batch], dtype=np.float64)
        total += np.einsum("mij,mij->ij", chunk, chunk)
    return np.sqrt(total / max(m, 1))


def aperture(amplitude: np.ndarray, level: float = APERTURE_LEVEL) -> np.ndarray:
    """``[N, N]`` float64 soft aperture in [0, 1] fitted to a far-field amplitude (see :data:`APERTURE_LEVEL`):
    1 inside, a one-pixel Gaussian edge, 0 outside. The mean pattern is the probe's far field blurred by the
    object's spectrum, so the light scattered outside the aperture is cut off."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.asarray(amplitude, np.float64), 1.0, mode="wrap")
    peak = float(smooth.max())
    if not peak > 0:
        return np.ones_like(smooth)
    inside = ndimage.binary_fill_holes(smooth >= level * peak)
    labels, count = ndimage.label(inside)
    if count > 1:  # the aperture is the brightest connected region; stray bright pixels are not
        sums = ndimage.sum(smooth, labels, index=np.arange(1, count + 1))
        inside = labels == 1 + int(np.argmax(sums))
    return np.clip(ndimage.gaussian_filter(inside.astype(np.float64), 1.0, mode="wrap"), 0.0, 1.0)


def estimate_probe(diffraction: np.ndarray, batch: int = 256) -> np.ndarray:
    """A first probe guess from the data: the root-mean-square far-field amplitude inside its fitted aperture
    (:func:`aperture`), with zero phase, transformed to the object plane.

    The mean measured intensity is about ``|FFT(probe)|^2`` blurred by the object's spectrum, so its support
    gives the probe's aperture and its level the probe's brightness (``sum |probe|^2`` is the mean pattern's
    counts inside the aperture). It does not give the far-field phase: this estimate is the in-focus probe
    of that aperture. A defocused probe (zone plate out of focus) differs from it by a quadratic far-field
    phase, which :mod:`ptychopinn.refine.probe_choice` chooses by a short trial before refinement.

    Args:
        diffraction: ``[M, N, N]`` float amplitude sqrt(counts), DC at ``(N/2, N/2)`` (a memmap is read in
            batches).
        batch: patterns summed at a time.

    Returns:
        ``[N, N]`` complex64 probe on the object pixel grid, centred at ``(N/2, N/2)``.
    """
    import torch

    from ptychopinn.physics.fft import ifft2c

    amp = mean_far_field(diffraction, batch)
    spectrum = torch.from_numpy((amp * aperture(amp)).astype(np.complex64))
    return ifft2c(spectrum).numpy().astype(np.complex64)


def scan_probe(given: np.ndarray | str | None, diffraction: np.ndarray, file_probe: Callable[[], np.ndarray],
               metadata: dict[str, Any], *, window: CropWindow | None = None, modes: np.ndarray | None = None,
               path: Path | str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """The probe a reader gives its scan, and the probe modes it keeps: ``given`` (an ``[N, N]`` array), an
    estimate from ``diffraction`` (``'estimate'``; :data:`PROBE_ESTIMATED` set in ``metadata``) or the file's
    own (None: ``file_probe()``, with its incoherent ``modes`` ``[K, N, N]`` if the file has several). With a
    crop ``window`` a probe of the full frames is resampled to the crop
    (:func:`~ptychopinn.io.frames.probe_for_window`); ``diffraction`` is already cropped.

    Returns:
        ``(probe [N, N], modes [K, N, N] or None)``; modes only with the file's own probe.

    Raises:
        ConfigError: ``given`` is a string other than ``'estimate'``.
        DataFormatError: a probe that fits neither the frames nor the crop.
    """
    from ptychopinn.errors import ConfigError
    from ptychopinn.io.frames import probe_for_window

    if isinstance(given, str):
        if given != PROBE_ESTIMATE:
            raise ConfigError(f"probe must be an array or 'estimate', got {given!r}")
        metadata[PROBE_ESTIMATED] = True
        return estimate_probe(diffraction), None
    if given is None:  # the file's own probe: an estimate only where the file's metadata says so
        probe = file_probe()
        if window is not None:
            probe = probe_for_window(probe, window, path, "the file's probe")
            if modes is not None:
                modes = np.stack([probe_for_window(mode, window, path, "a probe mode") for mode in modes])
        return probe, modes
    metadata.pop(PROBE_ESTIMATED, None)
    probe = np.asarray(given)
    return (probe if window is None else probe_for_window(probe, window, path, "the given probe")), None
