"""Larger-than-memory scan benchmark; prints ONE JSON object.

1. Writes a scan of P patterns (default 200,000) of 64x64 random float32 amplitudes straight into an
   uncompressed NPZ, chunk by chunk: the ``diff3d.npy`` member is streamed into a ZIP_STORED zip entry
   (header from ``numpy.lib.format``, then the data in chunks), so neither memory nor a temporary copy of
   the stack is needed (disk = 16 KiB per pattern).
2. In a fresh child process per measurement: opens it with :func:`ptychopinn.io.npz.open_npz_mmap`
   and runs (a) ``reconstruct`` (predict + stitch, default N=64 model, untrained) end to end and (b) one
   training epoch (``ptychopinn.training.run.train``, nepochs=1, no validation split).
   Reported per child: wall time, patterns/s, ``VmHWM`` (peak resident, includes file-backed pages of the
   memory map, which are clean page cache the kernel can reclaim) and the peak of ``RssAnon`` (anonymous
   memory: model + batch + canvas; sampled every 20 ms by a thread).

Usage: ``.venv/bin/python benchmarks/large_scan.py [--patterns P] [--quick] [--width W] [--train-patterns T]
[--skip-train]``. ``--quick`` = 20,000 patterns. ``--train-patterns`` limits the epoch to the first T
patterns (``n_subsample``) when a full CPU epoch is too slow; the JSON says so.
"""

from __future__ import annotations

import os

from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

N = 64
SPACING = 4.0  # px between raster points


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakSampler:
    """Peak of ``RssAnon`` (kB) sampled in a background thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak_anon_kb = interval, _status_kb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon_kb = max(self.peak_anon_kb, _status_kb("RssAnon"))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon_kb = max(self.peak_anon_kb, _status_kb("RssAnon"))


def scan_geometry(p: int) -> tuple[np.ndarray, int]:
    """Raster positions ``[P, 2]`` (x, y) px and the object side (px) that holds them."""
    side = int(np.ceil(np.sqrt(p)))
    i = np.arange(p)
    pos = np.stack([(i % side) * SPACING, (i // side) * SPACING], axis=1).astype(np.float64) + N
    obj_side = int(pos.max()) + N + 1
    return pos, obj_side


def _probe() -> np.ndarray:
    yy, xx = np.mgrid[:N, :N] - N / 2
    return (np.exp(-(xx**2 + yy**2) / (2 * (N / 8) ** 2)) * np.exp(1j * 0.01 * (xx**2 + yy**2))).astype(
        np.complex64)


def _write_member(zf: zipfile.ZipFile, key: str, arr: np.ndarray) -> None:
    with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)


def write_scan(path: str | Path, patterns: int, *, chunk: int = 2048, seed: int = 0) -> Path:
    """Write ``patterns`` random float32 amplitudes (64x64) + raster positions as an uncompressed NPZ."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    pos, _ = scan_geometry(patterns)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("diff3d.npy", "w", force_zip64=True) as fh:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                      "shape": (patterns, N, N)}
            np.lib.format.write_array_header_2_0(fh, header)
            for lo in range(0, patterns, chunk):
                k = min(chunk, patterns - lo)
                # Poisson-like amplitude: sqrt of counts from a bright centre
                block = np.sqrt(rng.poisson(4.0, size=(k, N, N))).astype(np.float32)
                fh.write(block.tobytes())
        _write_member(zf, "xcoords", pos[:, 0])
        _write_member(zf, "ycoords", pos[:, 1])
        _write_member(zf, "probeGuess", _probe())
        _write_member(zf, "_metadata", np.array(json.dumps({"diffraction_units": "amplitude"})))
    return path


