"""Quality on a scan the network has never seen, against the truth, with the seconds of every stage.

Prints one JSON line per (dataset, method, checkpoint) and a last line ``{"summary": ...}``.

Datasets (seeded, simulated on the fly, nothing committed): a natural-image object (amplitude and phase
from two pictures; the TEST pair never appears in training), raster scan with about ``step`` px spacing
and +-1 px jitter, Poisson noise, and data simulated with ``oversample=2`` (exit waves on a 2x finer
grid, central N x N of the far field kept), so no method shares the data's pixel model. ``--kinds`` adds
'lines' and 'grf' objects; ``--low-dose`` adds a 1e4-photon variant.

Methods, all scored the same way (``ptychopinn.metrics.evaluate``: the scanned region = bounding box
of the scan positions, sub-pixel registration, global phase offset and phase ramp removed; amplitude
and phase SSIM, PSNR, FRC at 0.5):

* ``network``: one prediction pass plus stitching of the trained network (training time reported
  separately as ``train_seconds``);
* ``refine_flat``: :mod:`ptychopinn.refine` from a flat object, scored after 1, 2, 5, 10, 20, 50
  iterations (``seconds`` = cumulative iteration time; scoring is not timed);
* ``network+refine``: the same iterations started from the network's image stitched as ``infer`` does
  before refining (no phase synchronisation; ``seconds`` includes the prediction and stitching).

No method sees the test scan's ground truth; the truth is read only by the scorer.

Usage: ``.venv/bin/python benchmarks/quality.py [--quick] [--epochs E] [--N 64] [--kinds image,lines,grf]``.
``--quick`` is a CI-sized smoke run (N=32, small objects, 2 epochs: seconds to a minute); the default
is the run quoted in the README (N=64, 320 x 320 objects, about 1,369 patterns).
"""

from __future__ import annotations

import os

from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ptychopinn.config import (  # noqa: E402
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    RefineConfig,
    SimulationConfig,
    TrainingConfig,
)
from ptychopinn.data.scan import ScanData  # noqa: E402
from ptychopinn.metrics import evaluate, on_truth_grid  # noqa: E402

CHECKPOINTS = (1, 2, 5, 10, 20, 50, 100)
TRAIN_PAIR = ("camera", "chelsea")
TEST_PAIR = ("astronaut", "coins")
HARD_PAIR = ("moon", "camera")
"""A second unseen test pair: a low-contrast amplitude under a phase with sharp edges, where rPIE's amplitude
stalls (the README's refinement table)."""


