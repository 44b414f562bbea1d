"""``ptychopinn infer MODEL SCAN.npz --output-dir DIR``: reconstruct a scan with a trained model.

MODEL is a model archive (``wts.h5.zip``) or a training output directory holding one. Writes
DIR/reconstruction.npz (complex object 'obj', 'coverage', 'positions', 'origin_xy' and the pixel
convention: obj[row, col] is object pixel (y, x) = (origin_y + row, origin_x + col)), DIR/amplitude.png,
DIR/phase.png and, with --product, a ptychodus product DIR/reconstruction.h5. The network's image is then
refined on the physics (at most --refine K iterations, fewer once the misfit stops improving by more than
--tolerance; see 'ptychopinn refine') and the refined image takes its place; the network's own is kept as
DIR/network_reconstruction.npz, the same image --refine 0 writes (same canvas, same --stitch-sync). With
--stitch-sync auto the refinement starts from the same windows without phase synchronisation, which ends
better than the synchronised image (README "Refinement"). --refine 0 keeps the network's image alone.
With --adapt-epochs K the network is first fine-tuned on SCAN itself (physics loss, no ground truth) for K
epochs; the adapted network predicts and the archive is left as it was (README "Adapt to a new scan").
DIR/probe.png shows the probe when it was estimated (--probe estimate) or refined.
"""

from __future__ import annotations

import argparse

from ptychopinn.cli.common import (
    add_common_options,
    add_frame_options,
    command,
    frame_options,
    help_text,
    nonneg_int,
    number,
    positive_int,
    positive_number,
    show_progress,
    summary,
)
from ptychopinn.cli.refine import add_refine_options, refine_config
from ptychopinn.config import ACCELERATORS, PRECISIONS, STITCH_SYNC, UNITS, InferenceConfig, RefineConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("infer", help="reconstruct a scan with a trained model",
                       description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="wts.h5.zip archive or training output directory")
    p.add_argument("scan", metavar="SCAN.npz", help="scan to reconstruct (NPZ, HDF5 or CXI; see README 'Data')")
    p.add_argument("--probe", metavar="FILE|estimate",
                   help="probe: a file holding one (NPZ/HDF5 scan, reconstruction NPZ, ptychodus product, CXI) or "
                        "'estimate' (from the mean diffraction pattern); default: the scan's own")
    p.add_argument("--output-dir", required=True, help="directory for the reconstruction and images")
    p.add_argument("--batch-size", type=positive_int, default=64, help="patterns per batch (default 64)")
    p.add_argument("--stitch-window", type=positive_int,
                   help="side of the central region of each patch that is stitched (default N*5/16)")
    p.add_argument("--stitch-taper", type=number, default=InferenceConfig().stitch_taper,
                   help="weight window centres up to 1+T times their edges (softens seams; 0 = plain average) "
                        f"(default {InferenceConfig().stitch_taper:g})")
    p.add_argument("--stitch-sync", choices=STITCH_SYNC, default=InferenceConfig().stitch_sync,
                   help="solve per-patch phase offsets (and amplitude gains) so overlapping patches agree before "
                        "averaging (default %(default)s; see README)")
    p.add_argument("--precision", choices=PRECISIONS, default="32",
                   help="numeric precision of the network (default %(default)s)")
    p.add_argument("--accelerator", choices=ACCELERATORS, default="auto", help="hardware (default %(default)s)")
    p.add_argument("--units", choices=UNITS, default="auto",
                   help="units of the patterns in SCAN (default %(default)s: detected and logged to run.log)")
    p.add_argument("--product", action="store_true", help="also write a ptychodus product reconstruction.h5")
    p.add_argument("--refine", type=nonneg_int, default=RefineConfig().iterations, metavar="K",
                   help="then refine the network's image with at most K iterations on the physics (the "
                        "--tolerance rule may stop it sooner); 0 keeps the network's image alone (default %(default)s)")
    p.add_argument("--adapt-epochs", type=nonneg_int, default=0, metavar="K",
                   help="first fine-tune the network on SCAN itself with the physics (Poisson) loss for K epochs, "
                        "no ground truth needed; the time counts in the reconstruction's; the archive is not "
                        "changed (default %(default)s: predict with the network as trained)")
    p.add_argument("--adapt-learning-rate", type=positive_number, metavar="LR",
                   help="Adam learning rate of --adapt-epochs (default: 3e-4, a third of training's)")
    add_refine_options(p, iterations_flag="--refine")
    add_frame_options(p)
    add_common_options(p)
    p.set_defaults(func=command(run, plan))


