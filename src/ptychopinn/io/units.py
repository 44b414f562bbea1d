"""Units of diffraction patterns: amplitude (sqrt of counts) versus intensity (counts).

ptychopinn always works with far-field *amplitude* ``A = sqrt(I)``. Files in the wild hold either
amplitude (the PtychoPINN NPZ contract) or raw intensity counts (what ptychodus exports for real
data). :func:`to_amplitude` converts explicitly (``units='amplitude'`` or ``'intensity'``) or guesses
(``units='auto'``) with this rule, in order:

1. An integer dtype (uint16, int32, ...) means photon counts -> ``intensity``.
2. Floating-point data whose finite values are all integer-valued with a maximum above 1 are
   counts stored as floats -> ``intensity``. (Amplitudes sqrt(k) of counts k are integer-valued
   only where k is a perfect square, so a whole amplitude scan essentially never looks like this.)
3. Otherwise, if ``max / mean`` over the nonzero pixels exceeds ``1e3`` -> ``intensity``. The
   reference notes say amplitude patterns have ``max / mean < 100``; squaring the values (intensity)
   roughly squares that ratio.
4. Otherwise -> ``amplitude``.

The rule cannot tell normalised, non-integer intensities with a modest dynamic range from
amplitudes: pass ``units='intensity'`` explicitly for such data. Every decision is logged at INFO
level with its reason.

Integer data are cast to float64 *before* any arithmetic, because squaring or summing uint16 in its
own dtype wraps around; results are returned as float32.
"""

from __future__ import annotations

import logging

import numpy as np

from ptychopinn.errors import ConfigError, DataFormatError, describe_array

UNITS_CHOICES: tuple[str, ...] = ("amplitude", "intensity", "auto")
"""Accepted values of the ``units`` argument."""

DYNAMIC_RANGE_THRESHOLD = 1e3
"""``max / mean(nonzero)`` above which floating-point patterns are taken to be intensity."""

logger = logging.getLogger(__name__)


def _check_real(patterns: np.ndarray) -> None:
    if np.iscomplexobj(patterns):
        raise DataFormatError(
            f"diffraction patterns must be real (amplitude or intensity), found complex data "
            f"({describe_array(patterns)}); store |F| (amplitude) or |F|^2 (counts), not the complex field"
        )
    if patterns.dtype == np.bool_ or not (
        np.issubdtype(patterns.dtype, np.integer) or np.issubdtype(patterns.dtype, np.floating)
    ):
        raise DataFormatError(
            f"diffraction patterns must be a numeric (integer or float) array, found "
            f"{describe_array(patterns)}; convert them to float32 amplitudes or integer counts"
        )


def detect_units(patterns: np.ndarray) -> tuple[str, str]:
    """Guess whether ``patterns`` hold amplitude or intensity (see the module docstring for the rule).

    Args:
        patterns: diffraction patterns, any shape (typically ``[M, N, N]``), real integer or float
            dtype, arbitrary units.

    Returns:
        ``(units, reason)`` where ``units`` is ``'amplitude'`` or ``'intensity'`` and ``reason`` is a
        short human-readable explanation of the decision.

    Raises:
        DataFormatError: the array is complex, boolean or not numeric.
    """
    patterns = np.asarray(patterns)
    _check_real(patterns)
    if np.issubdtype(patterns.dtype, np.integer):
        return "intensity", f"integer dtype {patterns.dtype} means photon counts"
    if patterns.size == 0:
        return "amplitude", "empty array; assuming amplitude"
    finite = patterns[np.isfinite(patterns)]
    if finite.size == 0:
        return "amplitude", "no finite values; assuming amplitude"
    # float64 so the statistics of float32 data do not lose precision on large scans
    finite = finite.astype(np.float64, copy=False)
    peak = float(finite.max())
    if peak > 1.0 and bool(np.all(finite == np.round(finite))):
        return "intensity", f"all values are whole numbers with max {peak:g} > 1 (counts stored as floats)"
    nonzero = finite[finite != 0.0]
    if nonzero.size == 0:
        return "amplitude", "all values are zero; assuming amplitude"
    mean = float(np.abs(nonzero).mean())
    ratio = peak / mean if mean > 0 else 0.0
    if ratio > DYNAMIC_RANGE_THRESHOLD:
        return "intensity", (
            f"max/mean over nonzero pixels is {ratio:.3g} > {DYNAMIC_RANGE_THRESHOLD:g}, "
            "typical of intensity (amplitude is usually < 100)"
        )
    return "amplitude", (
        f"non-integer floats with max/mean over nonzero pixels {ratio:.3g} <= {DYNAMIC_RANGE_THRESHOLD:g}"
    )


def to_amplitude(patterns: np.ndarray, units: str = "auto", *, log: bool = True) -> tuple[np.ndarray, str]:
    """Convert diffraction patterns to float32 amplitude ``sqrt(counts)``.

    Args:
        patterns: diffraction patterns, any shape (typically ``[M, N, N]``), real integer or float
            dtype; amplitude or intensity (photon counts) as given by ``units``.
        units: ``'amplitude'`` (returned unchanged except for the dtype), ``'intensity'`` (square
            root taken) or ``'auto'`` (decided by :func:`detect_units`).
        log: log the units used (off where the caller converts batch by batch and logged its decision once).

    Returns:
        ``(amplitude, units_used)``: amplitude with the shape of ``patterns``, float32, in
        sqrt(counts) when the input was counts; ``units_used`` is ``'amplitude'`` or
        ``'intensity'``, the units the input was treated as having.

    Raises:
        ConfigError: ``units`` is not one of ``'amplitude'``, ``'intensity'``, ``'auto'``.
        DataFormatError: complex or non-numeric patterns, or negative counts with intensity units.
    """
    if units not in UNITS_CHOICES:
        raise ConfigError(
            f"units must be one of {', '.join(UNITS_CHOICES)}, got {units!r}; "
            "pass 'amplitude' for sqrt(counts), 'intensity' for counts, or 'auto' to detect"
        )
    patterns = np.asarray(patterns)
    _check_real(patterns)
    if units == "auto":
        units_used, reason = detect_units(patterns)
        if log:
            logger.info("diffraction units detected as %s: %s", units_used, reason)
    else:
        units_used = units
        if log:
            logger.info("diffraction units given as %s", units_used)

    if units_used == "amplitude":
        return np.asarray(patterns, dtype=np.float32), units_used

    # Integers (uint16 etc.) go to float64 before any arithmetic; float32 is kept for the sqrt.
    work_dtype = np.float64 if np.issubdtype(patterns.dtype, np.integer) else np.result_type(
        patterns.dtype, np.float32
    )
    counts = np.asarray(patterns, dtype=work_dtype)
    negative = counts < 0
    n_negative = int(np.count_nonzero(negative))
    if n_negative:
        first = tuple(int(i) for i in np.argwhere(negative)[0])
        raise DataFormatError(
            f"intensity patterns contain {n_negative} negative counts (first at index {first}, value "
            f"{counts[first]:g}); counts must be >= 0: clip them (np.clip(x, 0, None)) or fix the "
            "background subtraction"
        )
    return np.sqrt(counts).astype(np.float32, copy=False), units_used
