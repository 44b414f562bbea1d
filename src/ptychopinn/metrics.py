"""Evaluation of a reconstructed complex object against ground truth on the same pixel grid.

Images are ``[H, W]`` arrays indexed ``[row, col]`` (stitched canvas pixel (row, col) = object pixel
(y, x)); ramps use ``x = column``, ``y = row`` in pixels from the array centre. The ambiguities a
ptychographic reconstruction cannot resolve are removed first: global phase (always), a linear phase
ramp (optional), a sub-pixel translation (optional registration) and the global amplitude scale.
Deliberate conventions (reference pitfall 21): PSNR peak = the truth's data range, not 255; the phase
ramp is one joint fit of the phase *difference*; FRC in cycles/pixel and resolutions in pixels.
Importing this module loads neither matplotlib nor torch; scipy and scikit-image load lazily.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ptychopinn.errors import DataFormatError, describe_array
from ptychopinn.frc import frc, frc_resolution, half_bit_threshold, ring_pixel_counts, tukey_window_2d

__all__ = [
    "PSNR_CAP_DB",
    "AlignmentInfo",
    "align_for_comparison",
    "evaluate",
    "fit_phase_ramp",
    "frc",
    "frc_resolution",
    "half_bit_threshold",
    "register_subpixel",
    "remove_global_phase",
    "remove_phase_ramp",
    "ring_pixel_counts",
    "tukey_window_2d",
]

#: PSNR (dB) reported for identical images: JSON has no ``inf``, and a large finite value keeps
#: comparisons such as ``psnr >= 30`` meaningful. float64 round-off alone stays below it.
PSNR_CAP_DB = 300.0
_TUKEY_ALPHA = 0.5  # fraction of each axis tapered by the window used for registration and FRC
_MIN_SIDE = 7  # scikit-image's SSIM needs a 7 x 7 window

RegistrationChannel = Literal["amplitude", "complex", "auto"]


# ----------------------------------------------------------------------------------------------- checks
def _complex_image(name: str, a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or not np.iscomplexobj(arr):
        raise DataFormatError(
            f"{name}: expected a 2-D complex array [H, W], found {describe_array(arr)}; "
            f"pass the complex object amplitude * exp(1j * phase), squeezed to 2-D"
        )
    n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if n_bad:
        raise DataFormatError(
            f"{name}: expected finite values, found {n_bad} NaN/inf pixels; clean them (np.nan_to_num) first"
        )
    return arr.astype(np.complex128, copy=False)


def _complex_pair(recon: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    r, t = _complex_image("recon", recon), _complex_image("truth", truth)
    if r.shape != t.shape:
        raise DataFormatError(
            f"recon and truth: expected the same [H, W] shape, found {r.shape} and {t.shape}; "
            f"put the reconstruction on the ground truth's pixel grid first"
        )
    return r, t


def _mask_or_all(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.shape != shape or (m.dtype != bool and not np.all((m == 0) | (m == 1))):
        raise DataFormatError(
            f"mask: expected a boolean (or 0/1) array of shape {shape}, found {describe_array(m)}; "
            f"pass e.g. coverage > 0 on the image grid"
        )
    if not m.any():
        raise DataFormatError("mask: expected at least one True (scanned) pixel, found none; check coverage")
    return m.astype(bool, copy=False)


# ------------------------------------------------------------------------------------ phase alignment
def remove_global_phase(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Multiply ``recon`` by the unit phasor that best aligns it with ``truth``.

    ``exp(i*theta)`` minimises ``sum |exp(i*theta) recon - truth|^2`` over the mask, so
    ``theta = angle(sum(conj(recon) * truth))``: a magnitude-weighted mean phase difference.
    ``recon``, ``truth``: ``[H, W]`` complex; ``mask``: ``[H, W]`` bool or ``None`` (all pixels).
    Returns ``[H, W]`` complex128 (a copy of ``recon`` if the correlation is exactly zero).
    """
    r, t = _complex_pair(recon, truth)
    m = _mask_or_all(mask, r.shape)
    c = np.sum(np.conj(r[m]) * t[m])
    return r.copy() if abs(c) == 0.0 else r * (c / abs(c))