_SCAN_MEMBERS = ("diff3d.npy", "diffraction.npy", "xcoords.npy", "probeGuess.npy")


def check_model_argument(model: str) -> None:
    """Refuse a scan given where the model goes, with a message that says so (the archive reader would
    otherwise complain about the scan's members as if it were a damaged archive)."""
    import zipfile
    from pathlib import Path

    from ptychopinn.errors import ArchiveError

    path = Path(model)
    if not path.is_file():
        return
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return
    found = sorted(names & set(_SCAN_MEMBERS))
    if found or (path.suffix == ".npz" and "manifest.json" not in names):
        what = f"a scan NPZ (it holds {', '.join(n[:-4] for n in found)})" if found else "an NPZ file"
        raise ArchiveError(f"MODEL: expected a model archive (wts.h5.zip) or a training output directory as the "
                           f"first argument, but {path} is {what}; usage: ptychopinn infer MODEL SCAN.npz")


def plan(args: argparse.Namespace) -> tuple[tuple[str, ...], list[str | None]]:
    """The outputs of this invocation and the files it reads (compared before anything is written)."""
    from ptychopinn.workflows import reconstruct_outputs

    return (reconstruct_outputs(write_product=args.product, refine=args.refine > 0),
            [args.model, args.scan, args.probe])


def run(args: argparse.Namespace) -> int:
    import logging

    from ptychopinn.io.registry import load_scan
    from ptychopinn.workflows import reconstruct_scan

    cfg = InferenceConfig(batch_size=args.batch_size, stitch_window=args.stitch_window, stitch_taper=args.stitch_taper,
                          stitch_sync=args.stitch_sync,
                          precision=args.precision, accelerator=args.accelerator)
    check_model_argument(args.model)
    if args.adapt_learning_rate is not None and args.adapt_epochs == 0:
        from ptychopinn.errors import ConfigError

        raise ConfigError("--adapt-learning-rate only applies to --adapt-epochs K > 0; add --adapt-epochs or drop it")
    refine = refine_config(args, args.refine) if args.refine > 0 else None
    scan = load_scan(args.scan, units=args.units, probe=args.probe, **frame_options(args))
    logging.getLogger("ptychopinn").info("probe: %s", scan.metadata["probe_source"])
    out = reconstruct_scan(args.model, scan, output_dir=args.output_dir, inference=cfg, units=args.units,
                           write_product=args.product, progress=show_progress(args), refine=refine,
                           adapt_epochs=args.adapt_epochs, adapt_learning_rate=args.adapt_learning_rate)
    extra = f", {out.product_h5}" if out.product_h5 else ""
    extra += f", {out.probe_png}" if out.probe_png else ""
    if out.adapted is not None:
        extra += (f"; adapted the network on the scan for {out.adapted.epochs} epochs in {out.adapted.seconds:.1f} s "
                  f"(Poisson loss {out.adapted.loss_before:.4g} -> {out.adapted.loss_after:.4g})")
    if out.refined is not None:
        extra += (f"; refined {out.refined.iterations} iterations in {out.refined.seconds:.1f} s (network image kept "
                  f"as network_reconstruction.npz)")
    summary(f"reconstructed {out.n_patterns} patterns into a {out.shape[0]}x{out.shape[1]} object in "
            f"{out.seconds:.1f} s; wrote {out.npz}, {out.amplitude_png}, {out.phase_png} (+ complex.png and "
            f"amplitude/phase .tif){extra}")
    return 0
