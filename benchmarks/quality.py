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

Regimes (``--regimes``): ``other`` trains on another object of the same kind (lines on lines: the
same-kind, in-distribution case), ``self`` on the test scan itself, ``part`` on the left half of the test
scan and reconstructs the right half, ``adapt`` trains on another object and then fine-tunes on the test
scan for ``--adapt-epochs`` (:func:`ptychopinn.training.adapt.adapt_model`). Every optimisation that
touches the test scan (training on it, adapting to it) counts in the network methods' ``seconds``
(``on_scan_seconds``); training on another object does not (``train_seconds``). The last line's summary
gives, per row, the network alone, network + refinement after ``--compare-at`` passes, and refinement alone
at the same wall time (``refine_flat_equal_time``).

No method sees the test scan's ground truth; the truth is read only by the scorer.

Usage: ``.venv/bin/python benchmarks/quality.py [--quick] [--epochs E] [--N 64] [--kinds image,lines,grf]
[--doses 1e9,1e5,1e4] [--sparse] [--regimes other,self,part,adapt]``.
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
               engine: str | None = None, until: float | None = None) -> None:
    """Refine ``iterations`` passes (``noise``: the misfit, ``engine``: the engine, default
    :class:`RefineConfig`'s) and emit the scores at :data:`CHECKPOINTS`; ``misfit`` is the refinement's own
    normalised misfit. With ``until`` (seconds) it stops at the first pass that ends after then and emits the
    last pass that ended by then too (scoring is never timed)."""
    from ptychopinn.refine import create_reconstructor

    cfg = RefineConfig(iterations=iterations)
    if noise is not None:
        cfg = cfg.replace(noise=noise)
    if engine is not None:
        cfg = cfg.replace(engine=engine)
    t0 = time.perf_counter()
    r = create_reconstructor(blind(scan), cfg, start=start, start_origin=origin)
    setup = time.perf_counter() - t0
    pending = None
    for it in range(1, iterations + 1):
        r.iterate()
        secs = offset_s + setup + r.history[-1]["seconds"]
        over = until is not None and secs > until
        if over and it > 1:
            break
        checkpoint = it in CHECKPOINTS or it == iterations or over  # one pass is always reported
        if checkpoint or (until is not None and secs >= 0.5 * until):
            rec = {"dataset": dataset, "method": method, "engine": r.engine, "noise": r.noise.name, "iterations": it,
                   "seconds": round(secs, 3), "misfit": r.history[-1]["misfit"],
                   **score(r.obj.cpu().numpy(), r.origin, scan)}
            if checkpoint:
                emit(rec)
            pending = None if checkpoint else rec
        if over:
            break
    if pending is not None:
        emit(pending)


def split_scan(scan: ScanData) -> tuple[ScanData, ScanData]:
    """``(left part, right part)`` of one scan, split at the median column of its positions: a network trained on
    one part of a scan (no truth) reconstructs the other (the 'part' regime); the truth stays attached."""
    left = scan.positions[:, 0] < np.median(scan.positions[:, 0])
    return scan.subset(left), scan.subset(~left)


def train_network(scan: ScanData, n: int, width: int, gridsize: int, generator: str, epochs: int,
           seed: int, offset_channels: bool = False) -> tuple[Any, float]:
    """(trained PtychoPINN, seconds) on ``scan`` with the benchmark's training settings (batch 16, learning rate 2e-3,
    cosine schedule, CPU); no truth is used."""
    from ptychopinn.workflows import train_model

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = train_model(blind(scan), output_dir=Path(tmp) / "run",
                          model=ModelConfig(N=n, n_filters_scale=width, gridsize=gridsize, generator=generator,
                                            offset_channels=offset_channels),
                          training=TrainingConfig(nepochs=epochs, batch_size=16, learning_rate=2e-3,
                                                  scheduler="cosine", warmup_epochs=1, seed=seed),
                          execution=ExecutionConfig(accelerator="cpu", logger="none",
                                                    enable_progress_bar=False, enable_checkpointing=False))
        return out.model, time.perf_counter() - t0


def regime_scans(regime: str, kind: str, n: int, size: int, dose: float, step: float,
                 seed: int) -> tuple[ScanData, ScanData]:
    """``(training scan, test scan)`` of a regime: 'other' trains on another object of the same kind, 'self' and
    'adapt' on the test scan itself (its time counts), 'part' on the left half of the test scan and tests on
    the right half."""
    train, test = make_scans(kind, n, size, dose, step, seed)
    if regime == "self":
        return test, test
    if regime == "part":
        return split_scan(test)
    return train, test


