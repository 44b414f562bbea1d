"""Does the network's image help refinement as a prior where the data are weak? Scores against the truth
versus seconds, at equal wall time, on a scan the network has never seen.

Prints one JSON line per (dose, method, weight, checkpoint), then ``{"summary": ...}``: each method at the
seconds where refinement without a prior (weight 0) did :data:`EQUAL_TIME_PASSES` passes (the method's last
checkpoint within that time).

Per dose (``--doses``, photons per pattern): the quality benchmark's datasets
(:func:`quality.make_scans`: natural-image objects, the TEST pair unseen in training, Poisson noise,
``oversample=2``); a network trained on the TRAIN scan (``train_seconds`` reported); its image of the TEST
scan stitched as ``infer`` starts refinement (``stitch_sync='off'``). Methods, all started from that image
with the default engine (cg) and scored by :func:`quality.score`:

* ``refine``: no prior (what ``infer`` does by default);
* ``prior``: ``prior_weight`` w toward the network's image (:mod:`ptychopinn.refine.prior`);
* ``prior_sync``: the same toward the network's image stitched with phase synchronisation (``infer --refine 0``'s
  image; the start stays the unsynchronised one);
* ``smooth``: the same weight toward a Gaussian-smoothed (``--sigma`` px) copy of the current object, a
  denoising step that needs no network: a gain here and not under ``prior`` is regularisation, not the network.

``seconds`` = cumulative iteration time plus set-up (scoring is not timed; the network's prediction is the
same for every method and not counted). No method sees the test scan's truth; only the scorer reads it.

Usage: ``PYTHONPATH=src OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/prior.py``
(the README's 1e4 run: the quality benchmark's scans, N=64, 320 x 320 objects, 1,369 patterns, 20 epochs,
weights 0.01,0.03,0.1, about 8 minutes at one thread; its 1e9 check: ``--doses 1e9 --size 192 --epochs 10
--weights 0.1,0.3,1,3``, about 3 minutes). ``--quick``: N=32, 96 px, 2 epochs, a smoke run of a minute.
"""

from __future__ import annotations

from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from ptychopinn.config import (  # noqa: E402
    InferenceConfig,
    ModelConfig,
    RefineConfig,
)
from ptychopinn.data.scan import ScanData  # noqa: E402
from quality import blind, machine_record, make_scans, score, train_network  # noqa: E402

CHECKPOINTS = (5, 10, 15, 20, 25, 30, 40, 50)
EQUAL_TIME_PASSES = (20, 50)


def refine_curve(scan: ScanData, start: np.ndarray, origin: tuple[float, float], method: str, weight: float,
                 iterations: int, sigma: float, record: dict[str, Any],
                 prior: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Refine ``iterations`` passes with ``method`` at ``weight`` (toward ``prior``, None: the start) and score
    at :data:`CHECKPOINTS`."""
    from ptychopinn.refine import create_reconstructor
    from ptychopinn.refine.prior import SmoothingPrior

    cfg = RefineConfig(iterations=iterations, tolerance=None, prior_weight=weight if method != "refine" else 0.0)
    t0 = time.perf_counter()
    r = create_reconstructor(blind(scan), cfg, start=start, start_origin=origin, prior=prior)
    if method == "smooth" and r.prior is not None:
        r.prior = SmoothingPrior(r.shape, r.prior.mask > 0, r.prior.mu, r.prior.step, sigma=sigma)
    setup = time.perf_counter() - t0
    out = []
    for it in range(1, iterations + 1):
        r.iterate()
        if it in CHECKPOINTS or it == iterations:
            rec = {**record, "method": method, "weight": weight, "engine": r.engine, "iterations": it,
                   "seconds": round(setup + r.history[-1]["seconds"], 3), "misfit": r.history[-1]["misfit"],
                   **score(r.obj.cpu().numpy(), r.origin, scan)}
            print(json.dumps(rec), flush=True)
            out.append(rec)
    return out


def at_seconds(curve: list[dict[str, Any]], seconds: float) -> dict[str, Any] | None:
    """The last checkpoint of ``curve`` reached within ``seconds`` (5 % slack for timer noise)."""
    within = [c for c in curve if c["seconds"] <= 1.05 * seconds]
    return within[-1] if within else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run (N=32, 96 px, 2 epochs)")
    ap.add_argument("--N", type=int, default=None)
    ap.add_argument("--size", type=int, default=None, help="object side in pixels")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--doses", default="1e4", help="photons per pattern, comma-separated")
    ap.add_argument("--weights", default="0.01,0.03,0.1", help="prior weights tried (besides 0), comma-separated")
    ap.add_argument("--methods", default="prior,prior_sync,smooth",
                    help="any of prior,prior_sync,smooth (refine without a prior always runs)")
    ap.add_argument("--sigma", type=float, default=1.0, help="smoothing of the 'smooth' prior, pixels")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.N or (32 if args.quick else 64)
    size = args.size or (96 if args.quick else 320)
    epochs = args.epochs or (2 if args.quick else 20)
    step = 7.0 * n / 64
    weights = [float(w) for w in args.weights.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    print(json.dumps({**machine_record(), "N": n, "object_size": size, "epochs": epochs, "oversample": 2,
                      "iterations": args.iterations, "sigma": args.sigma}), flush=True)
    from ptychopinn.inference.predict import reconstruct

    summary: list[dict[str, Any]] = []
    for dose in [float(d) for d in args.doses.split(",")]:
        train, test = make_scans("image", n, size, dose, step, args.seed)
        default = ModelConfig()
        model, train_s = train_network(train, n, default.n_filters_scale, 1, default.generator, epochs, args.seed)
        t0 = time.perf_counter()
        net = reconstruct(model, blind(test), InferenceConfig(stitch_sync="off"), device="cpu")
        record = {"dose": dose, "patterns": test.n_points}
        print(json.dumps({**record, "method": "network", "train_seconds": round(train_s, 1),
                          "seconds": round(time.perf_counter() - t0, 3), **score(net.obj, net.origin, test)}),
              flush=True)
        synced = reconstruct(model, blind(test), InferenceConfig(), device="cpu")
        assert synced.origin == net.origin and synced.obj.shape == net.obj.shape
        print(json.dumps({**record, "method": "network_sync", "sync": synced.sync, **score(synced.obj, synced.origin,
                                                                                         test)}), flush=True)
        curves = {("refine", 0.0): refine_curve(test, net.obj, net.origin, "refine", 0.0, args.iterations,
                                                args.sigma, record)}
        for method in methods:
            for w in weights:
                curves[(method, w)] = refine_curve(test, net.obj, net.origin, method, w, args.iterations,
                                                   args.sigma, record,
                                                   prior=synced.obj if method == "prior_sync" else None)
        base = {c["iterations"]: c["seconds"] for c in curves[("refine", 0.0)]}
        for passes in EQUAL_TIME_PASSES:
            if passes not in base:
                continue
            for (method, w), curve in curves.items():
                c = at_seconds(curve, base[passes])
                if c is not None:
                    summary.append({"dose": dose, "at_seconds": base[passes], "refine_passes": passes,
                                    "method": method, "weight": w, "iterations": c["iterations"],
                                    "amplitude_ssim": round(c["amplitude_ssim"], 4),
                                    "phase_ssim": round(c["phase_ssim"], 4)})
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
