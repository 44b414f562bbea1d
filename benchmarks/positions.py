"""Position correction on scans whose positions are several pixels off: error per iteration.

The scan: N=64, a defocused zone-plate probe (focus 4 px, central stop 0.3, geometric radius
``--probe-radius`` px, so a ring about 30 px across), a raster at 70 % linear overlap with 0.5 px jitter on a
``--size`` object ('astronaut' amplitude, 'coins' phase), ``--photons`` per pattern, Poisson noise. The
refinement sees positions with :func:`ptychopinn.simulate.realistic_position_errors` added (2-D Gaussian of
``--rms`` px rms, ``--outliers`` of the points instead 15-30 px off) and refines from a flat object with the
known probe and ``refine_positions`` (every other setting at its default: the whole-pixel search from N/2
px, then sub-pixel steps). After each iteration: rms and median distance of the positions from the truth
(common translation removed), the misfit and the cumulative seconds; at the end the image's SSIM.

Usage (about 3.5 minutes on 2 CPU cores)::

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src .venv/bin/python benchmarks/positions.py --iterations 80 > positions.jsonl

Options: ``[--radius R] [--rms PX] [--outliers F] [--no-baseline]``. Output: one JSON line per iteration
(``rms_px``, ``median_px``: distances from the true positions, common translation removed), then a summary
line per method (also with the gradient step alone, ``--radius 0``, unless ``--no-baseline``).
"""

from __future__ import annotations

import os

from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from ptychopinn.config import RefineConfig  # noqa: E402
from ptychopinn.refine import refine_scan  # noqa: E402
from ptychopinn.refine.positions import position_errors  # noqa: E402
from ptychopinn.simulate import realistic_position_errors, zone_plate_probe  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import machine_record, probe_scan, score  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--probe-radius", type=float, default=14.0)
    ap.add_argument("--photons", type=float, default=1e6)
    ap.add_argument("--rms", type=float, default=10.0)
    ap.add_argument("--outliers", type=float, default=0.1)
    ap.add_argument("--radius", type=int, default=None, help="first search radius (default N/2; 0: no search)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run with the gradient step alone")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    def emit(rec: dict[str, Any]) -> None:
        print(json.dumps(rec), flush=True)

    emit(machine_record())
    scan = probe_scan(zone_plate_probe(64, args.probe_radius), args.size, photons=args.photons, seed=args.seed)
    err = realistic_position_errors(scan.n_points, rms=args.rms, outlier_fraction=args.outliers, seed=args.seed)
    rms0, med0 = position_errors(scan.positions + err, scan.positions)
    emit({"patterns": scan.n_points, "start_rms_px": round(rms0, 2), "start_median_px": round(med0, 2)})
    methods = [("search", args.radius)] + ([] if args.no_baseline else [("gradient step only", 0)])
    for method, radius in methods:
        blind = dataclasses.replace(scan, obj=None, patches=None, positions=scan.positions + err)
        cfg = RefineConfig(iterations=args.iterations, tolerance=None, refine_positions=True, refine_probe=False,
                           position_search_radius=radius, seed=args.seed)

        def per_iteration(r: Any, method: str = method) -> None:
            rms, med = position_errors(r.positions, scan.positions)
            h = r.history[-1]
            emit({"method": method, "iteration": h["iteration"], "rms_px": round(rms, 3), "median_px": round(med, 3),
                  "misfit": h["misfit"], "seconds": round(h["seconds"], 2)})

        t0 = time.perf_counter()
        res = refine_scan(blind, cfg, callback=per_iteration)
        rms, med = position_errors(res.positions, scan.positions)
        q = score(res.obj, res.origin, scan)
        emit({"method": method, "summary": True, "rms_px": round(rms, 3), "median_px": round(med, 3),
              "over_3px": int(np.sum(np.hypot(*(res.positions - scan.positions
                                                 - (res.positions - scan.positions).mean(0)).T) > 3)),
              "amplitude_ssim": q["amplitude_ssim"], "phase_ssim": q["phase_ssim"],
              "seconds": round(time.perf_counter() - t0, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
