"""pty-chi (``ptychi`` 2.2.0) as a side-by-side peer of :mod:`ptychopinn.refine` on the quality benchmark's scan.

One command: ``make bench-peer`` (installs pty-chi into .venv without its dependencies, then runs
``.venv/bin/python benchmarks/ptychi_peer.py``). Options: ``--quick`` (N=32, 128 x 128 object),
``--engines rpie,lsqml,epie,dm``, ``--ours cg,rpie``, ``--datasets image@1e9,moon@1e9,...``, ``--threads 1,2``,
``--iterations 100``, ``--sweep {none,truth,full}``.

Same data, same CPU, same scoring: the test scans of ``benchmarks/quality.py`` (``quality.make_scans``:
natural-image objects, raster scan with +-1 px jitter, data simulated with ``oversample=2``; N=64 and a
320 x 320 object by default) and ``quality.score`` for every method. Datasets ``KIND@DOSE``: ``image``
(the astronaut/coins pair), ``moon`` (``quality.HARD_PAIR``), ``sparse`` (astronaut/coins at twice the
scan step, about 48 % linear overlap), at DOSE photons per pattern. Every method starts from a flat object
and keeps the scan's probe and positions fixed:

* pty-chi engines through the public API (``ptychi.api`` options, ``PtychographyTask(options)``,
  ``task.run(k)``, ``task.get_data_to_cpu('object', as_numpy=True)``), batch size 64 (ours), device CPU,
  float32, probe and positions not optimisable, no object/probe rescaling. Per engine: rPIE (alpha 0.1),
  LSQML (Gaussian noise model; ``rescale_probe_intensity_in_first_epoch=False`` because the probe is
  already scaled to the data, otherwise epoch 1 only rescales the probe), ePIE (alpha 1, the classic
  step; pty-chi's default 0.1 is the rPIE value) and DM (full-batch by design; ``chunk_length=64`` is a
  memory/speed setting that does not change the iterates);
* ``ptychopinn.refine``: ``quality.run_refine`` (``create_reconstructor(blind(scan), RefineConfig(iterations=K,
  engine=E, noise='gaussian'))``) for each engine E of ``--ours``: the Gaussian amplitude misfit, so that
  ``misfit`` means the same for every method (the cg engine's default; rPIE's default Poisson misfit is
  compared in ``benchmarks/refine_noise.py``).

Timing: ``seconds`` = cumulative iteration time at the checkpoint (1, 2, 5, 10, 20, 50 iterations); the
scoring and the data-misfit evaluation are not timed. pty-chi's ``PtychographyTask`` construction is
reported separately as ``setup_seconds``; ours includes its set-up (one forward pass to scale the start
object) in ``seconds``, as in quality.py, and the size of that set-up is printed as a separate record.
``misfit`` has one definition for every method: ``sum (|Psi| - A)**2 / sum A**2`` accumulated during the
last pass (ours natively; pty-chi's displayed MSE-of-sqrt loss converted, up to its batch-mean weighting).

Conventions (converted here and checked by ``--sweep``):

* data: ours is amplitude ``sqrt(counts)`` with zero frequency at pixel (N/2, N/2) under the orthonormal
  centred FFT; pty-chi takes intensities (counts), ``fft_shift=True`` for centred data, and uses the
  unnormalised ``fft2``: its probe is ours divided by N (and scaled here, from the data alone, so that a
  flat object of 1 explains the mean counts, as our engines scale their start);
* geometry: our position (x, y) = (column, row) is the object point under probe pixel (N//2, N//2);
  pty-chi's is (y, x) relative to ``pos_origin_coords = round(shape / 2) - 0.5`` of its buffer, patch
  pixel 0 at ``centre - (N-1)/2``, so probe pixel N/2 lands on buffer pixel ``p + round(shape/2)``: for a
  buffer whose pixel (0, 0) is object pixel (x0, y0), ``p_x = x - x0 - round(w/2)`` and likewise for y.
  Like ours, it cuts the object at the rounded position and Fourier-shifts the probe by the remainder;
* ``--sweep truth``: the true object on pty-chi's buffer, positions moved by a common offset; the data
  misfit of pty-chi's own forward model must be smallest at offset 0 (and equal ours there);
  ``--sweep full`` adds short rPIE reconstructions per offset: ``shift_px`` of ``quality.score`` must be
  ~0 at offset 0 and follow the offset elsewhere (a common offset is invisible to the data misfit).

pty-chi imports torchvision only for a Gaussian blur; ``benchmarks/_peer_stubs`` (put first on
``sys.path`` here, never installed) provides a faithful stand-in, because the torchvision wheel that
matches torch 2.13 is a CUDA build that does not import with the CPU torch.
"""