def run_infer(path: str, width: int, batch: int) -> dict[str, Any]:
    """Open with the memory map and reconstruct end to end (in THIS process)."""
    import torch

    from ptychopinn.config import InferenceConfig, ModelConfig
    from ptychopinn.inference.predict import reconstruct
    from ptychopinn.io.npz import open_npz_mmap
    from ptychopinn.models.pinn import PtychoPINN

    torch.manual_seed(0)
    with PeakSampler() as sampler:
        t0 = time.perf_counter()
        scan = open_npz_mmap(path)
        t_open = time.perf_counter() - t0
        model = PtychoPINN(ModelConfig(N=N, n_filters_scale=width), probe=scan.probe, intensity_scale=1.0).eval()
        t1 = time.perf_counter()
        rec = reconstruct(model, scan, InferenceConfig(batch_size=batch, accelerator="cpu"))
        t_rec = time.perf_counter() - t1
    return {"patterns": scan.n_points, "open_s": round(t_open, 3), "reconstruct_s": round(t_rec, 2),
            "patterns_per_s": round(scan.n_points / t_rec, 2), "object_shape": list(rec.obj.shape),
            "finite": bool(np.isfinite(rec.obj).all()),
            "vmhwm_mb": round(_status_kb("VmHWM") / 1024, 1),
            "peak_rss_anon_mb": round(sampler.peak_anon_kb / 1024, 1)}


def run_train(path: str, width: int, batch: int, n_subsample: int | None) -> dict[str, Any]:
    """One training epoch over the memory-mapped scan (in THIS process)."""
    from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
    from ptychopinn.io.npz import open_npz_mmap
    from ptychopinn.training.run import train

    with PeakSampler() as sampler, tempfile.TemporaryDirectory() as out:
        scan = open_npz_mmap(path)
        t0 = time.perf_counter()
        train(scan, model=ModelConfig(N=N, n_filters_scale=width),
              training=TrainingConfig(nepochs=1, batch_size=batch, val_fraction=0.0, n_subsample=n_subsample),
              execution=ExecutionConfig(accelerator="cpu", logger="none", enable_progress_bar=False,
                                        enable_checkpointing=False), output_dir=out)
        dt = time.perf_counter() - t0
    n = scan.n_points if n_subsample is None else min(n_subsample, scan.n_points)
    return {"patterns": n, "epoch_s": round(dt, 2), "patterns_per_s": round(n / dt, 2),
            "vmhwm_mb": round(_status_kb("VmHWM") / 1024, 1),
            "peak_rss_anon_mb": round(sampler.peak_anon_kb / 1024, 1)}


def in_child(mode: str, path: str | Path, *, width: int = 2, batch: int = 64,
             n_subsample: int | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Run ``run_infer``/``run_train`` in a fresh Python process; return its JSON result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", mode, "--_path", str(path),
           "--width", str(width), "--batch", str(batch)]
    if n_subsample is not None:
        cmd += ["--train-patterns", str(n_subsample)]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patterns", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="20,000 patterns")
    ap.add_argument("--width", type=int, default=2, help="n_filters_scale (default model: 2)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--train-patterns", type=int, default=None, help="limit the epoch to T patterns")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--dir", default=None, help="where to write the scan (default: a temp dir)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_path", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child == "infer":
        print(json.dumps(run_infer(args._path, args.width, args.batch)))
        return 0
    if args._child == "train":
        print(json.dumps(run_train(args._path, args.width, args.batch, args.train_patterns)))
        return 0
    p = 20_000 if args.quick else args.patterns
    result: dict[str, Any] = {"patterns": p, "N": N, "width": args.width, "batch": args.batch,
                              "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "scan.npz"
        t0 = time.perf_counter()
        write_scan(path, p)
        result["write_s"] = round(time.perf_counter() - t0, 2)
        result["file_mb"] = round(path.stat().st_size / 2**20, 1)
        if not args.skip_infer:
            result["infer"] = in_child("infer", path, width=args.width, batch=args.batch)
        if not args.skip_train:
            result["train_epoch"] = in_child("train", path, width=args.width, batch=args.batch,
                                             n_subsample=args.train_patterns)
            if args.train_patterns is not None and args.train_patterns < p:
                result["train_epoch"]["note"] = f"epoch over n_subsample={args.train_patterns} of {p} patterns"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
