"""Inference throughput and memory benchmark; prints ONE JSON object on one line.

Measures, at N=64 with each generator of ``--generators`` side by side (default: the default model, the
previous default ``unet`` at width 2 and the reference ``cnn`` at width 2; untrained weights: speed does not
depend on the values):

* ``predict``: network prediction alone (``predict_patches`` under ``torch.inference_mode``, batch of 64
  groups), gridsize 1 and 2, median of 3 timed runs;
* ``stitch``: :class:`~ptychopinn.inference.stitch.Stitcher` alone on random complex patches, window 20;
* ``end_to_end``: NPZ on disk -> ``load_npz`` -> ``reconstruct`` -> ``np.savez`` of the result (+ an
  amplitude PNG when ``ptychopinn.plots.save_amplitude_png`` exists), gridsize 1 and 2, each in a fresh
  process, per generator;
* ``memory``: peak resident memory of a fresh child process per case (``VmHWM`` of the child's own
  address space; ``ru_maxrss`` is also reported but on Linux it inherits the parent's peak across
  fork+exec, so it is only an upper bound) for the end-to-end run on scans of 2,000 and 20,000
  random-amplitude patterns, read with ``load_npz`` (which loads every pattern) and through a memory
  map of the uncompressed NPZ member (``mmap``: the pipeline then reads one batch at a time), with the
  default generator. A 20,000-pattern CPU run with the network takes minutes: unless
  ``--full-memory`` is given (or the device is a GPU), the 20,000 cases use a zero-output stand-in for
  the network (same shapes, so loading, normalisation, grouping, batching and stitching are real) and
  ``estimated_peak_mb`` adds the network's own increment measured at 2,000 patterns;
* ``machine``: fp32 matmul GFLOP/s, to put the other numbers in context.

Usage: ``.venv/bin/python benchmarks/infer_throughput.py [--quick] [--full-memory] [--device cpu|cuda|auto]
[--generators unet,cnn]``.
``--quick`` shrinks every size (a smoke run, not the reported numbers). Timings on a shared machine
vary with its load: ``machine.loadavg`` records it, and stitching is also given per CPU-second.
"""

from __future__ import annotations

import os

# Before torch is imported: idle OpenMP threads must not spin (2-core machines, child processes).
from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ptychopinn.config import InferenceConfig, ModelConfig  # noqa: E402
from ptychopinn.data.scan import ScanData  # noqa: E402
from ptychopinn.inference.predict import reconstruct  # noqa: E402
from ptychopinn.inference.stitch import Stitcher, canvas_geometry  # noqa: E402
from ptychopinn.io.npz import load_npz, save_npz  # noqa: E402
from ptychopinn.models.pinn import PtychoPINN  # noqa: E402

N = 64
WINDOW = 20
BATCH = 64
TARGETS = {"end_to_end_patterns_per_s": 150.0, "stitch_patches_per_s": 20_000.0,
           "peak_memory_mb_20000": 1536.0}


DEFAULT_GENERATOR = f"{ModelConfig().generator}:{ModelConfig().n_filters_scale}"


def _model(gridsize: int, generator: str = DEFAULT_GENERATOR, seed: int = 0) -> PtychoPINN:
    """``generator``: ``NAME`` (default width) or ``NAME:WIDTH``."""
    torch.manual_seed(seed)
    probe = np.ones((N, N), np.complex64)
    name, _, width = generator.partition(":")
    cfg = ModelConfig(N=N, gridsize=gridsize, generator=name,
                      n_filters_scale=int(width) if width else ModelConfig().n_filters_scale)
    return PtychoPINN(cfg, probe=probe, intensity_scale=31.25).eval()


