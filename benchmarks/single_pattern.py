"""How much of the object does ONE diffraction pattern determine? The ceiling of any one-pattern network.

Each pattern of the quality benchmark's unseen natural-image scan (``quality.py``: N=64, oversampled
data, 1e9 photons) is solved on its own, with the known probe and no network: the object patch
``[N, N]`` complex is fitted by Adam to the measured amplitude, ``|F(probe * patch)| * c ~= sqrt(counts)``
(``c`` fixed from the mean pattern energy). The solved patches are then stitched exactly as ``infer``
stitches a gridsize-1 network's patches (taper 10, with and without phase synchronisation) and scored
with the same ``ptychopinn.metrics.evaluate`` call as ``quality.py``.

Two variants:

* ``window``: every pixel of the patch is free (``2 N^2`` real unknowns for ``N^2`` measurements);
* ``support``: only pixels within ``--radius`` px of the probe centre are free (the rest is 1), so the
  unknowns are fewer than the measurements.

``misfit`` is the mean squared amplitude error per pixel (sqrt-count units) of the last pass, before
that pass's update. For reference the script
also prints the misfit of the TRUE patches on the reconstruction grid (best scale): noise plus the
oversampled data's model error. A solver misfit far below the truth's means the solved patches fit the
noise, i.e. the pattern does not determine the patch; one far above it means the solver stagnated. No
ground truth reaches the solver; the truth is read only by the scorer and for that reference line.

Usage: ``.venv/bin/python benchmarks/single_pattern.py [--iterations 300] [--radius 16]``; one JSON line
per (variant, checkpoint).
"""

from __future__ import annotations

import os

from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ptychopinn.config import InferenceConfig  # noqa: E402
from ptychopinn.data.scan import ScanData  # noqa: E402
from ptychopinn.inference.stitch import Stitcher, canvas_geometry  # noqa: E402
from ptychopinn.physics.fft import fft2c  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import make_scans, score  # noqa: E402

CHECKPOINTS = (20, 50, 100, 200, 300, 500, 1000)
BATCH = 512


def stitch_and_score(patches: torch.Tensor, scan: ScanData, sync: bool) -> dict[str, Any]:
    """Stitch ``[M, N, N]`` complex64 patches at ``scan.positions`` as ``infer`` does; quality vs the truth."""
    cfg = InferenceConfig()
    window = cfg.window_for(scan.N)
    shape, origin = canvas_geometry(scan.positions, scan.N, window)
    # infer's 'auto' synchronisation of a gridsize-1 network is phase-only
    st = Stitcher(shape, window, origin=origin, taper=cfg.stitch_taper, sync=sync, sync_amplitude=False)
    for s in range(0, patches.shape[0], BATCH):
        st.add(patches[s:s + BATCH], scan.positions[s:s + BATCH])
    obj, _ = st.result()
    return score(obj, origin, scan)


def truth_misfit(scan: ScanData) -> float:
    """Mean squared amplitude misfit of the true ``scan.patches`` with the least-squares scale."""
    meas = torch.as_tensor(np.asarray(scan.diffraction), dtype=torch.float32)
    truth = torch.as_tensor(np.asarray(scan.patches)).reshape(meas.shape)
    pred = fft2c(torch.as_tensor(scan.probe) * truth).abs()
    scale = (pred * meas).sum() / (pred * pred).sum()
    return float((scale * pred - meas).pow(2).mean())


def solve(scan: ScanData, radius: float | None, iterations: int, emit: Any, variant: str) -> None:
    """Fit every pattern alone; emit scores at the checkpoints."""
    n = scan.N
    meas = torch.as_tensor(np.asarray(scan.diffraction), dtype=torch.float32)
    probe = torch.as_tensor(scan.probe)
    c = (meas.pow(2).sum(dim=(-2, -1)).mean() / fft2c(probe[None]).abs().pow(2).sum()).sqrt()
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    free = torch.ones(n, n) if radius is None else ((yy ** 2 + xx ** 2) < radius ** 2).float()
    re = torch.ones(meas.shape, requires_grad=True)
    im = torch.zeros(meas.shape, requires_grad=True)
    opt = torch.optim.Adam([re, im], lr=0.05)

    def patch(sl: slice) -> torch.Tensor:
        return 1 + free * (torch.complex(re[sl], im[sl]) - 1)

    t0 = time.perf_counter()
    for it in range(1, iterations + 1):
        total = 0.0
        for s in range(0, meas.shape[0], BATCH):
            sl = slice(s, s + BATCH)
            loss = (c * fft2c(probe * patch(sl)).abs() - meas[sl]).pow(2).sum()
            loss.backward()
            total += float(loss)
        opt.step()
        opt.zero_grad()
        if it in CHECKPOINTS or it == iterations:
            secs = time.perf_counter() - t0
            with torch.no_grad():
                p = patch(slice(None)).detach()
                for sync in (False, True):
                    q = stitch_and_score(p, scan, sync)
                    emit({"variant": variant, "radius_px": radius, "iterations": it, "seconds": round(secs, 1),
                          "misfit": total / meas.numel(), "phase_sync": sync,
                          "amplitude_ssim": q["amplitude_ssim"], "phase_ssim": q["phase_ssim"]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--radius", type=float, default=16.0, help="support radius (px) of the 'support' variant")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)

    def emit(rec: dict[str, Any]) -> None:
        print(json.dumps(rec), flush=True)

    emit({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
          "torch_threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")})
    _, test = make_scans("image", 64, 320, 1e9, 7.0, args.seed)
    emit({"reference": "true patches on the reconstruction grid", "misfit": truth_misfit(test)})
    solve(test, None, args.iterations, emit, "window")
    solve(test, args.radius, args.iterations, emit, "support")
    return 0


if __name__ == "__main__":
    sys.exit(main())