from __future__ import annotations

import os

from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE / "_peer_stubs"))  # stand-in torchvision, for `import ptychi` only
sys.path.insert(0, str(_HERE))  # quality.py

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import quality  # noqa: E402
from ptychopinn.config import RefineConfig  # noqa: E402
from ptychopinn.data.scan import ScanData  # noqa: E402
from ptychopinn.physics.shift import shift_ramp, split_positions, window_index  # noqa: E402

ENGINES = ("rpie", "lsqml", "epie", "dm")
DATASETS = ("image@1e9", "moon@1e9", "image@1e5", "image@1e4", "sparse@1e9")
MARGIN = 2  # buffer pixels around the scanned windows (pty-chi pads patches that reach outside)
SWEEP_OFFSETS = (-1.0, -0.5, 0.5, 1.0)


# ---------------------------------------------------------------------------------------------- inputs
def ptychi_inputs(scan: ScanData, offset: tuple[float, float] = (0.0, 0.0)) -> dict[str, Any]:
    """pty-chi's arrays for ``scan`` (see the module docstring), positions moved by ``offset`` (dx, dy) px."""
    n = scan.N
    corner, _ = split_positions(scan.positions, n)
    lo = corner.min(axis=0) - MARGIN
    hi = corner.max(axis=0) + n + MARGIN
    h, w = int(hi[1] - lo[1]), int(hi[0] - lo[0])
    counts = np.square(np.asarray(scan.diffraction, dtype=np.float32))
    probe = np.asarray(scan.probe, dtype=np.complex64)
    mean_counts = float(counts.sum(dtype=np.float64)) / scan.n_points
    probe = probe * np.float32(math.sqrt(mean_counts / float(np.sum(np.abs(probe) ** 2))) / n)
    # torch.round (ptychi) and np.round both round half to even
    cy, cx = float(np.round(h / 2)), float(np.round(w / 2))
    return {
        "counts": counts,
        "probe": probe[None, None],  # (n_opr_modes, n_modes, N, N)
        "pos_x": scan.positions[:, 0] - lo[0] - cx + offset[0],
        "pos_y": scan.positions[:, 1] - lo[1] - cy + offset[1],
        "shape": (h, w),
        "origin": (float(lo[0]), float(lo[1])),
    }


def ptychi_task(engine: str, inp: dict[str, Any], obj0: np.ndarray, batch_size: int, seed: int) -> Any:
    """A built ``PtychographyTask`` (the timed set-up) for one engine, fixed probe and positions."""
    from ptychi import api
    from ptychi.api.task import PtychographyTask

    opts = {"rpie": api.RPIEOptions, "lsqml": api.LSQMLOptions, "epie": api.EPIEOptions,
            "dm": api.DMOptions}[engine]()
    opts.data_options.fft_shift = True
    opts.object_options.optimizable = True
    opts.object_options.remove_object_probe_ambiguity.enabled = False
    opts.probe_options.optimizable = False
    opts.probe_position_options.optimizable = False
    ro = opts.reconstructor_options
    ro.default_device = api.Devices.CPU
    ro.default_dtype = api.Dtypes.FLOAT32
    ro.random_seed = seed
    ro.num_epochs = 1
    if engine == "dm":
        ro.chunk_length = batch_size  # DM is full-batch; the chunk only sets memory use
    else:
        ro.batch_size = batch_size
    if engine == "lsqml":
        ro.rescale_probe_intensity_in_first_epoch = False
    if engine == "epie":
        opts.object_options.alpha = 1.0
    return PtychographyTask(opts, diffraction_data=inp["counts"], object_data=obj0[None], probe_data=inp["probe"],
                            probe_position_x_px=inp["pos_x"], probe_position_y_px=inp["pos_y"])


