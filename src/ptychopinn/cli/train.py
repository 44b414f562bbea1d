"""``ptychopinn train TRAIN.npz [--test TEST.npz] --output-dir DIR``: train a model, write its archive.

Settings come from, in increasing priority: the defaults of the config dataclasses, ``--config
FILE`` (JSON or YAML with optional sections ``model``, ``training``, ``execution``), and the flags.
Outputs: ``DIR/wts.h5.zip`` (the model archive), ``DIR/checkpoints/last.ckpt`` (+ the best by
validation loss), ``DIR/checkpoints/loss_curves.png``, ``DIR/logs/version_*/metrics.csv``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ptychopinn.cli._common import (
    add_common_options,
    command,
    devices,
    nonneg_int,
    number,
    positive_int,
    set_if,
    show_progress,
    summary,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a scan (physics loss, no ground truth needed)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_file", metavar="TRAIN.npz", help="training scan (NPZ data contract)")
    p.add_argument("--test", metavar="TEST.npz", help="validation scan (default: hold out a fraction of TRAIN)")
    p.add_argument("--output-dir", required=True, help="directory for the archive, checkpoints, logs")
    p.add_argument("--config", metavar="FILE", help="JSON/YAML config with sections model/training/execution")
    p.add_argument("--units", choices=("auto", "amplitude", "intensity"), default="auto",
                   help="units of the patterns in the files (default: auto-detect, logged)")
    m = p.add_argument_group("model")
    m.add_argument("--gridsize", type=positive_int, help="patterns per sample = gridsize**2 (default 1)")
    m.add_argument("--n-filters-scale", type=positive_int, help="network width multiplier (default 2)")
    m.add_argument("--model-type", choices=("pinn", "supervised"), help="physics loss or ground-truth patches")
    m.add_argument("--generator", help="generator architecture: 'unet' (default, fast) or 'cnn' (the reference)")
    m.add_argument("--amp-activation", choices=("sigmoid", "swish", "softplus", "relu"))
    m.add_argument("--probe-scale", type=number, help="probe normalisation (default 4)")
    m.add_argument("--probe-trainable", action="store_true", default=None, help="learn the probe too")
    m.add_argument("--intensity-scale-trainable", action="store_true", default=None,
                   help="learn the photon scale too")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, help="number of epochs (default 50)")
    t.add_argument("--batch-size", type=positive_int, help="samples per batch (default 16)")
    t.add_argument("--n-groups", type=positive_int, help="training samples to draw (default: one per point)")
    t.add_argument("--n-subsample", type=positive_int, help="use a random subset of this many scan points")
    t.add_argument("--neighbor-count", type=positive_int, help="K nearest neighbours for gridsize > 1")
    t.add_argument("--nphotons", type=number, help="mean photons per pattern (default: measured from data)")
    t.add_argument("--nll-weight", type=number, help="Poisson likelihood weight (default 1)")
    t.add_argument("--mae-weight", type=number, help="amplitude MAE weight (default 0)")
    t.add_argument("--learning-rate", type=number, help="Adam learning rate (default 1e-3)")
    t.add_argument("--scheduler", choices=("constant", "exponential", "cosine", "plateau"))
    t.add_argument("--warmup-epochs", type=nonneg_int, help="linear warm-up epochs for 'cosine'")
    t.add_argument("--early-stop-patience", type=positive_int, help="stop after this many epochs without improvement")
    t.add_argument("--val-fraction", type=number, help="fraction held out when no --test (default 0.1)")
    t.add_argument("--seed", type=nonneg_int, help="random seed (default 42)")
    e = p.add_argument_group("execution")
    e.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "cuda", "mps"))
    e.add_argument("--devices", type=devices, help="number of devices or 'auto'")
    e.add_argument("--num-nodes", type=positive_int)
    e.add_argument("--strategy", choices=("auto", "ddp", "ddp_spawn"))
    e.add_argument("--precision", choices=("32", "bf16-mixed", "16-mixed"))
    e.add_argument("--num-workers", type=nonneg_int, help="data-loader worker processes (default 0)")
    e.add_argument("--gradient-clip-val", type=number)
    e.add_argument("--accumulate-grad-batches", type=positive_int)
    e.add_argument("--logger", choices=("csv", "tensorboard", "mlflow", "none"))
    e.add_argument("--no-deterministic", dest="deterministic", action="store_false", default=None,
                   help="allow non-deterministic kernels (faster on some GPUs)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints/last.ckpt")
    add_common_options(p)
    p.set_defaults(func=command(run))


def build_configs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """ModelConfig, TrainingConfig, ExecutionConfig from defaults, ``--config`` and flags."""
    from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig, load_config_file
    from ptychopinn.errors import ConfigError

    base: dict[str, Any] = load_config_file(args.config) if args.config else {}
    unknown = sorted(set(base) - {"model", "training", "execution", "inference"})
    if unknown:
        raise ConfigError(f"config file {args.config}: unknown section(s) {unknown}; valid sections are "
                          "['execution', 'inference', 'model', 'training']")
    for section in ("model", "training", "execution", "inference"):
        if base.get(section) is not None and not isinstance(base[section], dict):
            raise ConfigError(f"config file {args.config}: section '{section}' must be a mapping of field names "
                              f"to values, got {type(base[section]).__name__}")
    model = dict(base.get("model") or {})
    training = dict(base.get("training") or {})
    execution = dict(base.get("execution") or {})
    for key, attr in (("gridsize", "gridsize"), ("n_filters_scale", "n_filters_scale"),
                      ("model_type", "model_type"), ("generator", "generator"),
                      ("amp_activation", "amp_activation"), ("probe_scale", "probe_scale"),
                      ("probe_trainable", "probe_trainable"),
                      ("intensity_scale_trainable", "intensity_scale_trainable")):
        set_if(model, key, getattr(args, attr))
    for key, attr in (("nepochs", "epochs"), ("batch_size", "batch_size"), ("n_groups", "n_groups"),
                      ("n_subsample", "n_subsample"), ("neighbor_count", "neighbor_count"),
                      ("nphotons", "nphotons"), ("nll_weight", "nll_weight"), ("mae_weight", "mae_weight"),
                      ("learning_rate", "learning_rate"), ("scheduler", "scheduler"),
                      ("warmup_epochs", "warmup_epochs"), ("early_stop_patience", "early_stop_patience"),
                      ("val_fraction", "val_fraction"), ("seed", "seed")):
        set_if(training, key, getattr(args, attr))
    training.setdefault("output_dir", str(args.output_dir))
    for key, attr in (("accelerator", "accelerator"), ("devices", "devices"), ("num_nodes", "num_nodes"),
                      ("strategy", "strategy"), ("precision", "precision"), ("num_workers", "num_workers"),
                      ("gradient_clip_val", "gradient_clip_val"),
                      ("accumulate_grad_batches", "accumulate_grad_batches"), ("logger", "logger"),
                      ("deterministic", "deterministic")):
        set_if(execution, key, getattr(args, attr))
    if not show_progress(args):
        execution["enable_progress_bar"] = False
    gs = model.get("gridsize", 1)
    # a gridsize of the wrong type is reported by ModelConfig below, not by this comparison
    if isinstance(gs, int) and not isinstance(gs, bool) and gs > 1 and "neighbor_count" not in training:
        training["neighbor_count"] = max(4, gs * gs - 1)
    return ModelConfig.from_dict(model), TrainingConfig.from_dict(training), ExecutionConfig.from_dict(execution)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from ptychopinn.io.lazy import load_scan_auto
    from ptychopinn.workflows import train_model

    # uncompressed NPZ > 1 GiB (or $PTYCHOPINN_MMAP_THRESHOLD bytes): diffraction memory-mapped, not loaded
    train_scan = load_scan_auto(args.train_file, units=args.units)
    test_scan = load_scan_auto(args.test, units=args.units) if args.test else None
    model, training, execution = build_configs(args)
    if model.N != train_scan.N:
        model = model.replace(N=train_scan.N)
    logging.getLogger("ptychopinn.cli").info(
        "resolved configuration: model %s; training %s; execution %s",
        model.to_dict(), training.to_dict(), execution.to_dict())
    outcome = train_model(train_scan, test=test_scan, output_dir=Path(args.output_dir), model=model,
                          training=training, execution=execution, resume=args.resume)
    hist = outcome.history
    last_train = hist.get("train_loss", [float("nan")])[-1] if hist.get("train_loss") else float("nan")
    last_val = hist.get("val_loss", [])
    val_txt = f", val_loss {last_val[-1]:.4g}" if last_val else ""
    summary(f"trained {outcome.epochs_completed} epochs in {outcome.seconds:.1f} s (train_loss {last_train:.4g}"
            f"{val_txt}); model archive: {outcome.archive}; loss curves: {outcome.loss_plot}")
    return 0
