"""``ptychopinn demo``: the whole pipeline on built-in data, in a few minutes on a CPU.

Simulates a training scan of one bundled natural image and a separate test scan of a different
image (same probe), trains a PINN on the training scan (physics loss only: no ground truth is
used), reconstructs the unseen test scan, evaluates it against the truth and writes everything to
one folder: ``train.npz``, ``test.npz``, ``preview.png``, ``model/wts.h5.zip`` (+ checkpoints and
loss curves), ``reconstruction/`` (NPZ, amplitude.png, phase.png) and ``evaluation/``
(metrics.json, comparison.png, frc.png).
"""

from __future__ import annotations

import argparse

from ptychopinn.cli.common import (
    add_common_options,
    command,
    help_text,
    nonneg_int,
    positive_int,
    say,
    show_progress,
    summary,
)

DEMO_EPOCHS = 30
QUICK_EPOCHS = 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="simulate, train, reconstruct and evaluate on built-in data",
                       description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="demo_output", help="where to write everything (default demo_output)")
    p.add_argument("--epochs", type=positive_int, help=f"training epochs (default {DEMO_EPOCHS})")
    p.add_argument("--quick", action="store_true", help=f"a {QUICK_EPOCHS}-epoch smoke run")
    p.add_argument("--seed", type=nonneg_int, default=0, help="simulation and training seed")
    add_common_options(p)
    p.set_defaults(func=command(run, plan))


def plan(args: argparse.Namespace) -> tuple[tuple[str, ...], list[str]]:
    """The outputs of this invocation (it reads no file)."""
    from ptychopinn.workflows_demo import DEMO_OUTPUTS

    return DEMO_OUTPUTS, []


def run(args: argparse.Namespace) -> int:
    from ptychopinn.workflows_demo import run_demo

    epochs = args.epochs or (QUICK_EPOCHS if args.quick else DEMO_EPOCHS)
    say(args, f"ptychopinn demo: simulating, training for {epochs} epochs, reconstructing, evaluating "
              f"-> {args.output_dir}")
    res = run_demo(args.output_dir, epochs=epochs, seed=args.seed, progress=show_progress(args),
                   log=lambda s: say(args, s))
    summary(res.summary())
    return 0
