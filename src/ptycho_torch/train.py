"""``python -m ptycho_torch.train``: the reference PyTorch training command line, over :mod:`ptychopinn`.

Example::

    python -m ptycho_torch.train --train_data_file train.npz --test_data_file test.npz \\
        --output_dir out --max_epochs 10 --gridsize 2 --accelerator cpu --quiet

Writes ``<output_dir>/wts.h5.zip`` (the model archive), ``<output_dir>/checkpoints/last.ckpt`` (+ the best by
validation loss) and ``<output_dir>/logs/version_*/metrics.csv`` (logger 'csv'). Bad input: one line on stderr
and exit code 2. The legacy ``--ptycho_dir/--config`` MLflow interface is not provided (error).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptycho_torch._cli import ACCELERATORS, StrictParser, add_bool, resolve_accelerator, run_main
from ptycho_torch.config_params import SCHEDULER_MAP, map_scheduler
from ptychopinn.cli.common import nonneg_int, number, positive_int
from ptychopinn.errors import ConfigError

__all__ = ["build_args", "build_parser", "main"]

SCHEDULERS = (*SCHEDULER_MAP, "MultiStage", "constant", "exponential", "cosine", "plateau")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (usage errors raise ConfigError)."""
    p = StrictParser(prog="python -m ptycho_torch.train", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_data_file", required=True, help="training scan NPZ")
    p.add_argument("--test_data_file", help="validation scan NPZ (default: hold out 10%% of the groups)")
    p.add_argument("--output_dir", required=True, help="output directory (created)")
    p.add_argument("--max_epochs", type=positive_int, default=100, help="epochs (default 100)")
    p.add_argument("--n_groups", type=positive_int, default=None, help="training groups (default: one per point)")
    p.add_argument("--n_images", type=positive_int, default=None, help="deprecated alias of --n_groups")
    p.add_argument("--gridsize", type=positive_int, default=2, help="patterns per group = gridsize**2 (default 2)")
    p.add_argument("--batch_size", type=positive_int, default=16, help="groups per batch (default 16)")
    p.add_argument("--accelerator", choices=ACCELERATORS, default="auto")
    add_bool(p, "--deterministic", "deterministic", True, "--no-deterministic", "deterministic kernels + seeding")
    p.add_argument("--num-workers", dest="num_workers", type=nonneg_int, default=0)
    p.add_argument("--learning-rate", dest="learning_rate", type=number, default=1e-3)
    p.add_argument("--scheduler", choices=SCHEDULERS, default="Default",
                   help="Default/Exponential/ReduceLROnPlateau (=Adaptive)/CosineAnnealing; MultiStage unsupported")
    p.add_argument("--accumulate-grad-batches", dest="accumulate_grad_batches", type=positive_int, default=1)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_bool(p, "--enable-checkpointing", "enable_checkpointing", True, "--disable-checkpointing",
             "write checkpoints/last.ckpt and the best checkpoint")
    p.add_argument("--checkpoint-save-top-k", dest="checkpoint_save_top_k", type=nonneg_int, default=1)
    p.add_argument("--checkpoint-monitor", dest="checkpoint_monitor", default="val_loss",
                   help="val_loss (train_loss without validation data); the only metric monitored")
    p.add_argument("--checkpoint-mode", dest="checkpoint_mode", choices=("min", "max"), default="min")
    p.add_argument("--early-stop-patience", dest="early_stop_patience", type=positive_int, default=None)
    p.add_argument("--logger", choices=("csv", "tensorboard", "mlflow", "none"), default="csv")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="deprecated: use --accelerator")
    p.add_argument("--disable_mlflow", action="store_true", help="deprecated: --logger none --quiet")
    return p


def build_args(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``argv`` into ``{'train', 'test', 'output_dir', 'model', 'training', 'execution'}`` (core configs).

    Emits DeprecationWarning for ``--n_images``, ``--device`` and ``--disable_mlflow``; raises ConfigError for
    bad values (including 'tpu', 'MultiStage', checkpoint mode 'max', an unknown monitor metric)."""
    from ptychopinn.config import (
        REFERENCE_GENERATOR,
        REFERENCE_N_FILTERS_SCALE,
        ExecutionConfig,
        ModelConfig,
        TrainingConfig,
    )

    a = build_parser().parse_args(list(argv))
    n_groups = a.n_groups
    if a.n_images is not None:
        warnings.warn("--n_images is deprecated; use --n_groups", DeprecationWarning, stacklevel=2)
        if n_groups is not None and n_groups != a.n_images:
            raise ConfigError(f"--n_images {a.n_images} contradicts --n_groups {n_groups}; give only --n_groups")
        n_groups = a.n_images
    accelerator = resolve_accelerator(a.accelerator, a.device)
    logger, quiet = a.logger, a.quiet
    if a.disable_mlflow:
        warnings.warn("--disable_mlflow is deprecated; use --logger none --quiet", DeprecationWarning, stacklevel=2)
        logger, quiet = "none", True
    if a.checkpoint_mode != "min":
        raise ConfigError("--checkpoint-mode: expected 'min' (losses are minimised), found 'max'; use min")
    if a.checkpoint_monitor not in ("val_loss", "train_loss", "loss", "poisson_val_loss", "poisson_train_loss"):
        raise ConfigError(f"--checkpoint-monitor: expected val_loss or train_loss, found {a.checkpoint_monitor!r}; "
                          "use val_loss")
    model = ModelConfig(gridsize=a.gridsize, generator=REFERENCE_GENERATOR, n_filters_scale=REFERENCE_N_FILTERS_SCALE)
    training = TrainingConfig(
        nepochs=a.max_epochs, batch_size=a.batch_size, n_groups=n_groups, learning_rate=a.learning_rate,
        scheduler=map_scheduler(a.scheduler), early_stop_patience=a.early_stop_patience,
        enable_oversampling=n_groups is not None and a.gridsize > 1)
    execution = ExecutionConfig(
        accelerator=accelerator, deterministic=bool(a.deterministic), num_workers=a.num_workers,
        accumulate_grad_batches=a.accumulate_grad_batches, logger=logger, enable_progress_bar=not quiet,
        enable_checkpointing=bool(a.enable_checkpointing), checkpoint_save_top_k=a.checkpoint_save_top_k)
    return {"train": Path(a.train_data_file), "test": Path(a.test_data_file) if a.test_data_file else None,
            "output_dir": Path(a.output_dir), "model": model, "training": training, "execution": execution}


def _run(argv: list[str]) -> int:
    from ptychopinn.workflows import train_model

    cfg = build_args(argv)
    for key in ("train", "test"):
        if cfg[key] is not None and not cfg[key].is_file():
            raise FileNotFoundError(f"data file not found: {cfg[key]}")
    out = train_model(cfg["train"], output_dir=cfg["output_dir"], test=cfg["test"], model=cfg["model"],
                      training=cfg["training"], execution=cfg["execution"], units="auto")
    print(f"trained {out.epochs_completed} epochs in {out.seconds:.1f} s; model archive: {out.archive}; "
          f"last checkpoint: {out.last_checkpoint}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input)."""
    return run_main("ptycho_torch.train", argv, _run)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
