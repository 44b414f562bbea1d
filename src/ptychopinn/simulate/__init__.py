"""Simulated ptychographic scans: objects, probes, scan patterns and diffraction with photon noise.

Public API: :func:`make_object` (and :data:`AVAILABLE_IMAGES`), :func:`make_probe`, :func:`zone_plate_probe`,
:func:`raster_positions`, :func:`spiral_positions`, :func:`step_for_overlap`, :func:`probe_diameter`,
:func:`realistic_position_errors`,
:func:`simulate_diffraction`, :func:`simulate_scan`.

Import cost: the object, probe and scan helpers need only numpy (scipy and scikit-image are loaded
inside the functions that use them). The two simulation functions run the torch forward model, so
they are resolved lazily (PEP 562 ``__getattr__``): ``import ptychopinn.simulate`` does not import
torch until ``simulate_diffraction`` or ``simulate_scan`` is first accessed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ptychopinn.simulate.objects import AVAILABLE_IMAGES, OBJECT_KINDS, make_object, next_image, phase_partner
from ptychopinn.simulate.probes import PROBE_KINDS, make_probe, zone_plate_probe
from ptychopinn.simulate.scan import (
    probe_diameter,
    raster_positions,
    realistic_position_errors,
    spiral_positions,
    step_for_overlap,
    valid_area,
)

if TYPE_CHECKING:
    from ptychopinn.simulate.simulator import simulate_diffraction, simulate_scan

__all__ = [
    "AVAILABLE_IMAGES",
    "OBJECT_KINDS",
    "PROBE_KINDS",
    "make_object",
    "make_probe",
    "next_image",
    "phase_partner",
    "probe_diameter",
    "raster_positions",
    "realistic_position_errors",
    "simulate_diffraction",
    "simulate_scan",
    "spiral_positions",
    "step_for_overlap",
    "valid_area",
    "zone_plate_probe",
]

_LAZY = {"simulate_diffraction", "simulate_scan"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ptychopinn.simulate import simulator

        return getattr(simulator, name)
    raise AttributeError(f"module 'ptychopinn.simulate' has no attribute {name!r}")