def _centred_xy(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (column) and ``y`` (row) pixel coordinates, ``[H, W]`` float64, zero at the array centre."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return x - (w - 1) / 2.0, y - (h - 1) / 2.0


def fit_phase_ramp(
    recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Joint fit ``angle(recon * conj(truth)) ~ a*x + b*y + c``, weighted by ``|recon| * |truth|``.

    Robust to wrapping: a coarse ramp comes from the peak of the 4x zero-padded FFT of the difference
    field ``recon * conj(truth)``; the small remaining ramp is refined (twice) by weighted least squares
    on the wrapped residual phase. ``recon``, ``truth``: ``[H, W]`` complex; ``mask``: ``[H, W]`` bool.
    Returns ``(a, b, c)``: rad/pixel along x (columns), rad/pixel along y (rows), rad at the array centre.
    """
    r, t = _complex_pair(recon, truth)
    m = _mask_or_all(mask, r.shape)
    z = np.where(m, r * np.conj(t), 0.0)
    wts = np.abs(z[m])
    if wts.sum() == 0.0:
        return 0.0, 0.0, 0.0
    h, w = r.shape
    # A ramp is one frequency of the difference field. 4x padding bounds the residual ramp to 1/8 cycle
    # across the image, so the least-squares refinement never sees a phase wrap.
    spec = np.abs(np.fft.fft2(z, s=(4 * h, 4 * w)))
    ky, kx = np.unravel_index(int(np.argmax(spec)), spec.shape)
    a = 2.0 * np.pi * float(np.fft.fftfreq(4 * w)[kx])
    b = 2.0 * np.pi * float(np.fft.fftfreq(4 * h)[ky])
    c = 0.0
    x, y = _centred_xy(r.shape)
    xm, ym = x[m], y[m]
    sw = np.sqrt(wts)
    design = np.stack([xm, ym, np.ones_like(xm)], axis=1) * sw[:, None]
    for _ in range(2):
        resid = z[m] * np.exp(-1j * (a * xm + b * ym + c))
        c0 = float(np.angle(np.sum(resid)))  # centre the wrapped residual on zero before fitting
        coef, *_ = np.linalg.lstsq(design, np.angle(resid * np.exp(-1j * c0)) * sw, rcond=None)
        a, b, c = a + float(coef[0]), b + float(coef[1]), c + c0 + float(coef[2])
    return a, b, float(np.angle(np.exp(1j * c)))


def remove_phase_ramp(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``recon * exp(-i (a x + b y + c))``, ``[H, W]`` complex128, ``(a, b, c)`` from :func:`fit_phase_ramp`.

    One joint magnitude-weighted fit of the phase *difference* (not separate plane fits of each phase).
    """
    r, t = _complex_pair(recon, truth)
    a, b, c = fit_phase_ramp(r, t, mask)
    x, y = _centred_xy(r.shape)
    return r * np.exp(-1j * (a * x + b * y + c))


# ----------------------------------------------------------------------------------- windowing, shifts
def _shift_spline(a: np.ndarray, shift: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    if np.iscomplexobj(a):
        return _shift_spline(a.real, shift) + 1j * _shift_spline(a.imag, shift)
    return ndimage.shift(a, shift, order=3, mode="nearest")


def register_subpixel(
    recon: np.ndarray,
    truth: np.ndarray,
    upsample: int = 20,
    *,
    channel: RegistrationChannel = "amplitude",
    iterations: int = 3,
    max_shift: float | None = None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Find and apply the sub-pixel translation that registers ``recon`` onto ``truth``.

    Estimate: :func:`skimage.registration.phase_cross_correlation` (upsampled DFT, plain cross-correlation,
    ``normalization=None``) of mean-subtracted, Tukey-windowed images. The window biases one estimate
    toward zero, so it is refined ``iterations`` times by re-registering a spline-shifted copy (about
    0.05 px accuracy on textured images). Apply: a Fourier phase ramp (:func:`scipy.ndimage.fourier_shift`)
    on the mirror-padded complex field (no edge ringing); the ``ceil(|shift|)`` px shifted in at the
    edges hold mirrored content, so crop them afterwards.

    Args:
        recon, truth: ``[H, W]`` complex arrays on the same grid.
        upsample: precision is ``1/upsample`` px.
        channel: ``'amplitude'`` registers ``|recon|`` on ``|truth|``; ``'complex'`` the complex fields
            (global-phase invariant, works for phase-only objects); ``'auto'`` amplitude unless the truth's
            amplitude contrast std/mean < 1e-3.
        iterations: refinement passes (>= 1).
        max_shift: if the estimate exceeds this many px on either axis (or ``recon``'s channel is
            constant), registration is deemed failed: a ``RuntimeWarning`` is issued and no shift applied.

    Returns:
        ``(shifted [H, W] complex128, (dy, dx))``: the shift in px (rows, columns) *applied* to ``recon``,
        i.e. minus the displacement of ``recon`` relative to ``truth``.
    """
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    r, t = _complex_pair(recon, truth)
    if upsample < 1 or iterations < 1 or channel not in ("amplitude", "complex", "auto"):
        raise DataFormatError(
            f"register_subpixel: expected upsample >= 1, iterations >= 1, channel in amplitude/complex/auto, "
            f"found {upsample}, {iterations}, {channel!r}; use the defaults"
        )
    if channel == "auto":
        amp_t = np.abs(t)
        contrast = float(amp_t.std()) / max(float(amp_t.mean()), 1e-300)
        channel = "amplitude" if contrast >= 1e-3 else "complex"
    ref, mov = (np.abs(t), np.abs(r)) if channel == "amplitude" else (t, r)
    total = np.zeros(2)
    # A constant channel (up to round-off) has no feature to register.
    flat = float(np.std(mov)) <= 1e-12 * max(float(np.mean(np.abs(mov))), 1e-300)
    if not flat:
        win = tukey_window_2d(r.shape)
        ref_w = (ref - ref.mean()) * win
        for _ in range(iterations):
            moved = _shift_spline(mov, total) if total.any() else mov
            step, _, _ = phase_cross_correlation(
                ref_w, (moved - moved.mean()) * win, upsample_factor=upsample, normalization=None
            )
            total = total + np.asarray(step, dtype=np.float64)
            if float(np.max(np.abs(step))) < 1.0 / upsample:
                break
    if flat or (max_shift is not None and float(np.max(np.abs(total))) > max_shift):
        warnings.warn(
            f"registration failed (estimate ({total[0]:.2f}, {total[1]:.2f}) px, limit {max_shift}, or a "
            f"constant {channel} image); no shift applied",
            RuntimeWarning,
            stacklevel=2,
        )
        return r.copy(), (0.0, 0.0)
    # Mirror padding makes the periodic extension continuous, so the Fourier shift does not ring
    # along the edges; the pixels shifted in from outside are mirrored content (crop them).
    pad = int(math.ceil(float(np.max(np.abs(total))))) + 8
    padded = np.pad(r, pad, mode="symmetric")
    shifted = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(padded), total))[pad:-pad, pad:-pad]
    return shifted, (float(total[0]), float(total[1]))


# ------------------------------------------------------------------------------------------------- FRC
# ------------------------------------------------------------------------------------------ alignment
@dataclass(frozen=True)
class AlignmentInfo:
    """How :func:`align_for_comparison` produced its crops.

    ``mask``: ``[h, w]`` bool, crop pixels covered by the (shifted) reconstruction; ``shift_px``: ``(dy,
    dx)`` px applied to the reconstruction; ``region``: ``((r0, r1), (c0, c1))`` half-open rows/columns
    of the crop on the input grid; ``amplitude_scale``: factor applied to the reconstruction
    (``mean|truth| / mean|recon|`` on the mask); ``phase_ramp``: removed ``(a, b, c)`` or ``None``.
    """

    mask: np.ndarray
    shift_px: tuple[float, float]
    region: tuple[tuple[int, int], tuple[int, int]]
    amplitude_scale: float
    phase_ramp: tuple[float, float, float] | None


def _fill_uncovered(r: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Truth-free fill of unscanned pixels: mean scanned amplitude times the circular-mean phase."""
    if m.all():
        return r
    s = np.sum(r[m])
    phasor = s / abs(s) if abs(s) > 0 else 1.0
    return np.where(m, r, np.mean(np.abs(r[m])) * phasor)


def _too_small(what: str, found: str) -> DataFormatError:
    return DataFormatError(
        f"evaluation region: expected at least {_MIN_SIDE}x{_MIN_SIDE} scanned pixels after {what}, "
        f"found {found}; scan a larger area, lower border, or pass align=False"
    )


def align_for_comparison(
    recon: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    align: bool = True,
    remove_ramp: bool = False,
    border: int = 2,
    upsample: int = 20,
    channel: RegistrationChannel = "auto",
) -> tuple[np.ndarray, np.ndarray, AlignmentInfo]:
    """Crop, register and phase/amplitude-align a reconstruction to the truth (shared by evaluate and plots).

    Steps: crop both to the bounding box of ``mask`` minus ``border`` px per side; fill unscanned pixels
    of the reconstruction inside the box with a truth-free constant (mean scanned amplitude x circular-mean
    phase) so Fourier steps see no holes; if ``align``, register (:func:`register_subpixel`, limited to a
    quarter of the box side), shift the mask along (a pixel stays valid only if all its interpolation
    sources were scanned) and crop ``ceil(|dy|)`` rows and ``ceil(|dx|)`` columns more per side (mirrored
    content); remove the global phase and, if ``remove_ramp``, a joint phase ramp, both fitted on the
    mask; rescale by ``mean|truth| / mean|recon|`` over the mask (global amplitude-scale ambiguity).

    ``recon``, ``truth``: ``[H, W]`` complex, same grid; ``mask``: ``[H, W]`` bool scanned pixels (``None``:
    ``|recon| > 0``); ``border``: px >= 0; ``upsample``, ``channel``: see :func:`register_subpixel`.
    Returns ``(recon_crop, truth_crop, info)``: two ``[h, w]`` complex128 arrays, an :class:`AlignmentInfo`.
    """
    from scipy import ndimage

    r, t = _complex_pair(recon, truth)
    if border < 0:
        raise DataFormatError(f"border: expected >= 0 pixels, found {border}; use e.g. border=2")
    if mask is None and not np.any(np.abs(r) > 0):
        raise DataFormatError(
            "recon: expected non-zero pixels to define the scanned region, found all zeros; pass mask="
        )
    m = np.abs(r) > 0 if mask is None else _mask_or_all(mask, r.shape)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    r0, r1 = int(rows[0]) + border, int(rows[-1]) + 1 - border
    c0, c1 = int(cols[0]) + border, int(cols[-1]) + 1 - border
    if r1 - r0 < _MIN_SIDE or c1 - c0 < _MIN_SIDE or not m[r0:r1, c0:c1].any():
        raise _too_small(f"trimming {border} px", f"rows [{r0}, {r1}) cols [{c0}, {c1})")
    rc, tc, mc = r[r0:r1, c0:c1], t[r0:r1, c0:c1], m[r0:r1, c0:c1]
    rc = _fill_uncovered(rc, mc)
    shift = (0.0, 0.0)
    if align:
        rc, shift = register_subpixel(rc, tc, upsample, channel=channel, max_shift=min(rc.shape) / 4.0)
        mc = ndimage.shift(mc.astype(np.float64), shift, order=1, mode="constant", cval=0.0) > 1.0 - 1e-6
        ey, ex = math.ceil(abs(shift[0]) - 1e-9), math.ceil(abs(shift[1]) - 1e-9)
        h, w = rc.shape
        rc, tc, mc = rc[ey : h - ey, ex : w - ex], tc[ey : h - ey, ex : w - ex], mc[ey : h - ey, ex : w - ex]
        r0, r1, c0, c1 = r0 + ey, r1 - ey, c0 + ex, c1 - ex
        if min(rc.shape) < _MIN_SIDE or not mc.any():
            raise _too_small("registration", f"shift ({shift[0]:.2f}, {shift[1]:.2f}) px on {h}x{w}")
        rc = _fill_uncovered(rc, mc)
    rc = remove_global_phase(rc, tc, mc)
    ramp = None
    if remove_ramp:
        ramp = fit_phase_ramp(rc, tc, mc)
        x, y = _centred_xy(rc.shape)
        rc = rc * np.exp(-1j * (ramp[0] * x + ramp[1] * y + ramp[2]))
    mean_r = float(np.mean(np.abs(rc[mc])))
    scale = float(np.mean(np.abs(tc[mc]))) / mean_r if mean_r > 0 else 1.0
    info = AlignmentInfo(mc, shift, ((r0, r1), (c0, c1)), scale, ramp)
    return rc * scale, tc.copy(), info


# ------------------------------------------------------------------------------------------ evaluate
def _psnr(mse: float, data_range: float) -> float | None:
    if data_range <= 0:
        return None
    if mse <= 0:
        return PSNR_CAP_DB
    return float(min(20.0 * math.log10(data_range / math.sqrt(mse)), PSNR_CAP_DB))


def _is_constant(v: np.ndarray) -> bool:
    """True when ``v`` varies by no more than float64 round-off (|z| of a phasor is not exactly constant)."""
    return float(np.ptp(v)) <= 1e-12 * max(float(np.max(np.abs(v))), 1e-300)


def _pearson(p: np.ndarray, q: np.ndarray) -> float | None:
    if _is_constant(q):
        return None  # nothing to correlate with: undefined
    if _is_constant(p):
        return 0.0  # flat reconstruction of a varying truth
    return float(np.corrcoef(p, q)[0, 1])


def _channel_metrics(
    pred: np.ndarray, ref: np.ndarray, diff: np.ndarray, m: np.ndarray, counts: np.ndarray
) -> tuple[dict[str, float | None], np.ndarray]:
    """Metrics of one real channel (``diff`` = pred - ref, wrapped for phase); returns (dict, FRC curve)."""
    from skimage.metrics import structural_similarity

    data_range = 0.0 if _is_constant(ref[m]) else float(ref[m].max() - ref[m].min())
    ssim = float(structural_similarity(pred, ref, data_range=data_range)) if data_range > 0 else None
    freq, curve = frc(pred, ref)
    out: dict[str, float | None] = {
        "mae": float(np.mean(np.abs(diff[m]))),
        "psnr": _psnr(float(np.mean(diff[m] ** 2)), data_range),
        "ssim": ssim,
        "pearson": _pearson(pred[m], ref[m]),
        "frc_resolution_px_half_bit": frc_resolution(freq, curve, counts, "half-bit"),
        "frc_resolution_px_0.5": frc_resolution(freq, curve, counts, "0.5"),
    }
    return out, curve


def evaluate(
    recon: np.ndarray,
    truth: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    align: bool = True,
    remove_ramp: bool = False,
    border: int = 2,
) -> dict[str, Any]:
    """Compare a reconstructed complex object with the ground truth; returns a JSON-serialisable dict.

    Alignment: :func:`align_for_comparison` (box crop minus ``border``, truth-free fill of unscanned
    pixels, optional registration + ``ceil(|shift|)`` crop, global phase and optional ramp removal,
    amplitude rescaled by ``mean|truth| / mean|recon|`` since the PINN amplitude has a global scale
    ambiguity). MAE, PSNR and Pearson use only scanned (mask) pixels; SSIM and FRC need whole images and
    use the full box, where unscanned pixels hold the fill value.

    Phase images are ``angle`` of both fields after rotating both by the truth's circular-mean phase (keeps
    the branch cut away from the data); the phase difference is wrapped to (-pi, pi]. PSNR =
    ``20 log10(peak / sqrt(MSE))`` with **peak = the truth's data range** (max - min over scanned pixels),
    not 255; identical images give :data:`PSNR_CAP_DB` (300 dB; JSON has no inf). SSIM: scikit-image
    defaults (7x7 window), ``data_range`` = truth range. PSNR, SSIM and Pearson of a constant truth
    channel are ``None`` (JSON null); a constant reconstruction of a varying truth has Pearson 0 (the
    flat-collapse signature that MAE misses). FRC resolutions in pixels (:func:`frc_resolution`).

    ``recon``, ``truth``: ``[H, W]`` complex (stitched canvas and object, same grid); ``mask``: ``[H, W]``
    bool scanned pixels (``None``: ``|recon| > 0``); ``align``: sub-pixel registration; ``remove_ramp``:
    remove a linear phase ramp; ``border``: px trimmed. Returns ``{'amplitude': {'mae', 'psnr', 'ssim',
    'pearson', 'frc_resolution_px_half_bit', 'frc_resolution_px_0.5'}, 'phase': {same, MAE in rad},
    'shift_px': [dy, dx], 'amplitude_scale', 'region': {'rows': [r0, r1], 'cols': [c0, c1]} (half-open,
    input grid), 'frc': {'freq' (cycles/px), 'amplitude', 'phase', 'half_bit'} (lists)}``; all numbers
    are Python floats/ints or None.
    """
    rc, tc, info = align_for_comparison(
        recon, truth, mask, align=align, remove_ramp=remove_ramp, border=border
    )
    m = info.mask
    amp_r, amp_t = np.abs(rc), np.abs(tc)
    s = np.sum(tc[m])
    rot = np.conj(s / abs(s)) if abs(s) > 0 else 1.0
    ph_r, ph_t = np.angle(rc * rot), np.angle(tc * rot)
    counts = ring_pixel_counts(min(rc.shape))
    amp, amp_curve = _channel_metrics(amp_r, amp_t, amp_r - amp_t, m, counts)
    phase, ph_curve = _channel_metrics(ph_r, ph_t, np.angle(rc * np.conj(tc)), m, counts)
    (r0, r1), (c0, c1) = info.region
    return {
        "amplitude": amp,
        "phase": phase,
        "shift_px": [float(info.shift_px[0]), float(info.shift_px[1])],
        "amplitude_scale": float(info.amplitude_scale),
        "region": {"rows": [int(r0), int(r1)], "cols": [int(c0), int(c1)]},
        "frc": {
            "freq": [float(v) for v in np.arange(counts.size) / min(rc.shape)],
            "amplitude": [float(v) for v in amp_curve],
            "phase": [float(v) for v in ph_curve],
            "half_bit": [float(v) for v in half_bit_threshold(counts)],
        },
    }


def on_truth_grid(obj: np.ndarray, coverage: np.ndarray, origin: tuple[float, float],
                   shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Paste a canvas ``[h, w]`` with integer ``origin`` (x0, y0) onto the truth's pixel grid ``shape``.

    Returns ``(full [H, W] complex64, covered [H, W] bool)``: canvas values where it overlaps the grid
    (0 elsewhere) and where its ``coverage`` is positive.
    """
    x0, y0 = int(round(origin[0])), int(round(origin[1]))
    h, w = int(shape[0]), int(shape[1])
    full = np.zeros((h, w), np.complex64)
    cov = np.zeros((h, w), np.float32)
    r0, c0 = max(0, y0), max(0, x0)
    r1, c1 = min(h, y0 + obj.shape[0]), min(w, x0 + obj.shape[1])
    if r1 <= r0 or c1 <= c0:
        raise DataFormatError(f"the reconstruction (origin {origin}, shape {obj.shape}) does not overlap the "
                              f"ground-truth object of shape {(h, w)}; check that they belong to the same scan")
    full[r0:r1, c0:c1] = obj[r0 - y0:r1 - y0, c0 - x0:c1 - x0]
    cov[r0:r1, c0:c1] = coverage[r0 - y0:r1 - y0, c0 - x0:c1 - x0]
    return full, cov > 0