class ZeroNetwork(torch.nn.Module):
    """Stand-in with PtychoPINN's inference interface that returns zero patches (no compute)."""

    def __init__(self, gridsize: int) -> None:
        super().__init__()
        self.config = ModelConfig(N=N, gridsize=gridsize)

    def predict_patches(self, x: torch.Tensor, relative_offsets: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape, dtype=torch.complex64, device=x.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(n: int, reps: int, device: torch.device) -> float:
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def bench_predict(gridsize: int, reps: int, device: torch.device,
                  generator: str = DEFAULT_GENERATOR) -> dict[str, float]:
    from ptychopinn.models.cnn import forward_flops

    model = _model(gridsize, generator).to(device)
    c = gridsize * gridsize
    x = torch.rand(BATCH, c, N, N, device=device)
    rel = (torch.rand(BATCH, c, 2, device=device) - 0.5) * 8  # a few pixels, like real neighbours
    if c == 1:
        rel.zero_()
    with torch.inference_mode():
        model.predict_patches(x, rel)  # warm-up (allocator, oneDNN primitive cache)
        _sync(device)
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(reps):
                model.predict_patches(x, rel)
            _sync(device)
            runs.append((time.perf_counter() - t) / reps)
        dt = statistics.median(runs)
    gflop_group = forward_flops(model.generator, N, c) / 1e9
    return {"batch_groups": BATCH, "groups_per_s": round(BATCH / dt, 2),
            "patterns_per_s": round(BATCH * c / dt, 2),
            "generator_gflop_per_group": round(gflop_group, 3),
            "achieved_gflops": round(gflop_group * BATCH / dt, 1)}


def bench_stitch(n_patches: int, batch: int, device: torch.device) -> tuple[float, float]:
    """Patches per wall second and per CPU second through Stitcher.add (random complex [P, 64, 64]
    patches, window 20)."""
    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(n_patches))) * 3  # a raster-like density: ~3 px between positions
    pos = rng.uniform(40, 40 + side, (n_patches, 2))
    pool = torch.randn(batch, N, N, dtype=torch.complex64, device=device)  # reused: memory stays small
    shape, origin = canvas_geometry(pos, N, WINDOW)
    st = Stitcher(shape, WINDOW, origin=origin, device=device)
    st.add(pool, pos[:batch])  # warm-up
    _sync(device)
    t, c = time.perf_counter(), time.process_time()
    for s in range(0, n_patches, batch):
        b = min(batch, n_patches - s)
        st.add(pool[:b], pos[s:s + b])
    st.result()
    _sync(device)
    return n_patches / (time.perf_counter() - t), n_patches / (time.process_time() - c)