def run_row(regime: str, dataset: str, train: ScanData, test: ScanData, args: argparse.Namespace,
            emit: Any) -> dict[str, Any]:
    """Train (and adapt), then score the network alone, network + refinement and refinement alone on ``test``.

    Returns the row's summary: each method's scores and seconds, where ``seconds`` of the network methods include
    every optimisation that touched the test scan (training on it for 'self' and 'part', adaptation for 'adapt'),
    and ``refine_flat`` is read at the same wall time as ``network+refine`` after ``--compare-at`` passes.
    """
    from ptychopinn.inference.predict import reconstruct

    n = train.N
    model, train_s = train_network(train, n, args.width, args.gridsize, args.generator, args.epochs, args.seed,
                            args.offset_channels)
    on_scan = train_s if regime in ("self", "part") else 0.0
    if regime == "adapt":
        from ptychopinn.training.adapt import adapt_model

        t0 = time.perf_counter()
        model = adapt_model(model, blind(test), epochs=args.adapt_epochs, seed=args.seed).model
        on_scan = time.perf_counter() - t0
    base = {"dataset": dataset, "regime": regime, "train_seconds": round(train_s, 1),
            "on_scan_seconds": round(on_scan, 1), "patterns": test.n_points}
    # one prediction pass, as infer makes it: the image `--refine 0` writes (the defaults) and, under stitch_sync
    # 'auto', the same windows without synchronisation, which refinement starts from
    t0 = time.perf_counter()
    rec = reconstruct(model, blind(test), InferenceConfig(), device="cpu", keep_unsynchronised=True)
    start_s = on_scan + time.perf_counter() - t0
    net = {**base, "method": "network", "iterations": 0, "seconds": round(start_s, 3),
           **score(rec.obj, rec.origin, test)}
    emit(net)
    records: list[dict[str, Any]] = []

    def keep(rec: dict[str, Any]) -> None:
        records.append(rec)
        emit({**base, **rec})

    start = rec.obj if rec.unsynchronised is None else rec.unsynchronised
    run_refine(test, start, rec.origin, start_s, "network+refine", dataset, args.iterations, keep)
    joint = next(r for r in records if r["iterations"] == min(args.compare_at, args.iterations))
    # refinement alone gets the same wall time (cap: --flat-iterations passes, well past where it stops improving)
    flat_iters = max(args.iterations, args.flat_iterations)
    run_refine(test, None, (0.0, 0.0), 0.0, "refine_flat", dataset, flat_iters, keep, until=joint["seconds"])
    flat = [r for r in records if r["method"] == "refine_flat"]
    equal = max((r for r in flat if r["seconds"] <= joint["seconds"]), key=lambda r: r["seconds"], default=flat[0])

    def cell(r: dict[str, Any]) -> dict[str, Any]:
        return {k: r[k] for k in ("iterations", "seconds", "amplitude_ssim", "phase_ssim")}

    return {**base, "network": cell(net), "network+refine": cell(joint), "refine_flat_equal_time": cell(equal)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized smoke run")
    ap.add_argument("--N", type=int, default=None)
    ap.add_argument("--size", type=int, default=None, help="object side in pixels")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--width", type=int, default=None, help="n_filters_scale of the network (default: the default's)")
    ap.add_argument("--gridsize", type=int, default=1, help="network gridsize (C = gridsize**2 patterns per sample)")
    ap.add_argument("--offset-channels", action="store_true",
                    help="gridsize > 1: the generator reads the group's offsets")
    ap.add_argument("--generator", default=ModelConfig().generator,
                    help="registered generator name (default: the default model's)")
    ap.add_argument("--iterations", type=int, default=None, help="passes of network + refinement")
    ap.add_argument("--compare-at", type=int, default=20,
                    help="network + refinement after this many passes is compared with refinement alone at equal time")
    ap.add_argument("--flat-iterations", type=int, default=100, help="most passes of refinement alone")
    ap.add_argument("--kinds", default="image", help="comma-separated: image,lines,grf")
    ap.add_argument("--doses", default="1e9", help="comma-separated photons per pattern, e.g. 1e9,1e5,1e4")
    ap.add_argument("--low-dose", action="store_true", help="also 1e4 photons (same as adding 1e4 to --doses)")
    ap.add_argument("--sparse", action="store_true", help="also each kind at twice the scan step (first dose only)")
    ap.add_argument("--regimes", default="other",
                    help="comma-separated: other (train on another object of the kind), self (on the test scan), "
                         "part (on half the test scan, test on the other half), adapt (other, then --adapt-epochs "
                         "on the test scan)")
    ap.add_argument("--adapt-epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.N or (32 if args.quick else 64)
    size = args.size or (128 if args.quick else 320)
    args.epochs = args.epochs or (2 if args.quick else 20)
    args.width = args.width or ModelConfig().n_filters_scale
    args.iterations = args.iterations or (10 if args.quick else 50)
    step = 7.0 * n / 64
    doses = [float(d) for d in args.doses.split(",") if d] + ([1e4] if args.low_dose else [])

    def emit(rec: dict[str, Any]) -> None:
        print(json.dumps(rec), flush=True)

    emit({**machine_record(), "N": n, "object_size": size, "epochs": args.epochs, "n_filters_scale": args.width,
          "oversample": 2, "gridsize": args.gridsize, "offset_channels": args.offset_channels,
          "generator": args.generator})
    rows = [(kind, dose, step, "") for kind in args.kinds.split(",") for dose in doses]
    if args.sparse:
        rows += [(kind, doses[0], 2 * step, "-sparse") for kind in args.kinds.split(",")]
    summary: list[dict[str, Any]] = []
    for kind, dose, row_step, tag in rows:
        for regime in args.regimes.split(","):
            train, test = regime_scans(regime, kind, n, size, dose, row_step, args.seed)
            summary.append(run_row(regime, f"{kind}{tag}@{dose:.0e}", train, test, args, emit))
    emit({"summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
