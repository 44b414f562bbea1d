"""``ptychopinn refine SCAN.npz (--init RECON.npz | --flat) --output-dir DIR``: iterate on the physics.

Refines the object of a scan (optionally its probe and scan positions) by minimising the data misfit
(engine ``cg``: rPIE warm-up, then whole-scan conjugate gradients with exact step lengths; engine
``rpie``: illumination-preconditioned mini-batch updates, also of probe and positions), starting from a
reconstruction (e.g. ``ptychopinn infer`` output: the fast path to iterative-solver quality) or from a
flat object. The start is scaled from the data alone. Writes ``DIR/reconstruction.npz`` (object,
coverage, positions, refined ``probe`` and the ``misfit`` history), ``amplitude.png``, ``phase.png``,
``misfit.png``, ``probe.png`` when the probe was estimated or refined and, with ``--product``, a ptychodus
product ``reconstruction.h5``.
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
    show_progress,
    summary,
)


def add_refine_options(p: argparse.ArgumentParser, *, iterations_flag: str = "--iterations") -> None:
    """The refinement flags shared by ``refine`` and ``infer --refine``."""
    from ptychopinn.config import NOISE_MODELS, REFINE_ENGINES, RefineConfig

    defaults = RefineConfig()
    if iterations_flag == "--iterations":
        p.add_argument("--iterations", type=positive_int, default=defaults.iterations,
                       help="the most passes over all patterns (default %(default)s)")
    p.add_argument("--tolerance", type=number, default=defaults.tolerance,
                   help="stop earlier once the misfit changes by less than this fraction in each of 5 passes in "
                        "a row (default %(default)s; 0 runs all --iterations)")
    p.add_argument("--time-limit", type=number, help="stop after this many seconds of iterations")
    p.add_argument("--engine", choices=REFINE_ENGINES, default=defaults.engine,
                   help="cg: rPIE warm-up then whole-scan conjugate gradients (object only); rpie: mini-batch "
                        "updates (also probe, positions); auto: cg unless the probe or positions are refined "
                        "(default %(default)s)")
    p.add_argument("--noise", choices=("auto", *NOISE_MODELS), default=defaults.noise,
                   help="misfit: amplitude least squares (gaussian) or Poisson likelihood of the counts; auto: "
                        "gaussian for cg, poisson for rpie (default %(default)s)")
    p.add_argument("--alpha", type=number, default=defaults.alpha,
                   help="regularisation of the illumination preconditioner, in (0, 1] (default: the engine's, "
                        "0.01 for cg and 0.1 for rpie; for rpie, 0.3 gives a less noisy amplitude at a few counts "
                        "per pixel, see README)")
    p.add_argument("--refine-probe", action=argparse.BooleanOptionalAction, default=None,
                   help="refine the probe too (energy held fixed); default: when it is estimated (--probe estimate) "
                        "or when a short trial shows that the given probe does not explain the data (one log line "
                        "says which)")
    p.add_argument("--probe-modes", type=positive_int, metavar="K",
                   help="incoherent probe modes of a partially coherent beam (default: as many as the file "
                        "carries, 1 for most files); modes the file lacks are added and refined")
    p.add_argument("--refine-positions", action="store_true",
                   help="also correct scan positions: every 4 passes a search of whole-pixel offsets by data "
                        "misfit against the object of the other patterns (radius halved each round, back to the "
                        "full radius every 4 rounds), sub-pixel steps every pass; the given positions keep the "
                        "scan's global scale, rotation and shear. A round costs about 400 FFTs per pattern at "
                        "the default radius (a log line per round)")
    p.add_argument("--position-search-radius", type=nonneg_int, metavar="R",
                   help="radius in pixels of the first position search (default N/2; 0: sub-pixel steps only)")
    p.add_argument("--refine-batch-size", type=positive_int, default=defaults.batch_size,
                   help="patterns per refinement update (default %(default)s)")
    p.add_argument("--prior-weight", type=number, default=defaults.prior_weight, metavar="W",
                   help="pull the object toward the start image (the network's) with weight W relative to the "
                        "data at a typically lit pixel, its global phase fitted each pass; 0 = off (default "
                        "%(default)s; README 'Refinement' has the measurements)")


def refine_config(args: argparse.Namespace, iterations: int) -> object:
    """The :class:`~ptychopinn.config.RefineConfig` of the parsed flags."""
    from ptychopinn.config import RefineConfig

    accel = getattr(args, "accelerator", "cpu")
    return RefineConfig(iterations=iterations, time_limit=args.time_limit, tolerance=args.tolerance,
                        engine=args.engine, noise=args.noise, alpha=args.alpha,
                        refine_probe="auto" if args.refine_probe is None else args.refine_probe,
                        refine_positions=args.refine_positions, probe_modes=args.probe_modes,
                        position_search_radius=args.position_search_radius,
                        batch_size=args.refine_batch_size, accelerator=accel, prior_weight=args.prior_weight)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ptychopinn.config import ACCELERATORS, UNITS

    p = sub.add_parser("refine", help="refine a reconstruction (or a flat start) on the physics",
                       description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scan", metavar="SCAN.npz", help="the scan (NPZ, HDF5 or CXI; see README 'Data')")
    p.add_argument("--probe", metavar="FILE|estimate",
                   help="probe: a file holding one (NPZ/HDF5 scan, reconstruction NPZ, ptychodus product, CXI) or "
                        "'estimate' (from the mean diffraction pattern); default: the scan's own")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--init", metavar="RECON.npz", help="reconstruction to start from (ptychopinn infer output)")
    start.add_argument("--flat", action="store_true", help="start from a flat object")
    p.add_argument("--output-dir", required=True, help="directory for the refined reconstruction and images")
    add_refine_options(p)
    p.add_argument("--accelerator", choices=ACCELERATORS, default="cpu", help="hardware (default %(default)s)")
    p.add_argument("--units", choices=UNITS, default="auto",
                   help="units of the patterns in SCAN (default %(default)s: detected and logged to run.log)")
    p.add_argument("--product", action="store_true", help="also write a ptychodus product reconstruction.h5")
    add_frame_options(p)
    add_common_options(p)
    p.set_defaults(func=command(run, plan))


def plan(args: argparse.Namespace) -> tuple[tuple[str, ...], list[str | None]]:
    """The outputs of this invocation and the files it reads (compared before anything is written)."""
    from ptychopinn.workflows import refine_outputs

    return refine_outputs(write_product=args.product), [args.scan, args.probe, args.init]


def run(args: argparse.Namespace) -> int:
    import logging

    from ptychopinn.io.registry import load_scan
    from ptychopinn.workflows import refine_reconstruction

    cfg = refine_config(args, args.iterations)
    scan = load_scan(args.scan, units=args.units, probe=args.probe, **frame_options(args))
    logging.getLogger("ptychopinn").info("probe: %s", scan.metadata["probe_source"])
    out = refine_reconstruction(scan, output_dir=args.output_dir, start=args.init, refine=cfg,
                                units=args.units, write_product=args.product, progress=show_progress(args))
    res = out.result
    summary(f"refined {res.positions.shape[0]} patterns for {out.iterations} iterations in {res.seconds:.1f} s "
            f"({res.engine}, {res.noise} misfit {res.history[0]['misfit']:.3g} -> {res.history[-1]['misfit']:.3g}; "
            f"stopped: {res.stop_reason}); wrote {out.npz}, "
            f"{out.amplitude_png}, {out.phase_png}, {out.misfit_png}"
            f"{'' if out.probe_png is None else ', ' + str(out.probe_png)} (+ complex.png and amplitude/phase .tif)")
    return 0
