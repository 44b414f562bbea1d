"""``ptychopinn simulate``: write a simulated training scan, a test scan and a preview figure.

Outputs in ``--output-dir``: ``train.npz`` and ``test.npz`` (the NPZ contract, amplitude
``sqrt(counts)`` under ``diff3d``, ground truth ``objectGuess`` and ``Y``) and ``preview.png``. The
test scan images a *different* object (the next bundled image for ``--object image``, another seed
for ``lines``/``grf``) with the *same* probe and scan settings, so a model trained on one can be
evaluated honestly on the other.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ptychopinn.cli.common import add_common_options, command, number, show_progress, summary
from ptychopinn.io.outputs import LOCK_NAME


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` sub-command (cheap: imports nothing heavy; defaults and choices come from
    :class:`~ptychopinn.config.SimulationConfig`)."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate train/test scans (NPZ) with Poisson noise",
        description="Simulate a ptychographic training scan and a test scan of a different object, through "
                    "the same forward model training uses, and write train.npz, test.npz and preview.png.",
    )
    from ptychopinn.config import OBJECT_KINDS, PROBE_KINDS, SCAN_PATTERNS, SimulationConfig

    d = SimulationConfig()  # every default below is the config's (one place)
    p.add_argument("--output-dir", required=True, type=Path, metavar="DIR",
                   help="folder for train.npz, test.npz and preview.png (created if missing)")
    p.add_argument("--N", type=int, default=d.N, dest="N",
                   help="diffraction pattern / probe size in pixels, even (default: %(default)s)")
    p.add_argument("--object-size", type=int, default=d.object_size, metavar="PX",
                   help="side of the square object in pixels, > N (default: %(default)s)")
    p.add_argument("--object", choices=OBJECT_KINDS, default=d.object_kind, dest="object_kind",
                   help="object kind: random lines, Gaussian random field, or a bundled natural image "
                        "(default: %(default)s)")
    p.add_argument("--image", default=d.image_name, metavar="NAME",
                   help="training object for --object image: a scikit-image sample bundled with the package "
                        "(camera, astronaut, coins, moon, coffee, chelsea, rocket, ...; default: %(default)s)")
    p.add_argument("--test-image", default=None, metavar="NAME",
                   help="test object for --object image (default: the image after --image in the list)")
    p.add_argument("--test-seed", type=int, default=None, metavar="INT",
                   help="seed of the test scan: its object (lines/grf), jitter and noise "
                        "(default: --seed + 1)")
    p.add_argument("--probe", choices=PROBE_KINDS, default=d.probe_kind, dest="probe_kind",
                   help="probe: focused beam (aperture with defocus, Airy rings) or Gaussian "
                        "(default: %(default)s)")
    p.add_argument("--probe-diameter", type=number, default=d.probe_diameter, metavar="PX",
                   help="central spot diameter in pixels: first Airy zero (focused) or FWHM (gaussian) "
                        "(default: N/4)")
    p.add_argument("--scan", choices=SCAN_PATTERNS, default=d.scan,
                   help="scan pattern: jittered raster grid or Fermat spiral (default: %(default)s)")
    p.add_argument("--overlap", type=number, default=d.overlap,
                   help="linear overlap of neighbouring probe footprints in [0, 0.95); "
                        "step = (1 - overlap) * 90%%-energy probe diameter (default: %(default)s)")
    p.add_argument("--jitter", type=number, default=d.jitter, metavar="PX",
                   help="raster position jitter, uniform in [-jitter, jitter] pixels (default: %(default)s)")
    p.add_argument("--n-points", type=int, default=d.n_points, metavar="INT",
                   help="scan points per scan: a random subset (raster) or the innermost points (spiral) "
                        "(default: all that fit)")
    p.add_argument("--nphotons", type=number, default=d.nphotons,
                   help="expected mean total photon count per pattern (default: %(default)g)")
    p.add_argument("--no-poisson", action="store_false", dest="poisson",
                   help="store the noiseless expected amplitudes instead of Poisson-sampled counts")
    p.add_argument("--oversample", type=int, default=d.oversample, metavar="S",
                   help="form exit waves on an S times finer grid and keep the central N x N of the far field, "
                        "so the data do not follow the reconstruction's pixel model (default: %(default)s; "
                        "benchmarks use 2)")
    p.add_argument("--seed", type=int, default=d.seed, metavar="INT",
                   help="seed of the training scan: object (lines/grf), jitter and noise (default: %(default)s)")
    add_common_options(p)
    p.set_defaults(func=command(run, plan))


SIMULATE_OUTPUTS = (LOCK_NAME, "train.npz", "test.npz", "preview.png")
"""What ``simulate`` writes (the lock file while it runs)."""


def plan(args: argparse.Namespace) -> tuple[tuple[str, ...], list[str]]:
    """The outputs of this invocation (it reads no file)."""
    return SIMULATE_OUTPUTS, []


def run(args: argparse.Namespace) -> int:
    """Simulate and write the files; returns 0. Bad settings raise ConfigError (exit code 2 via main)."""
    from ptychopinn.config import SimulationConfig
    from ptychopinn.errors import ConfigError
    from ptychopinn.io.npz import save_npz
    from ptychopinn.io.outputs import output_run
    from ptychopinn.plots import save_scan_preview
    from ptychopinn.simulate import next_image, simulate_scan

    train_cfg = SimulationConfig(
        N=args.N, object_size=args.object_size, object_kind=args.object_kind, image_name=args.image,
        probe_kind=args.probe_kind, probe_diameter=args.probe_diameter, scan=args.scan, overlap=args.overlap,
        jitter=args.jitter, n_points=args.n_points, nphotons=args.nphotons, poisson=args.poisson,
        seed=args.seed, oversample=args.oversample,
    )
    test_seed = args.seed + 1 if args.test_seed is None else args.test_seed
    test_image = args.image
    if args.object_kind == "image":
        test_image = next_image(args.image) if args.test_image is None else args.test_image
        if test_image == args.image:
            raise ConfigError(f"--test-image: expected an image different from --image, got "
                              f"{test_image!r} for both; pick another name or leave --test-image unset")
    elif test_seed == args.seed:
        raise ConfigError(f"--test-seed: expected a seed different from --seed for --object "
                          f"{args.object_kind} (the test object must differ), got {test_seed} for both; "
                          "change one")
    test_cfg = train_cfg.replace(image_name=test_image, seed=test_seed)

    out = Path(args.output_dir)
    progress = show_progress(args)
    train = simulate_scan(train_cfg, progress=progress)
    test = simulate_scan(test_cfg, progress=progress)
    if train.obj is None:  # pragma: no cover - simulate_scan always stores the ground truth
        raise RuntimeError("simulated scan lost its ground-truth object")
    title = (f"simulated training scan: {args.object_kind}, M={train.n_points}, N={train.N}, "
             f"nphotons={args.nphotons:g}")
    with output_run(out, SIMULATE_OUTPUTS, holder="ptychopinn simulate", last="train.npz") as stage:
        save_npz(stage / "train.npz", train)
        save_npz(stage / "test.npz", test)
        save_scan_preview(train.obj, train.probe, train.positions, train.diffraction, stage / "preview.png",
                          title=title)
    train_path, test_path, preview_path = out / "train.npz", out / "test.npz", out / "preview.png"
    noise = "Poisson" if args.poisson else "noiseless"
    summary(f"ptychopinn simulate: wrote {train_path} (M={train.n_points}), {test_path} (M={test.n_points}), "
            f"{preview_path}; N={train.N}, nphotons={args.nphotons:g} per pattern ({noise})")
    return 0
