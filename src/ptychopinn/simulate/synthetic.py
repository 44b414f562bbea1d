"""Training data for a scan before its sample is known: made-up objects seen through the scan's own probe.

A network only fits data of the geometry it was trained on: the probe, the pattern size N, the scan's
overlap and the dose. :func:`synthetic_training_scan` keeps all of those from a real scan and replaces only
the sample: ``objects`` procedurally generated objects (:func:`~ptychopinn.simulate.make_object`) are
scanned at the scan's positions with its probe, at its measured mean counts per pattern, with Poisson noise
(:func:`~ptychopinn.simulate.simulate_diffraction`). The scan's own patterns are read only to measure that
dose; they are never trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ptychopinn.config import SimulationConfig
from ptychopinn.config_fields import is_int
from ptychopinn.data.normalize import mean_pattern_energy
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError
from ptychopinn.simulate.objects import AVAILABLE_IMAGES, OBJECT_KINDS, make_object

__all__ = ["SYNTHETIC_KINDS", "SYNTHETIC_OBJECTS", "parse_kinds", "synthetic_training_scan"]

SYNTHETIC_KINDS: tuple[str, ...] = ("lines", "grf")
"""Default object kinds: sharp random edges ('lines') and smooth cloud-like texture ('grf') together span high
and low spatial frequencies, both are random (each object is new, from its seed) and neither is a picture a
test object could be drawn from; 'image' (bundled natural pictures) is available on request."""

SYNTHETIC_OBJECTS = 2
"""Default number of generated objects (each scanned at every position of the scan)."""

_MARGIN = 2  # object pixels kept free around the outermost patches (sub-pixel shifts read one more)
_BYTES_PER_PATTERN_PIXEL = 4 + 8  # the float32 patterns kept, and the complex64 patches of one object's pass


def parse_kinds(text: str | Sequence[str]) -> tuple[str, ...]:
    """Object kinds from ``'lines,grf'`` (or a sequence of names), in order, repeats dropped.

    Raises:
        ConfigError: an unknown or empty kind, naming the valid ones.
    """
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    bad = [n for n in names if n not in OBJECT_KINDS]
    if bad or not names:
        found = ", ".join(repr(n) for n in bad) if bad else "nothing"
        raise ConfigError(f"synthetic object kinds: expected a comma-separated list of {', '.join(OBJECT_KINDS)}, "
                          f"found {found}; e.g. {','.join(SYNTHETIC_KINDS)}")
    return tuple(dict.fromkeys(names))


def synthetic_training_scan(
    scan: ScanData,
    *,
    kinds: Sequence[str] = SYNTHETIC_KINDS,
    objects: int = SYNTHETIC_OBJECTS,
    seed: int = 0,
    probe_scale: float = 4.0,
) -> ScanData:
    """A training scan of ``objects`` generated objects under ``scan``'s probe, positions, N and dose.

    Object ``k`` is of kind ``kinds[k % len(kinds)]`` (amplitude and phase ranges of
    :class:`~ptychopinn.config.SimulationConfig`'s defaults; 'image' objects take the bundled pictures in turn),
    square, just large enough to hold every patch of the scan. Its patterns follow in the result after those of
    object ``k - 1``, at the scan's positions moved ``k`` times twice the object's side along x, so that no group
    of neighbouring points mixes two objects.

    Args:
        scan: the real scan: ``probe`` ``[N, N]`` complex64 and ``positions`` ``[M, 2]`` (x, y) object pixels are
            used as they are; ``diffraction`` ``[M, N, N]`` amplitude sqrt(counts) only for its mean counts per
            pattern (measured pixels only).
        kinds: object kinds, see :func:`parse_kinds`.
        objects: number of objects K (>= 1).
        seed: objects ``k`` and its noise are drawn from ``seed + k``.
        probe_scale: probe normalisation of the forward model (the model's ``probe_scale``).

    Returns:
        A :class:`ScanData` of ``K * M`` patterns: ``diffraction`` ``[K*M, N, N]`` float32 sqrt(counts),
        ``positions`` ``[K*M, 2]`` float64, the scan's probe, detector mask and physical quantities,
        ``scan_index`` ``[K*M]`` the object number, no ground truth, and ``metadata['synthetic']`` recording kinds,
        objects, seed and the dose.

    Raises:
        ConfigError: unknown kinds, ``objects`` < 1, or more memory than the limit allows.
    """
    from ptychopinn.limits import check_memory
    from ptychopinn.simulate.simulator import simulate_diffraction

    names = parse_kinds(kinds)
    if not is_int(objects) or objects < 1:
        raise ConfigError(f"synthetic objects: expected a positive integer, found {objects!r}; e.g. "
                          f"{SYNTHETIC_OBJECTS}")
    n, m = scan.N, scan.n_points
    weights = scan.pixel_weights()
    nphotons = mean_pattern_energy(scan.diffraction, weights=weights)
    lo = scan.positions.min(axis=0)
    # every patch inside the object: probe centres at least N/2 + margin from its edges
    local = scan.positions - lo + (n // 2 + _MARGIN)
    side = int(math.ceil(float(local.max()))) + n // 2 + _MARGIN + 1
    check_memory(float(objects) * m * n * n * _BYTES_PER_PATTERN_PIXEL + float(side) ** 2 * 64,
                 f"{objects} synthetic objects of {side} x {side} pixels scanned at {m} points of {n} x {n} pixels",
                 "use fewer objects (--synthetic-objects)", ConfigError)
    defaults = SimulationConfig()
    amplitude = np.empty((objects * m, n, n), dtype=np.float32)
    positions = np.empty((objects * m, 2), dtype=np.float64)
    for k in range(int(objects)):
        kind = names[k % len(names)]
        image = AVAILABLE_IMAGES[(k // len(names)) % len(AVAILABLE_IMAGES)]
        obj = make_object(kind, side, amplitude_range=defaults.amplitude_range, phase_range=defaults.phase_range,
                          image_name=image, seed=seed + k)
        amp, _, _ = simulate_diffraction(obj, scan.probe, local, nphotons=nphotons, seed=seed + k,
                                         probe_scale=probe_scale)
        amplitude[k * m:(k + 1) * m] = amp
        if weights is not None:  # a masked pixel of the real detector records nothing; readers store 0
            amplitude[k * m:(k + 1) * m] *= weights
        positions[k * m:(k + 1) * m] = local + np.array([2.0 * side * k, 0.0])
    metadata: dict[str, Any] = {
        "synthetic": {"kinds": list(names), "objects": int(objects), "seed": int(seed), "nphotons": nphotons,
                      "object_side_px": side, "points_per_object": m},
        "source": scan.metadata.get("source", "synthetic"),
    }
    return ScanData(diffraction=amplitude, positions=positions, probe=scan.probe,
                    scan_index=np.repeat(np.arange(objects, dtype=np.int64), m), metadata=metadata,
                    pixel_size_m=scan.pixel_size_m, energy_ev=scan.energy_ev, distance_m=scan.distance_m,
                    valid_pixels=scan.valid_pixels)
