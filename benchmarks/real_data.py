"""Real data, end to end, as a user would run it: the Siemens star of tike's test suite reconstructed from the raw
file with the default command line. Opt-in: ``make bench-real`` (or ``.venv/bin/python benchmarks/real_data.py``).

The data: ``tests/data/siemens-star-small.npz.bz2`` of the tike 0.26.0 source distribution (516 patterns of
128 x 128 photon counts from a zone-plate probe at a synchrotron, tike's layout; read by
:mod:`ptychopinn.io.tike`). The tarball is fetched once with ``pip download tike==0.26.0 --no-deps --no-binary
:all:`` into the cache folder (``--cache``, default ``$XDG_CACHE_HOME/ptychopinn`` or ``~/.cache/ptychopinn``)
unless ``--star FILE`` or ``--tarball FILE`` names a local copy; only that one member is unpacked (a regular
file, by its exact name). Tests never download anything.

Runs (each a ``ptychopinn refine`` command line in a child process, timed from the outside):

* ``fixed_probe``: ``ptychopinn refine STAR --flat --no-refine-probe --output-dir OUT/fixed_probe`` (the file's
  probe kept, the default before refinement decided it from the data);
* ``default``: ``ptychopinn refine STAR --flat --output-dir OUT/default`` (the probe refined when a trial shows
  the file's does not explain the data);
* ``estimated_probe``: the default with ``--probe estimate`` (no probe model: the probe estimated from the
  data, its defocus chosen by trials, then refined);
* ``two_modes``: the default with ``--probe-modes 2`` (a partially coherent beam: two incoherent modes);
* ``half_a`` / ``half_b``: the best of these commands (lowest amplitude misfit) on the even and the odd patterns
  (two independent half-scans of the same field, written as NPZ scans), for the resolution figure: the Fourier
  ring correlation (:mod:`ptychopinn.frc`) of the two half-scan images, registered onto each other
  (:func:`ptychopinn.metrics.align_for_comparison`) over their common covered box, on phase and on amplitude,
  with the half-bit and 0.5 resolutions in object pixels.

Prints one JSON object (also written to ``OUT/real_data.json``): per run the command, wall seconds (process start
to exit: reading, refinement, pictures), the refinement's own seconds, iterations, engine, stop reason, the misfit
its engine minimised, first and last (per total counts; Gaussian for cg, Poisson for rpie, so not comparable
between engines), and ``amplitude_misfit``, one definition for every run (:func:`amplitude_misfit`); the FRC
resolutions. With ``--images DIR`` (the README uses ``docs/images``) it saves small pictures: ``real_star.png``
(the phase of each full-scan run) and ``real_star_probe.png`` (the refined probe of the best).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TIKE = "tike==0.26.0"
MEMBER = "tike-0.26.0/tests/data/siemens-star-small.npz.bz2"
SDIST = "tike-0.26.0.tar.gz"


def cache_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ptychopinn"


def star_file(args: argparse.Namespace) -> Path:
    """The star's ``.npz.bz2``: ``--star``, else unpacked from ``--tarball`` or the cached (downloaded) sdist."""
    if args.star:
        return Path(args.star)
    cache = cache_dir(args.cache)
    star = cache / Path(MEMBER).name
    if star.is_file():
        return star
    tarball = Path(args.tarball) if args.tarball else cache / SDIST
    cache.mkdir(parents=True, exist_ok=True)
    if not tarball.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", TIKE, "--no-deps", "--no-binary", ":all:",
                        "--dest", str(cache)], check=True)
    with tarfile.open(tarball) as tf:
        info = tf.getmember(MEMBER)
        if not info.isfile():
            raise SystemExit(f"{tarball}: {MEMBER} is not a regular file")
        src = tf.extractfile(info)
        assert src is not None
        tmp = star.with_suffix(".part")
        with src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
        tmp.replace(star)
    return star