def _reset_torch_defaults() -> None:
    """pty-chi sets torch's global default device (a function mode on every op) and dtype; undo that."""
    torch.set_default_device(None)
    torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------------------------------------- misfit
def _paste(obj: np.ndarray, origin: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    full = np.zeros(shape, np.complex64)
    ox, oy = int(round(origin[0])), int(round(origin[1]))
    r0, c0 = max(0, oy), max(0, ox)
    r1, c1 = min(shape[0], oy + obj.shape[0]), min(shape[1], ox + obj.shape[1])
    full[r0:r1, c0:c1] = obj[r0 - oy:r1 - oy, c0 - ox:c1 - ox]
    return full


def data_misfit(obj: np.ndarray, origin: tuple[float, float], scan: ScanData, batch: int = 256) -> float:
    """Relative amplitude misfit of a canvas under ptychopinn's forward model (integer object window, probe
    Fourier-shifted by the fractional position), best global scale; not timed."""
    n = scan.N
    full = torch.from_numpy(_paste(obj, origin, scan.obj.shape)).reshape(-1)
    spec = torch.fft.fft2(torch.from_numpy(np.asarray(scan.probe, np.complex64)))
    am = aa = mm = 0.0
    with torch.no_grad():
        for lo in range(0, scan.n_points, batch):
            pos = scan.positions[lo:lo + batch]
            corner, frac = split_positions(pos, n)
            win = full[window_index(torch.from_numpy(corner), n, scan.obj.shape[1])]
            probes = torch.fft.ifft2(spec[None] * shift_ramp((n, n), torch.from_numpy(frac)))
            a = torch.fft.fft2(probes * win, norm="ortho").abs().double()
            m = torch.from_numpy(np.asarray(scan.diffraction[lo:lo + batch])).double()
            m = torch.fft.ifftshift(m, dim=(-2, -1))
            am += float((a * m).sum())
            aa += float((a * a).sum())
            mm += float((m * m).sum())
    return (mm - am * am / aa) / mm


def ptychi_truth_misfit(scan: ScanData, offset: tuple[float, float], batch: int = 256) -> float:
    """Relative amplitude misfit (best global scale) of pty-chi's forward model of the TRUE object with the
    converted positions moved by ``offset``: smallest at (0, 0) when the geometry conversion is right."""
    inp = ptychi_inputs(scan, offset)
    x0, y0 = (int(v) for v in inp["origin"])
    h, w = inp["shape"]
    pad = MARGIN + 1
    truth = np.pad(scan.obj, pad, mode="edge")[y0 + pad:y0 + pad + h, x0 + pad:x0 + pad + w]
    task = ptychi_task("rpie", inp, truth.astype(np.complex64), 64, 0)
    try:
        fm = task.reconstructor.forward_model
        am = aa = mm = 0.0
        with torch.no_grad():
            for lo in range(0, scan.n_points, batch):
                idx = torch.arange(lo, min(lo + batch, scan.n_points))
                a = fm.forward(idx).double().clamp_min(0).sqrt()
                m = task.dataset.patterns[idx].double().sqrt()  # already moved to DC-at-(0, 0) by pty-chi
                am += float((a * m).sum())
                aa += float((a * a).sum())
                mm += float((m * m).sum())
    finally:
        del task
        _reset_torch_defaults()
    return (mm - am * am / aa) / mm


# ---------------------------------------------------------------------------------------------- runs
def run_ptychi(engine: str, scan: ScanData, iterations: int, emit: Any, base: dict[str, Any], *,
               batch_size: int = 64, offset: tuple[float, float] = (0.0, 0.0), seed: int = 0,
               checkpoints: tuple[int, ...] = quality.CHECKPOINTS) -> None:
    inp = ptychi_inputs(scan, offset)
    total = float(inp["counts"].sum(dtype=np.float64))
    obj0 = np.ones(inp["shape"], np.complex64)
    t0 = time.perf_counter()
    task = ptychi_task(engine, inp, obj0, batch_size, seed)
    setup = time.perf_counter() - t0
    try:
        secs, done = 0.0, 0
        for it in range(1, iterations + 1):
            if it not in checkpoints and it != iterations:
                continue
            t0 = time.perf_counter()
            task.run(it - done)
            secs += time.perf_counter() - t0
            done = it
            obj = task.get_data_to_cpu("object", as_numpy=True)[0]
            # pty-chi's loss is the batch-mean of mean((sqrt(I_model) - sqrt(I))**2) over the last pass; times
            # M N**2 / total counts it is our misfit (sum over the pass of (|Psi| - A)**2 / sum A**2)
            loss = float(task.reconstructor.loss_tracker.table.iloc[-1].loss)
            emit({**base, "method": f"ptychi.{engine}", "iterations": it, "seconds": round(secs, 3),
                  "setup_seconds": round(setup, 3), "sec_per_iter_per_pattern_us": round(1e6 * secs / it /
                                                                                      scan.n_points, 2),
                  "misfit": loss * inp["counts"].size / total, "ptychi_loss": loss,
                  **({"offset_px": list(offset)} if offset != (0.0, 0.0) else {}),
                  **quality.score(obj, inp["origin"], scan)})
    finally:
        del task
        _reset_torch_defaults()


def run_ours(scan: ScanData, iterations: int, emit: Any, base: dict[str, Any], engine: str) -> None:
    from ptychopinn.refine import create_reconstructor

    t0 = time.perf_counter()
    create_reconstructor(quality.blind(scan), RefineConfig(iterations=1, engine=engine))
    emit({**base, "method": f"ptychopinn.{engine}", "setup_seconds": round(time.perf_counter() - t0, 3),
          "note": "set-up alone; included in the 'seconds' of the records below"})

    def emit_ours(rec: dict[str, Any]) -> None:
        rec.pop("dataset", None)
        it = rec["iterations"]
        rec["sec_per_iter_per_pattern_us"] = round(1e6 * rec["seconds"] / it / scan.n_points, 2)
        emit({**base, **rec})

    quality.run_refine(scan, None, (0.0, 0.0), 0.0, f"ptychopinn.{engine}", base["dataset"], iterations, emit_ours,
                       noise="gaussian", engine=engine)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=32, 128 x 128 object")
    ap.add_argument("--N", type=int, default=None)
    ap.add_argument("--size", type=int, default=None, help="object side in pixels")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--engines", default="lsqml,rpie", help=f"comma-separated subset of {ENGINES}")
    ap.add_argument("--ours", default="cg,rpie", help="comma-separated ptychopinn engines (cg, rpie)")
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help="comma-separated KIND@DOSE, KIND in image, moon, sparse (module docstring)")
    ap.add_argument("--threads", default="1", help="comma-separated torch thread counts, e.g. 1,2")
    ap.add_argument("--no-ours", action="store_true", help="skip ptychopinn.refine")
    ap.add_argument("--sweep", choices=("none", "truth", "full"), default="truth",
                    help="geometry check: truth-object misfit per offset; 'full' adds rPIE runs per offset")
    ap.add_argument("--sweep-iterations", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    bad = sorted(set(engines) - set(ENGINES))
    if bad:
        ap.error(f"unknown engines {bad}; choose from {ENGINES}")
    threads = [int(t) for t in args.threads.split(",")]
    n = args.N or (32 if args.quick else 64)
    size = args.size or (128 if args.quick else 320)
    step = 7.0 * n / 64
    datasets = [d for d in args.datasets.split(",") if d]
    for d in datasets:
        kind, _, dose_text = d.partition("@")
        if kind not in ("image", "moon", "sparse") or not _is_float(dose_text):
            ap.error(f"dataset {d!r}: expected KIND@DOSE with KIND image, moon or sparse, e.g. image@1e9")
    logging.getLogger("ptychi").setLevel(logging.ERROR)  # no per-epoch log lines or progress bars

    def emit(rec: dict[str, Any]) -> None:
        print(json.dumps(rec), flush=True)

    t0 = time.perf_counter()
    import ptychi
    import ptychi.api
    import ptychi.api.task  # noqa: F401  (imported here so the first task's set-up time excludes imports)
    import torchvision

    import_s = time.perf_counter() - t0
    emit({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": threads,
          "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "torch": torch.__version__,
          "ptychi": getattr(ptychi, "__version__", None) or _dist_version("ptychi"),
          "torchvision": "stand-in (benchmarks/_peer_stubs)" if getattr(torchvision, "STUB", False)
          else torchvision.__version__,
          "N": n, "object_size": size, "oversample": 2, "ptychi_import_seconds": round(import_s, 1),
          "batch_size": RefineConfig().batch_size})
    for i, dataset in enumerate(datasets):
        kind, _, dose_text = dataset.partition("@")
        t0 = time.perf_counter()
        _, scan = quality.make_scans("image", n, size, float(dose_text), 2 * step if kind == "sparse" else step,
                                     args.seed, quality.HARD_PAIR if kind == "moon" else quality.TEST_PAIR)
        emit({"dataset": dataset, "patterns": scan.n_points, "simulate_seconds": round(time.perf_counter() - t0, 1)})
        run_dataset(scan, dataset, args, engines, threads, emit, sweep=args.sweep if i == 0 else "none")
    return 0


def _is_float(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def run_dataset(scan: ScanData, dataset: str, args: argparse.Namespace, engines: list[str], threads: list[int],
                emit: Any, sweep: str) -> None:
    """Every method on one scan: the geometry check (``sweep``), ours, then pty-chi's engines."""
    torch.set_num_threads(threads[0])
    if sweep != "none":
        emit({"check": "ours_truth_misfit", "misfit": data_misfit(scan.obj, (0.0, 0.0), scan)})
        for ax in (0, 1):
            for d in (0.0, *SWEEP_OFFSETS):
                if d == 0.0 and ax == 1:
                    continue
                off = (d, 0.0) if ax == 0 else (0.0, d)
                emit({"check": "ptychi_truth_misfit", "offset_px": list(off),
                      "misfit": ptychi_truth_misfit(scan, off)})
        if sweep == "full":
            for ax in (0, 1):
                for d in (0.0, *SWEEP_OFFSETS):
                    if d == 0.0 and ax == 1:
                        continue
                    off = (d, 0.0) if ax == 0 else (0.0, d)
                    run_ptychi("rpie", scan, args.sweep_iterations, emit,
                               {"check": "rpie_offset_sweep", "torch_threads": threads[0]},
                               batch_size=RefineConfig().batch_size, offset=off, seed=args.seed,
                               checkpoints=(args.sweep_iterations,))

    for t in threads:
        torch.set_num_threads(t)
        base = {"dataset": dataset, "torch_threads": t}
        if not args.no_ours:
            for ours in (e for e in args.ours.split(",") if e):
                run_ours(scan, args.iterations, emit, base, ours)
        for engine in engines:
            run_ptychi(engine, scan, args.iterations, emit, base, batch_size=RefineConfig().batch_size,
                       seed=args.seed)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
