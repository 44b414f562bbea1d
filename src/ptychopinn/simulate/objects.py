"""Synthetic complex objects for simulated scans: random lines, Gaussian random fields, natural images.

Every object is a ``[size, size]`` complex64 transmission function ``a * exp(1j * phi)`` whose
amplitude ``a`` spans ``amplitude_range`` and phase ``phi`` (radians) spans ``phase_range``, each
mapped *linearly* from a field normalised to ``[0, 1]`` (its minimum goes to the low end, its
maximum to the high end). Amplitude and phase always come from *different* fields so that a
reconstruction that mixes them up is visible.

Kinds:

* ``'lines'``: random anti-aliased line segments, blurred at two scales (thin edges plus a soft
  halo, so the object has both high and low spatial frequencies).
* ``'grf'``: a Gaussian random field: white noise filtered in Fourier space to a power-law power
  spectrum ``|k|**-GRF_SPECTRAL_INDEX`` (the mean removed); periodic by construction.
* ``'image'``: a natural image bundled with scikit-image (read from the installed package, never
  from the network): grey levels, centre-cropped to a square, resized with anti-aliasing. The phase
  comes from a fixed partner image half-way round :data:`AVAILABLE_IMAGES`, so the amplitude image
  of the *next* name (the default test object of ``ptychopinn simulate``) never reuses it.

Random kinds are reproducible from ``seed`` (``numpy.random.default_rng``; no global state);
``'image'`` objects do not depend on the seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ptychopinn.config import OBJECT_KINDS  # valid ``kind`` values of make_object
from ptychopinn.config_fields import is_int
from ptychopinn.errors import ConfigError

AVAILABLE_IMAGES: tuple[str, ...] = (
    "camera", "astronaut", "coins", "coffee", "chelsea", "immunohistochemistry",
    "brick", "grass", "gravel", "text", "page", "moon",
)
"""``skimage.data`` images that ship inside the scikit-image package (load offline), chosen for
contrast over the whole frame. Each one's phase partner is the image half the list away (camera
with brick, astronaut with grass, ...)."""

GRF_SPECTRAL_INDEX = 3.0
"""Power-law exponent beta of the GRF power spectrum ``P(k) ~ |k|**-beta`` (3: smooth, cloud-like)."""

# distinct stream tags so amplitude and phase fields of one seed are independent
_AMPLITUDE_STREAM = 101
_PHASE_STREAM = 202


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def _normalise(field: np.ndarray) -> np.ndarray:
    """Map a real field linearly onto ``[0, 1]`` (a constant field becomes all zeros)."""
    field = np.asarray(field, dtype=np.float64)
    lo, hi = float(field.min()), float(field.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros_like(field)
    return (field - lo) / (hi - lo)


def _map_range(u: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * u


# ------------------------------------------------------------------------------------------- lines
def _lines_field(size: int, rng: np.random.Generator) -> np.ndarray:
    """``[size, size]`` float64 in [0, 1]: anti-aliased random segments blurred at two scales."""
    from scipy.ndimage import gaussian_filter
    from skimage.draw import line_aa

    canvas = np.zeros((size, size), dtype=np.float64)
    n_lines = max(8, size // 2)  # density independent of size: ~0.5 segments per pixel of side
    centres = rng.uniform(0, size, size=(n_lines, 2))
    lengths = rng.uniform(size / 10, size / 2, size=n_lines)
    angles = rng.uniform(0, np.pi, size=n_lines)
    weights = rng.uniform(0.5, 1.0, size=n_lines)
    for (cx, cy), length, angle, w in zip(centres, lengths, angles, weights, strict=True):
        dx, dy = 0.5 * length * np.cos(angle), 0.5 * length * np.sin(angle)
        r0, c0 = int(round(cy - dy)), int(round(cx - dx))
        r1, c1 = int(round(cy + dy)), int(round(cx + dx))
        rr, cc, val = line_aa(r0, c0, r1, c1)
        keep = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        rr, cc, val = rr[keep], cc[keep], val[keep]
        # maximum, not sum: crossings should not create isolated bright spots
        canvas[rr, cc] = np.maximum(canvas[rr, cc], w * val)
    # sharp-ish edges plus a broad halo, so the object has both high and low spatial frequencies
    blurred = gaussian_filter(canvas, 0.75) + 0.5 * gaussian_filter(canvas, 4.0)
    return _normalise(blurred)


# --------------------------------------------------------------------------------------------- grf
def _grf_field(size: int, rng: np.random.Generator) -> np.ndarray:
    """``[size, size]`` float64 in [0, 1]: white noise shaped to a ``|k|**-beta`` power spectrum."""
    noise = rng.standard_normal((size, size))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    k[0, 0] = np.inf  # drop the mean (the k = 0 term would otherwise divide by zero)
    amplitude_filter = k ** (-GRF_SPECTRAL_INDEX / 2.0)  # power ~ amplitude**2
    field = np.fft.ifft2(np.fft.fft2(noise) * amplitude_filter).real
    return _normalise(field)


# ------------------------------------------------------------------------------------------- image
def _check_image_name(name: str) -> None:
    if name not in AVAILABLE_IMAGES:
        raise ConfigError(f"image_name: expected one of {list(AVAILABLE_IMAGES)} (bundled with "
                          f"scikit-image, available offline), got {name!r}; pick one of those names")


def phase_partner(image_name: str) -> str:
    """The bundled image giving the phase of an ``'image'`` object whose amplitude is ``image_name``."""
    _check_image_name(image_name)
    i = AVAILABLE_IMAGES.index(image_name)
    return AVAILABLE_IMAGES[(i + len(AVAILABLE_IMAGES) // 2) % len(AVAILABLE_IMAGES)]


def next_image(image_name: str) -> str:
    """The image after ``image_name`` in :data:`AVAILABLE_IMAGES` (cyclic): the default test object."""
    _check_image_name(image_name)
    i = AVAILABLE_IMAGES.index(image_name)
    return AVAILABLE_IMAGES[(i + 1) % len(AVAILABLE_IMAGES)]


def load_image(name: str, size: int) -> np.ndarray:
    """A bundled scikit-image picture as a ``[size, size]`` float64 grey image normalised to [0, 1].

    The central square of the picture is resized (anti-aliased) to ``size`` pixels, so the image is
    never stretched.
    """
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.transform import resize
    from skimage.util import img_as_float

    _check_image_name(name)
    img = img_as_float(np.asarray(getattr(skimage.data, name)()))
    if img.ndim == 3 and img.shape[-1] == 4:
        img = rgba2rgb(img)
    if img.ndim == 3:
        img = rgb2gray(img)
    h, w = img.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top:top + side, left:left + side]
    img = resize(img, (size, size), order=1, anti_aliasing=side > size, preserve_range=True)
    return _normalise(img)


# -------------------------------------------------------------------------------------------- public
def _check_pair(name: str, pair: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in pair)
    except (TypeError, ValueError):
        lo, hi = float("nan"), float("nan")
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ConfigError(f"{name}: expected a finite pair (low, high) with low <= high, got {pair!r}; "
                          "e.g. (0.5, 1.0)")
    return lo, hi


def make_object(
    kind: str,
    size: int,
    *,
    amplitude_range: tuple[float, float],
    phase_range: tuple[float, float],
    image_name: str = "camera",
    seed: int = 0,
    phase_image: str | None = None,
) -> np.ndarray:
    """Make a synthetic complex object.

    Args:
        kind: ``'lines'``, ``'grf'`` or ``'image'`` (see the module docstring).
        size: side of the square object in pixels (>= 2).
        amplitude_range: ``(low, high)`` transmission amplitude (dimensionless, ``0 <= low <= high``).
        phase_range: ``(low, high)`` phase in radians (``low <= high``).
        image_name: amplitude picture for ``kind='image'``, one of :data:`AVAILABLE_IMAGES`; the phase
            comes from ``phase_image`` or, if None, :func:`phase_partner` of it. Ignored for other kinds.
        seed: integer seed of the random kinds (ignored for ``'image'``).

    Returns:
        ``[size, size]`` complex64 object ``a * exp(1j * phi)``; ``a`` spans ``amplitude_range`` and
        ``phi`` spans ``phase_range`` (minimum and maximum are both reached unless a field is flat).

    Raises:
        ConfigError: unknown kind or image, bad size or ranges.
    """
    if kind not in OBJECT_KINDS:
        raise ConfigError(f"object kind: expected one of {list(OBJECT_KINDS)}, got {kind!r}; "
                          "choose one of those")
    if not is_int(size) or size < 2:
        raise ConfigError(f"object size: expected an integer >= 2 pixels, got {size!r}; pass e.g. 256")
    amplitude_range = _check_pair("amplitude_range", amplitude_range)
    phase_range = _check_pair("phase_range", phase_range)
    if amplitude_range[0] < 0:
        raise ConfigError(f"amplitude_range: expected non-negative amplitudes, got "
                          f"{tuple(amplitude_range)!r}; amplitude is |transmission| >= 0")
    size = int(size)
    if kind == "lines":
        amp_u = _lines_field(size, _rng(seed, _AMPLITUDE_STREAM))
        phase_u = _lines_field(size, _rng(seed, _PHASE_STREAM))
    elif kind == "grf":
        amp_u = _grf_field(size, _rng(seed, _AMPLITUDE_STREAM))
        phase_u = _grf_field(size, _rng(seed, _PHASE_STREAM))
    else:
        amp_u = load_image(image_name, size)
        if phase_image is not None:
            _check_image_name(phase_image)
        phase_u = load_image(phase_image or phase_partner(image_name), size)
    amp = _map_range(amp_u, amplitude_range)
    phase = _map_range(phase_u, phase_range)
    return (amp * np.exp(1j * phase)).astype(np.complex64)