def write_scan(path: Path, m: int, seed: int = 0) -> Path:
    """An uncompressed scan NPZ with M random-amplitude patterns on a raster (step 3 px)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(m)))
    xs, ys = np.meshgrid(np.arange(side), np.arange(side))
    pos = 40.0 + 3.0 * np.stack([xs.ravel(), ys.ravel()], axis=1)[:m] + rng.uniform(-0.5, 0.5, (m, 2))
    diff = np.empty((m, N, N), np.float32)
    for s in range(0, m, 4096):  # chunks keep the float64 temporaries small
        diff[s:s + 4096] = rng.uniform(0, 2, (min(4096, m - s), N, N))
    scan = ScanData(diffraction=diff, positions=pos, probe=np.ones((N, N), np.complex64))
    return save_npz(path, scan)


def load_npz_mmap(path: Path) -> ScanData:
    """Scan whose ``diffraction`` is a read-only memory map of the NPZ's uncompressed pattern member.

    ``np.load`` ignores ``mmap_mode`` for .npz archives, so the member's data offset is found from its
    zip local header and its .npy header, and mapped directly.
    """
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        member = "diffraction.npy" if "diffraction.npy" in names else "diff3d.npy"
        info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        raise RuntimeError(f"{path}: {member} is compressed; cannot memory-map it")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
    diff = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    with np.load(path, allow_pickle=False) as z:
        pos = np.stack([z["xcoords"], z["ycoords"]], axis=1)
        probe = z["probeGuess"]
    return ScanData(diffraction=diff, positions=pos, probe=probe)


def end_to_end(npz: Path, gridsize: int, mode: str, out_dir: Path, device: torch.device,
               network: str = DEFAULT_GENERATOR) -> dict[str, Any]:
    """Load -> reconstruct -> write; returns timings (the model is built before the clock starts).
    ``network``: a generator name, or 'zeros' for the zero-output stand-in."""
    model = ZeroNetwork(gridsize) if network == "zeros" else _model(gridsize, network)
    t0 = time.perf_counter()
    scan = load_npz(npz) if mode == "load_npz" else load_npz_mmap(npz)
    t_load = time.perf_counter()
    rec = reconstruct(model, scan, InferenceConfig(batch_size=BATCH), device=device)
    _sync(device)
    t_rec = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "reconstruction.npz", obj=rec.obj, coverage=rec.coverage,
             origin=np.asarray(rec.origin), positions=rec.positions)
    png = False
    try:
        from ptychopinn.plots import save_amplitude_png
    except ImportError:
        save_amplitude_png = None
    if save_amplitude_png is not None:
        save_amplitude_png(rec.obj, out_dir / "amplitude.png")
        png = True
    t_end = time.perf_counter()
    m = scan.n_points
    return {"n_patterns": m, "gridsize": gridsize, "reader": mode, "network": network, "png": png,
            "diffraction_memmapped": isinstance(scan.diffraction, np.memmap)
            or isinstance(getattr(scan.diffraction, "base", None), np.memmap),
            "load_s": round(t_load - t0, 3), "reconstruct_s": round(t_rec - t_load, 3),
            "write_s": round(t_end - t_rec, 3), "total_s": round(t_end - t0, 3),
            "patterns_per_s": round(m / (t_end - t0), 2), "canvas": list(rec.obj.shape)}


def _peak_mb() -> dict[str, float]:
    """``peak_rss_mb``: VmHWM of this address space (fresh after exec); ``ru_maxrss_mb`` for reference."""
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 / 1024**2 if sys.platform == "darwin" else 1 / 1024
    out = {"ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 1)}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["peak_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        out["peak_rss_mb"] = out["ru_maxrss_mb"]
    return out


def child_main(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if args.child == "baseline":  # imports + model + one batch, no data: the floor under the others
        bench_predict(args.gridsize, 1, device)
        result: dict[str, Any] = {}
    else:
        result = end_to_end(Path(args.npz), args.gridsize, args.child, Path(args.out), device, args.network)
    result.update(_peak_mb())
    print(json.dumps(result))
    return 0


def run_child(mode: str, npz: Path | None, gridsize: int, out: Path, device: str,
              network: str = DEFAULT_GENERATOR) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--gridsize", str(gridsize),
           "--out", str(out), "--device", device, "--network", network]
    if npz is not None:
        cmd += ["--npz", str(npz)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory(sizes: tuple[int, int], gridsize: int, full: bool, tmpdir: Path, device: str) -> dict[str, Any]:
    small, big = sizes
    mem: dict[str, Any] = {"gridsize": gridsize,
                           "baseline_imports_model_one_batch": run_child("baseline", None, gridsize,
                                                                         tmpdir / "b", device)}
    real_big = full or device != "cpu"
    for m in sizes:
        npz = write_scan(tmpdir / f"scan_{m}.npz", m, seed=m)
        cases: dict[str, Any] = {}
        for reader in ("load_npz", "mmap"):
            if m == small or real_big:
                cases[reader] = run_child(reader, npz, gridsize, tmpdir / f"m{m}{reader}", device)
            if m == small or not real_big:  # the stand-in at both sizes: the network increment cancels
                cases[f"{reader}_zero_network"] = run_child(reader, npz, gridsize, tmpdir / f"z{m}{reader}",
                                                            device, "zeros")
        mem[str(m)] = cases
        npz.unlink()
    if not real_big:
        for reader in ("load_npz", "mmap"):
            net = mem[str(small)][reader].get("peak_rss_mb", float("nan")) - \
                mem[str(small)][f"{reader}_zero_network"].get("peak_rss_mb", float("nan"))
            zero_big = mem[str(big)][f"{reader}_zero_network"].get("peak_rss_mb", float("nan"))
            mem[str(big)][f"{reader}_estimated_peak_mb"] = round(zero_big + max(net, 0.0), 1)
    return mem


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--full-memory", action="store_true",
                    help="run the largest memory cases with the real network (slow on a CPU)")
    ap.add_argument("--generators", default=f"{DEFAULT_GENERATOR},unet:2,cnn:2",
                    help="comma-separated NAME or NAME:WIDTH to compare (prediction and end to end; default: the "
                         "default model, the previous default unet:2 and the reference cnn:2)")
    ap.add_argument("--network", default=DEFAULT_GENERATOR, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--npz", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--gridsize", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child is not None:
        return child_main(args)

    device = torch.device(args.device)
    quick = args.quick
    mem_sizes = (200, 2000) if quick else (2000, 20000)
    e2e_size = 128 if quick else 512
    res: dict[str, Any] = {"quick": quick, "device": str(device), "N": N,
                           "n_filters_scale": ModelConfig().n_filters_scale,
                           "batch_groups": BATCH, "window": WINDOW}
    res["machine"] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                      "torch": torch.__version__, "loadavg_start": [round(v, 2) for v in os.getloadavg()],
                      "fp32_matmul_gflops": round(matmul_gflops(1024 if quick else 2048, 5, device), 1)}
    generators = [g for g in args.generators.split(",") if g]
    res["generators"] = generators
    res["predict"] = {gen: {f"gridsize_{g}": bench_predict(g, 1 if quick else 3, device, gen) for g in (1, 2)}
                      for gen in generators}
    n_stitch = 4096 if quick else 20000
    res["stitch"] = {"n_patches": n_stitch}
    for b in (64, 256, 1024):
        wall, cpu = bench_stitch(n_stitch, b, device)
        res["stitch"][f"batch_{b}"] = {"patches_per_s": round(wall, 1), "patches_per_cpu_s": round(cpu, 1)}

    with tempfile.TemporaryDirectory(prefix="ptychopinn-bench-") as tmp:
        tmpdir = Path(tmp)
        e2e_npz = write_scan(tmpdir / f"scan_{e2e_size}.npz", e2e_size)
        res["end_to_end"] = {gen: {f"gridsize_{g}": run_child("load_npz", e2e_npz, g, tmpdir / f"e{gen}{g}",
                                                              args.device, gen) for g in (1, 2)}
                             for gen in generators}
        res["memory"] = _memory(mem_sizes, 2, args.full_memory, tmpdir, args.device)
    res["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]

    big = res["memory"][str(mem_sizes[1])]
    peaks = {k: v["peak_rss_mb"] if isinstance(v, dict) else v for k, v in big.items()
             if not k.endswith("_zero_network") and (not isinstance(v, dict) or "peak_rss_mb" in v)}
    stitch_rate = res["stitch"][f"batch_{BATCH}"]["patches_per_s"]
    res["targets"] = {
        "end_to_end_patterns_per_s": {"target": TARGETS["end_to_end_patterns_per_s"],
                                      **{f"{gen}_{k}": v.get("patterns_per_s")
                                         for gen, per in res["end_to_end"].items() for k, v in per.items()}},
        "stitch_patches_per_s": {"target": TARGETS["stitch_patches_per_s"], "batch_64": stitch_rate,
                                 "met": stitch_rate >= TARGETS["stitch_patches_per_s"]},
        f"peak_memory_mb_{mem_sizes[1]}": {
            "target": TARGETS["peak_memory_mb_20000"], **peaks,
            "met": bool(peaks) and max(peaks.values()) < TARGETS["peak_memory_mb_20000"]},
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
