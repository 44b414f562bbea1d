"""rPIE's refinement misfit (Gaussian against Poisson) and ``alpha`` across doses, on the quality benchmark's
unseen scans (the rpie engine; the engines are compared in ``ptychi_peer.py``).

Scans as ``quality.py`` simulates them (N=64, 320 x 320 objects, about 1,369 patterns, 2x oversampled
data, Poisson noise) for each kind and dose; :mod:`ptychopinn.refine` from a flat object with the known
probe and positions, every other setting at its default. Scored like ``quality.py`` after 5, 10, 20 and
50 iterations; ``seconds`` is the cumulative iteration time and ``ms_per_iteration`` the median of one
pass. No ground truth reaches the refinement.

Usage: ``.venv/bin/python benchmarks/refine_noise.py [--kinds image,grf] [--doses 1e9,1e4]
[--noises gaussian,poisson] [--alphas 0.1]``; one JSON line per (kind, dose, noise, alpha, checkpoint),
with the scan's mean counts per detector pixel.
"""

from __future__ import annotations

import os

from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ptychopinn.config import NOISE_MODELS, RefineConfig  # noqa: E402
from ptychopinn.refine import create_reconstructor  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import blind, make_scans, score  # noqa: E402

CHECKPOINTS = (5, 10, 20, 50)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="image,grf")
    ap.add_argument("--doses", default="1e9,1e4")
    ap.add_argument("--noises", default=",".join(NOISE_MODELS))
    ap.add_argument("--alphas", default=str(RefineConfig().resolved_alpha("rpie")), help="comma-separated rPIE alphas")
    ap.add_argument("--iterations", type=int, default=max(CHECKPOINTS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    def emit(rec: dict[str, Any]) -> None:
        print(json.dumps(rec), flush=True)

    emit({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
          "torch_threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")})
    for kind in args.kinds.split(","):
        for dose in (float(d) for d in args.doses.split(",")):
            _, test = make_scans(kind, 64, 320, dose, 7.0, args.seed)
            counts = float(np.mean(np.square(np.asarray(test.diffraction, dtype=np.float64))))
            for noise, alpha in itertools.product(args.noises.split(","), (float(a) for a in args.alphas.split(","))):
                cfg = RefineConfig(iterations=args.iterations, engine="rpie", noise=noise, alpha=alpha)
                r = create_reconstructor(blind(test), cfg)
                for it in range(1, args.iterations + 1):
                    r.iterate()
                    if it in CHECKPOINTS or it == args.iterations:
                        times = [h["seconds"] for h in r.history]
                        per_pass = statistics.median(b - a for a, b in zip([0.0, *times[:-1]], times, strict=True))
                        q = score(r.obj.cpu().numpy(), r.origin, test)
                        emit({"dataset": f"{kind}@{dose:.0e}", "noise": noise, "alpha": alpha,
                              "counts_per_pixel": round(counts, 2), "iterations": it,
                              "seconds": round(r.history[-1]["seconds"], 2),
                              "ms_per_iteration": round(1e3 * per_pass, 1),
                              "amplitude_ssim": q["amplitude_ssim"], "phase_ssim": q["phase_ssim"],
                              "amplitude_psnr": q["amplitude_psnr"], "phase_psnr": q["phase_psnr"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
