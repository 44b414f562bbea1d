"""The global probe guess of the reference API: :func:`set_probe_guess` and :func:`get_probe`.

The PINN model carries its own (trained) probe inside the model archive, so reconstruction does not
depend on this state; it is kept for code written against the reference, which sets it before
inference. numpy only (cheap to import).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ptycho import params
from ptycho._arrays import probe_2d, to_numpy
from ptychopinn.errors import DataFormatError, describe_array

__all__ = ["get_probe", "probe_from_data", "set_probe_guess"]

_state: dict[str, np.ndarray] = {}


def probe_from_data(X_train: Any) -> np.ndarray:  # noqa: N803 - reference argument name
    """A probe estimate from diffraction amplitudes (:func:`ptychopinn.io.probe.estimate_probe`, the one rule of
    the package: root-mean-square far-field amplitude inside its fitted aperture, zero phase), scaled to a peak
    amplitude of 1.

    ``X_train``: ``[B, N, N]`` or ``[B, N, N, C]`` (channels last) amplitudes, zero frequency at pixel
    ``(N/2, N/2)``. Returns ``[N, N]`` complex64, centred. Phases are unknown (the estimate is the in-focus
    probe of the aperture), so this is only a starting guess of the probe's size and shape.
    """
    from ptychopinn.io.probe import estimate_probe

    x = to_numpy(X_train).astype(np.float64, copy=False)
    if x.ndim == 4:
        x = np.moveaxis(x, -1, 1).reshape(-1, x.shape[1], x.shape[2])
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != x.shape[-2] or x.shape[0] == 0:
        raise DataFormatError(f"X_train: expected amplitudes [B, N, N] or [B, N, N, C], found {describe_array(x)}; "
                              f"pass the diffraction amplitudes")
    field = estimate_probe(x)
    peak = float(np.abs(field).max())
    if not peak > 0.0:
        raise DataFormatError("X_train: all diffraction amplitudes are zero; cannot estimate a probe from them")
    return (field / peak).astype(np.complex64)


def set_probe_guess(X_train: Any = None, probe_guess: Any = None) -> np.ndarray:  # noqa: N803
    """Set the global probe and return it as ``[N, N]`` complex64.

    ``probe_guess``: ``(N, N)``, ``(1, N, N)`` (ptychodus, modes first) or ``(N, N, 1)`` complex; with
    several modes, mode 0 is used. When it is None the probe is estimated from ``X_train`` with
    :func:`probe_from_data`. The probe is also stored as ``ptycho.params.cfg['probe']``.
    """
    if probe_guess is not None:
        probe = probe_2d(probe_guess, "probe_guess")
    elif X_train is not None:
        probe = probe_from_data(X_train)
    else:
        raise DataFormatError("set_probe_guess: expected probe_guess (a complex [N, N] array) or X_train "
                              "(diffraction amplitudes), found neither; pass one of them")
    _state["probe"] = probe
    params.cfg["probe"] = probe
    return probe


def get_probe() -> np.ndarray:
    """The probe set by :func:`set_probe_guess` (``[N, N]`` complex64); ``KeyError`` if none was set."""
    try:
        return _state["probe"]
    except KeyError:
        raise KeyError("no probe has been set; call ptycho.probe.set_probe_guess(None, probe) first") from None
