"""The probe a refinement starts from, whether it is refined, and the scale of the object that comes out.

Scans: N=64, 'astronaut' amplitude / 'coins' phase on a ``--size`` object (and, for the amplitude scale, a
free-space object: transmission 1 in half of a checkerboard of 24 px cells, 0.6-0.9 with up to 1 rad of phase
in the other half), raster at 70 % overlap, 1e6 photons per pattern, Poisson noise; probes 'focused' (the
simulator's default) and 'defocused' (a zone plate out of focus: focus 4 px, central stop 0.3, geometric
radius 14 px). Each refinement runs ``--iterations`` passes from a flat object, positions known.

Sections (``--sections``, all by default):

* ``estimate``: per probe, the object's SSIM with the true probe (fixed), with the zero-phase estimate of the
  mean pattern refined (``refine_probe`` on; the behaviour before the defocus search) and with the estimate
  as ``--probe estimate`` gives it (aperture fit, defocus chosen by trial, refined: the defaults);
* ``auto``: ``refine_probe='auto'`` against on and off with a correct probe (1e6 photons; 2x oversampled
  data; 1e4 photons) and wrong ones (a focused probe with a defocus error; a focused probe given for a
  defocused scan): the decision, the trial misfits and the SSIM of each;
* ``transmission``: the free-space object refined with its probe scaled by 1 and by 37 (any units): the
  recorded transmission level and the refined amplitude over the truth's free space (ideally 1).

Usage: ``.venv/bin/python benchmarks/probe_start.py [--sections estimate,auto,transmission] [--iterations
40]``; one JSON line per run.
"""

from __future__ import annotations

import os

from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ptychopinn.config import RefineConfig  # noqa: E402
from ptychopinn.data.scan import ScanData  # noqa: E402
from ptychopinn.io.probe import PROBE_ESTIMATED, estimate_probe, mean_far_field  # noqa: E402
from ptychopinn.metrics import on_truth_grid  # noqa: E402
from ptychopinn.physics.fft import ifft2c  # noqa: E402
from ptychopinn.refine import refine_scan  # noqa: E402
from ptychopinn.simulate import make_object, make_probe, zone_plate_probe  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import blind, machine_record, probe_scan, score  # noqa: E402

N = 64


def free_space_object(size: int) -> np.ndarray:
    """Transmission 1 on half of a checkerboard of 24 px cells; the other half 0.6-0.9 amplitude, 0-1 rad."""
    img = make_object("image", size, amplitude_range=(0.5, 1.0), phase_range=(-1.0, 1.0), image_name="astronaut",
                      phase_image="coins")
    a, p = np.abs(img), np.angle(img)
    a = (a - a.min()) / max(float(np.ptp(a)), 1e-9)
    p = (p - p.min()) / max(float(np.ptp(p)), 1e-9)
    yy, xx = np.mgrid[:size, :size]
    free = (xx // 24 + yy // 24) % 2 == 0
    return (np.where(free, 1.0, 0.6 + 0.3 * a) * np.exp(1j * np.where(free, 0.0, p))).astype(np.complex64)


def zero_phase_estimate(diffraction: np.ndarray) -> np.ndarray:
    """The estimate before the aperture fit: the root-mean-square amplitude with zero phase."""
    return ifft2c(torch.from_numpy(mean_far_field(diffraction).astype(np.complex64))).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="estimate,auto,transmission")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    sections = args.sections.split(",")

    def emit(rec: dict[str, Any]) -> None:
        print(json.dumps(rec), flush=True)

    def run(section: str, case: str, method: str, scan: ScanData, truth: ScanData, **cfg: Any) -> Any:
        t0 = time.perf_counter()
        res = refine_scan(scan, RefineConfig(iterations=args.iterations, **cfg))
        q = score(res.obj, res.origin, truth)
        emit({"section": section, "case": case, "method": method, "engine": res.engine,
              "amplitude_ssim": q["amplitude_ssim"], "phase_ssim": q["phase_ssim"],
              "misfit": res.history[-1]["misfit"], "iterations": res.iterations,
              "seconds": round(time.perf_counter() - t0, 1), "notes": res.notes})
        return res

    emit(machine_record())
    probes = {"focused": make_probe("focused", N), "defocused": zone_plate_probe(N, 14.0)}
    if "estimate" in sections:
        for kind, probe in probes.items():
            scan = probe_scan(probe, args.size)
            run("estimate", kind, "true probe", blind(scan), scan, refine_probe=False)
            run("estimate", kind, "zero-phase estimate, refined", blind(scan, probe=zero_phase_estimate(
                scan.diffraction)), scan, refine_probe=True, probe_search=False)
            run("estimate", kind, "--probe estimate (defaults)", blind(scan, probe=estimate_probe(scan.diffraction),
                                                                     metadata={PROBE_ESTIMATED: True}), scan)
    if "auto" in sections:
        yy, xx = np.mgrid[:N, :N] - N / 2
        focused = probes["focused"]
        cases: list[tuple[str, ScanData, np.ndarray]] = [
            ("correct probe", probe_scan(focused, args.size), focused),
            ("correct probe, 2x oversampled data", probe_scan(focused, args.size, oversample=2), focused),
            ("correct probe, 1e4 photons", probe_scan(focused, args.size, photons=1e4), focused),
            ("probe with a defocus error", probe_scan(focused, args.size),
             (focused * np.exp(0.01j * (xx**2 + yy**2))).astype(np.complex64)),
            ("focused probe given for a defocused scan", probe_scan(probes["defocused"], args.size), focused),
        ]
        for case, scan, given in cases:
            for setting in ("auto", False, True):
                run("auto", case, f"refine_probe={setting}", blind(scan, probe=given), scan, refine_probe=setting)
    if "transmission" in sections:
        obj = free_space_object(args.size)
        scan = probe_scan(probes["focused"], args.size, obj=obj)
        free = np.abs(obj) > 0.999
        for factor in (1.0, 37.0):
            res = run("transmission", f"probe x {factor:g}", "refine_probe=False",
                      blind(scan, probe=(scan.probe * np.float32(factor)).astype(np.complex64)), scan,
                      refine_probe=False)
            full, covered = on_truth_grid(res.obj, res.coverage, res.origin, obj.shape)
            emit({"section": "transmission", "case": f"probe x {factor:g}", "transmission": res.transmission,
                  "free_space_amplitude": float(np.median(np.abs(full[covered & free]))),
                  "sample_amplitude_over_truth": float(np.median(np.abs(full[covered & ~free])
                                                                 / np.abs(obj[covered & ~free])))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