def run_refine(scan: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """``ptychopinn refine SCAN --flat --output-dir OUT EXTRA`` in a child process; what it reports."""
    argv = ["refine", str(scan), "--flat", "--output-dir", str(out), *extra]
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ptychopinn.cli", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ptychopinn {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        meta = json.loads(str(z["_metadata"]))
        misfit = z["misfit"]
    return {"command": "ptychopinn " + " ".join(argv), "wall_seconds": round(wall, 1),
            "refine_seconds": round(float(meta["refine_seconds"]), 1), "iterations": int(meta["iterations"]),
            "engine": meta["refine_engine"], "noise": meta["refine_noise"], "stopped": meta["refine_stop_reason"],
            "misfit_first": float(misfit[0]), "misfit_last": float(misfit[-1]), "summary": proc.stdout.strip()}


def amplitude_misfit(scan: Any, recon: Path) -> float:
    """``sum (|F(P_k O_k)| - A_k)**2 / sum A_k**2`` of a reconstruction (its object, probe and positions) against
    the scan's amplitudes: one definition for every run, whatever misfit its engine minimised. The model is the
    refinement's (integer object window, probe moved by the sub-pixel remainder; ``ptychopinn.refine.base``)."""
    import torch

    from ptychopinn.physics.fft import far_field_amplitude
    from ptychopinn.physics.shift import shifted_copies, split_positions, window_index

    with np.load(recon, allow_pickle=False) as z:
        obj = torch.from_numpy(z["obj"].astype(np.complex64))
        probes = z["probe_modes"] if "probe_modes" in z.files else z["probe"][None]
        modes = [torch.from_numpy(p.astype(np.complex64)) for p in probes]
        positions = z["positions"].astype(np.float64) - z["origin_xy"].astype(np.float64)
    n, width = scan.N, obj.shape[1]
    num = den = 0.0
    for lo in range(0, scan.n_points, 64):
        corner, frac = split_positions(positions[lo:lo + 64], n)
        window = obj.reshape(-1)[window_index(torch.from_numpy(corner), n, width)]
        # incoherent modes: the detector sees the sum of their intensities
        counts = sum(far_field_amplitude(shifted_copies(p, torch.from_numpy(frac)) * window).square() for p in modes)
        meas = torch.from_numpy(np.asarray(scan.diffraction[lo:lo + 64], np.float32))
        num += float((counts.sqrt() - meas).square().sum())
        den += float(meas.square().sum())
    return num / den


def write_halves(star: Path, out: Path) -> tuple[Path, Path]:
    """The even and the odd patterns of the star as two NPZ scans (same probe, same object pixel grid)."""
    from ptychopinn.io.npz import save_npz
    from ptychopinn.io.registry import load_scan

    scan = load_scan(star)
    out.mkdir(parents=True, exist_ok=True)
    idx = np.arange(scan.n_points)
    return (save_npz(out / "half_a.npz", scan.subset(idx[0::2])),
            save_npz(out / "half_b.npz", scan.subset(idx[1::2])))


def half_scan_frc(a_path: Path, b_path: Path) -> dict[str, Any]:
    """FRC of two reconstructions of the same field (placed on one grid by their origins, then registered)."""
    from ptychopinn.frc import frc, frc_resolution, ring_pixel_counts
    from ptychopinn.io.reconstruction import load_reconstruction
    from ptychopinn.metrics import align_for_comparison

    (a, cov_a, org_a), (b, cov_b, org_b) = load_reconstruction(a_path), load_reconstruction(b_path)
    x0, y0 = int(min(org_a[0], org_b[0])), int(min(org_a[1], org_b[1]))
    x1 = int(max(org_a[0] + a.shape[1], org_b[0] + b.shape[1]))
    y1 = int(max(org_a[1] + a.shape[0], org_b[1] + b.shape[0]))

    def place(obj: np.ndarray, cov: np.ndarray, org: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        full, mask = np.zeros((y1 - y0, x1 - x0), np.complex64), np.zeros((y1 - y0, x1 - x0), bool)
        r, c = int(org[1]) - y0, int(org[0]) - x0
        full[r:r + obj.shape[0], c:c + obj.shape[1]] = obj
        mask[r:r + obj.shape[0], c:c + obj.shape[1]] = cov > 0
        return full, mask

    fa, ma = place(a, cov_a, org_a)
    fb, mb = place(b, cov_b, org_b)
    both = ma & mb
    rows, cols = np.flatnonzero(both.any(axis=1)), np.flatnonzero(both.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    rb, ra, info = align_for_comparison(fb[box], fa[box], both[box], channel="complex", border=8)
    out: dict[str, Any] = {"shift_px": [round(v, 2) for v in info.shift_px], "side_px": int(min(ra.shape))}
    for name, fn in (("phase", np.angle), ("amplitude", np.abs)):
        freq, curve = frc(fn(ra), fn(rb))
        counts = ring_pixel_counts(min(ra.shape))
        out[name] = {"half_bit_px": round(frc_resolution(freq, curve, counts, "half-bit"), 2),
                     "threshold_0.5_px": round(frc_resolution(freq, curve, counts, "0.5"), 2)}
    return out


def _shrink(path: Path, colours: int = 96) -> str:
    """Rewrite a PNG with an adaptive palette of ``colours`` (a README picture need not be 24-bit)."""
    from PIL import Image

    tmp = path.with_name(path.name + ".tmp.png")
    with Image.open(path) as img:
        img.convert("RGB").quantize(colours, dither=Image.Dither.NONE).save(tmp, optimize=True)
    tmp.replace(path)
    return str(path)


def save_pictures(runs: dict[str, Path], images: Path, best: str) -> list[str]:
    """``real_star.png``: the phase of every full-scan run, in one row; ``real_star_probe.png``: the probe of the
    ``best`` run (when it was refined). Small: for the README (the amplitudes are in each run's folder)."""
    from ptychopinn.drawing import covered_mask, new_figure, phase_panel, save_figure
    from ptychopinn.io.reconstruction import load_reconstruction

    images.mkdir(parents=True, exist_ok=True)
    fig = new_figure((4.2 * len(runs), 3.6))
    axes = fig.subplots(1, len(runs))
    for ax, (name, out) in zip(axes, runs.items(), strict=True):
        obj, cov, _ = load_reconstruction(out / "reconstruction.npz")
        phase_panel(fig, ax, obj, f"{name}: phase", covered=covered_mask(cov, obj.shape))
    written = [_shrink(save_figure(fig, images / "real_star.png", 64))]
    if (runs[best] / "probe.png").exists():
        from ptychopinn.pictures import save_probe_png

        with np.load(runs[best] / "reconstruction.npz", allow_pickle=False) as z:
            written.append(_shrink(save_probe_png(z["probe"], images / "real_star_probe.png",
                                                  title=f"{best}: refined probe", dpi=50)))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--star", help="the siemens-star-small.npz.bz2 file (default: from the tike sdist)")
    ap.add_argument("--tarball", help=f"a local {SDIST} (default: the cached download)")
    ap.add_argument("--cache", help="download cache folder (default ~/.cache/ptychopinn)")
    ap.add_argument("--output-dir", default="real_data_output", help="work folder (default %(default)s)")
    ap.add_argument("--images", help="save the small pictures here (e.g. docs/images)")
    ap.add_argument("--no-frc", action="store_true", help="skip the two half-scan reconstructions")
    args = ap.parse_args(argv)
    star = star_file(args)
    out = Path(args.output_dir)
    result: dict[str, Any] = {"data": str(star), "machine": f"{platform.processor() or platform.machine()}, "
                                                           f"{os.cpu_count()} CPUs", "runs": {}}
    from ptychopinn.io.registry import load_scan

    scan = load_scan(star)
    variants = {"fixed_probe": ["--no-refine-probe"], "default": [], "estimated_probe": ["--probe", "estimate"],
                "two_modes": ["--probe-modes", "2"]}
    for name, extra in variants.items():
        result["runs"][name] = run_refine(star, out / name, extra)
        result["runs"][name]["amplitude_misfit"] = amplitude_misfit(scan, out / name / "reconstruction.npz")
        print(json.dumps({name: result["runs"][name]}), flush=True)
    best = min(variants, key=lambda n: result["runs"][n]["amplitude_misfit"])
    result["best"] = best
    if not args.no_frc:
        a, b = write_halves(star, out / "halves")
        for half, path in (("half_a", a), ("half_b", b)):
            result["runs"][half] = run_refine(path, out / half, variants[best])
        result["frc"] = half_scan_frc(out / "half_a" / "reconstruction.npz", out / "half_b" / "reconstruction.npz")
    if args.images:
        result["images"] = save_pictures({n: out / n for n in variants}, Path(args.images), best)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_data.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