def scored_region(scan: ScanData) -> np.ndarray:
    """``[H, W]`` bool: the bounding box of the scan positions (the same region for every method)."""
    lo = np.floor(scan.positions.min(axis=0)).astype(int)
    hi = np.ceil(scan.positions.max(axis=0)).astype(int)
    mask = np.zeros(scan.obj.shape, bool)
    mask[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = True
    return mask


def score(obj: np.ndarray, origin: tuple[float, float], scan: ScanData) -> dict[str, Any]:
    """Amplitude / phase SSIM, PSNR and FRC(0.5) of a canvas with ``origin`` against ``scan.obj``."""
    full, _ = on_truth_grid(obj, np.ones(obj.shape, np.float32), origin, scan.obj.shape)
    m = evaluate(full, scan.obj, mask=scored_region(scan), remove_ramp=True)
    out: dict[str, Any] = {}
    for ch in ("amplitude", "phase"):
        out[f"{ch}_ssim"] = m[ch]["ssim"]
        out[f"{ch}_psnr"] = m[ch]["psnr"]
        out[f"{ch}_frc05_px"] = m[ch].get("frc_resolution_px_0.5")
    out["shift_px"] = m.get("shift_px")
    return out


def make_scans(kind: str, n: int, size: int, nphotons: float, step: float, seed: int,
               test_pair: tuple[str, str] = TEST_PAIR) -> tuple[ScanData, ScanData]:
    from ptychopinn.simulate import simulate_scan
    from ptychopinn.simulate.probes import make_probe
    from ptychopinn.simulate.scan import probe_diameter

    diameter = probe_diameter(make_probe("focused", n))
    overlap = float(np.clip(1.0 - step / diameter, 0.0, 0.94))
    base = SimulationConfig(N=n, object_size=size, object_kind=kind, image_name=TRAIN_PAIR[0],
                            phase_image=TRAIN_PAIR[1], overlap=overlap, jitter=1.0, nphotons=nphotons,
                            oversample=2, seed=seed)
    train = simulate_scan(base)
    test = simulate_scan(base.replace(image_name=test_pair[0], phase_image=test_pair[1], seed=seed + 1))
    return train, test


def blind(scan: ScanData, **changes: Any) -> ScanData:
    """The scan as a method sees it: no ground-truth object or patches (and ``changes``, e.g. another probe)."""
    return dataclasses.replace(scan, obj=None, patches=None, **changes)


def machine_record() -> dict[str, Any]:
    """The first JSON record of every benchmark: machine, CPUs, torch threads, ``OMP_WAIT_POLICY``."""
    return {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}


def probe_scan(probe: np.ndarray, size: int, *, obj: np.ndarray | None = None, photons: float = 1e6,
               oversample: int = 1, seed: int = 0) -> ScanData:
    """A raster scan (70 % overlap of ``probe``'s diameter, +-0.5 px jitter) of the astronaut / coins test object
    (``size`` px, or ``obj``), ``photons`` per pattern with Poisson noise, the ground truth attached."""
    from ptychopinn.simulate import (
        make_object,
        probe_diameter,
        raster_positions,
        simulate_diffraction,
        step_for_overlap,
    )

    if obj is None:
        obj = make_object("image", size, amplitude_range=(0.5, 1.0), phase_range=(-1.0, 1.0),
                          image_name=TEST_PAIR[0], phase_image=TEST_PAIR[1])
    n = probe.shape[-1]
    pos = raster_positions(obj.shape, n, step_for_overlap(probe_diameter(probe), 0.7), jitter=0.5, seed=seed)
    amp, _, _ = simulate_diffraction(obj, probe, pos, nphotons=photons, seed=seed, oversample=oversample)
    return ScanData(diffraction=amp, positions=pos, probe=probe, obj=obj)


def run_refine(scan: ScanData, start: np.ndarray | None, origin: tuple[float, float], offset_s: float,
               method: str, dataset: str, iterations: int, emit: Any, noise: str | None = None,
               engine: str | None = None) -> None:
    """Refine ``iterations`` passes (``noise``: the misfit, ``engine``: the engine, default
    :class:`RefineConfig`'s) and emit the scores at :data:`CHECKPOINTS`; ``misfit`` is the refinement's own
    normalised misfit."""
    from ptychopinn.refine import create_reconstructor

    cfg = RefineConfig(iterations=iterations)
    if noise is not None:
        cfg = cfg.replace(noise=noise)
    if engine is not None:
        cfg = cfg.replace(engine=engine)
    t0 = time.perf_counter()
    r = create_reconstructor(blind(scan), cfg, start=start, start_origin=origin)
    setup = time.perf_counter() - t0
    for it in range(1, iterations + 1):
        r.iterate()
        if it in CHECKPOINTS or it == iterations:
            secs = offset_s + setup + r.history[-1]["seconds"]
            emit({"dataset": dataset, "method": method, "engine": r.engine, "noise": r.noise.name, "iterations": it,
                  "seconds": round(secs, 3), "misfit": r.history[-1]["misfit"],
                  **score(r.obj.cpu().numpy(), r.origin, scan)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized smoke run")
    ap.add_argument("--N", type=int, default=None)
    ap.add_argument("--size", type=int, default=None, help="object side in pixels")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--width", type=int, default=None, help="n_filters_scale of the network (default: the default's)")
    ap.add_argument("--gridsize", type=int, default=1, help="network gridsize (C = gridsize**2 patterns per sample)")
    ap.add_argument("--generator", default=ModelConfig().generator,
                    help="registered generator name (default: the default model's)")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--kinds", default="image", help="comma-separated: image,lines,grf")
    ap.add_argument("--low-dose", action="store_true", help="also a 1e4-photon variant")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.N or (32 if args.quick else 64)
    size = args.size or (128 if args.quick else 320)
    epochs = args.epochs or (2 if args.quick else 20)
    width = args.width or ModelConfig().n_filters_scale
    iterations = args.iterations or (10 if args.quick else 50)
    step = 7.0 * n / 64

    def emit(rec: dict[str, Any]) -> None:
        print(json.dumps(rec), flush=True)

    emit({**machine_record(), "N": n, "object_size": size, "epochs": epochs, "n_filters_scale": width, "oversample": 2,
          "gridsize": args.gridsize, "generator": args.generator})
    from ptychopinn.inference.predict import reconstruct
    from ptychopinn.workflows import train_model

    summary: list[dict[str, Any]] = []
    doses = [1e9] + ([1e4] if args.low_dose else [])
    for kind in args.kinds.split(","):
        for dose in doses:
            dataset = f"{kind}@{dose:.0e}"
            train, test = make_scans(kind, n, size, dose, step, args.seed)
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                out = train_model(blind(train), output_dir=Path(tmp) / "run",
                                  model=ModelConfig(N=n, n_filters_scale=width, gridsize=args.gridsize,
                                                    generator=args.generator),
                                  training=TrainingConfig(nepochs=epochs, batch_size=16, learning_rate=2e-3,
                                                          scheduler="cosine", warmup_epochs=1, seed=args.seed),
                                  execution=ExecutionConfig(accelerator="cpu", logger="none",
                                                            enable_progress_bar=False, enable_checkpointing=False))
                train_s = time.perf_counter() - t0
            model = out.model
            t0 = time.perf_counter()
            rec = reconstruct(model, blind(test), InferenceConfig(), device="cpu")  # the defaults, as infer --refine 0
            net_s = time.perf_counter() - t0
            net = {"dataset": dataset, "method": "network", "iterations": 0, "seconds": round(net_s, 3),
                   "train_seconds": round(train_s, 1), "patterns": test.n_points,
                   **score(rec.obj, rec.origin, test)}
            emit(net)
            summary.append(net)
            run_refine(test, None, (0.0, 0.0), 0.0, "refine_flat", dataset, iterations, emit)
            # as infer refines: the start is stitched without phase synchronisation (InferenceConfig 'auto')
            t0 = time.perf_counter()
            start = reconstruct(model, blind(test), InferenceConfig(stitch_sync="off"), device="cpu")
            start_s = time.perf_counter() - t0
            run_refine(test, start.obj, start.origin, start_s, "network+refine", dataset, iterations, emit)
    emit({"summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
