"""``ptychopinn train TRAIN.npz [--test TEST.npz] --output-dir DIR``: train a model, write its archive.

Settings come from, in increasing priority: the defaults of the config dataclasses, ``--config
FILE`` (JSON or YAML with optional sections ``model``, ``training``, ``execution``), and the flags.
Outputs: ``DIR/wts.h5.zip`` (the model archive), ``DIR/checkpoints/last.ckpt`` (+ the best by
validation loss), ``DIR/checkpoints/loss_curves.png``, ``DIR/logs/version_*/metrics.csv``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ptychopinn.cli.common import (
    add_common_options,
    add_frame_options,
    command,
    devices,
    frame_options,
    help_text,
    nonneg_int,
    number,
    positive_int,
    set_if,
    show_progress,
    summary,
)


def _defaults() -> dict[str, Any]:
    """Field defaults of the three config dataclasses, by field name (the one source of the help texts)."""
    import dataclasses

    from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig

    out: dict[str, Any] = {}
    for cls in (ModelConfig, TrainingConfig, ExecutionConfig):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
    return out


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ptychopinn.config import (
        ACCELERATORS,
        AMP_ACTIVATIONS,
        LOGGERS,
        MODEL_TYPES,
        PRECISIONS,
        SCHEDULERS,
        STRATEGIES,
        UNITS,
    )

    d = _defaults()

    def dflt(name: str, none: str = "none") -> str:
        v = d[name]
        return f"(default: {none if v is None else v})"

    p = sub.add_parser("train", help="train a model on a scan (physics loss, no ground truth needed)",
                       description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_file", metavar="TRAIN.npz", nargs="?",
                   help="training scan (NPZ, HDF5 or CXI; see README 'Data'); required unless --print-config")
    p.add_argument("--test", metavar="TEST.npz",
                   help="validation scan (default: hold out --val-fraction of TRAIN)")
    p.add_argument("--probe", metavar="FILE|estimate",
                   help="probe: a file holding one (NPZ/HDF5 scan, reconstruction NPZ, ptychodus product, CXI) or "
                        "'estimate' (from the mean diffraction pattern); default: the scan's own")
    p.add_argument("--output-dir", metavar="DIR",
                   help="directory for the archive, checkpoints, logs and run.log (required unless --print-config; "
                        "created)")
    p.add_argument("--print-config", action="store_true",
                   help="print the fully resolved configuration (defaults, --config file, flags) as YAML and exit "
                        "without training; save it and pass it back with --config")
    p.add_argument("--config", metavar="FILE",
                   help="JSON/YAML config with sections model/training/execution; flags override it "
                        "(default: none)")
    p.add_argument("--units", choices=UNITS, default="auto",
                   help="units of the patterns in the files (default: auto, detected and logged to run.log)")
    m = p.add_argument_group("model")
    m.add_argument("--gridsize", type=positive_int, metavar="G",
                   help=f"patterns per sample = G**2 {dflt('gridsize')}")
    m.add_argument("--n-filters-scale", type=positive_int, metavar="K",
                   help=f"network width multiplier {dflt('n_filters_scale')}")
    m.add_argument("--model-type", choices=MODEL_TYPES,
                   help=f"pinn: physics loss, no ground truth; supervised: ground-truth patches (NPZ key Y) "
                        f"{dflt('model_type')}")
    m.add_argument("--generator", metavar="NAME",
                   help=f"generator architecture: 'unet' (fast) or 'cnn' (the reference) {dflt('generator')}")
    m.add_argument("--amp-activation", choices=AMP_ACTIVATIONS,
                   help=f"activation of the amplitude head {dflt('amp_activation')}")
    m.add_argument("--probe-scale", type=number, metavar="S", help=f"probe normalisation {dflt('probe_scale')}")
    m.add_argument("--probe-trainable", action="store_true", default=None,
                   help=f"learn the probe too {dflt('probe_trainable', 'off')}")
    m.add_argument("--intensity-scale-trainable", action="store_true", default=None,
                   help=f"learn the photon scale too {dflt('intensity_scale_trainable')}")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, help=f"number of epochs {dflt('nepochs')}")
    t.add_argument("--batch-size", type=positive_int, help=f"samples per batch {dflt('batch_size')}")
    t.add_argument("--n-groups", type=positive_int,
                   help="training samples to draw (default: one per scan point)")
    t.add_argument("--n-subsample", type=positive_int,
                   help="use a random subset of this many scan points (default: all points)")
    t.add_argument("--neighbor-count", type=positive_int, metavar="K",
                   help=f"K nearest neighbours grouped for gridsize > 1 (default: {d['neighbor_count']}, "
                        "at least gridsize**2 - 1)")
    t.add_argument("--nphotons", type=number,
                   help="mean photons per pattern (default: measured from the data)")
    t.add_argument("--nll-weight", type=number, help=f"Poisson likelihood weight {dflt('nll_weight')}")
    t.add_argument("--mae-weight", type=number, help=f"amplitude MAE weight {dflt('mae_weight')}")
    t.add_argument("--learning-rate", type=number, metavar="LR", help=f"Adam learning rate {dflt('learning_rate')}")
    t.add_argument("--scheduler", choices=SCHEDULERS, help=f"learning-rate schedule {dflt('scheduler')}")
    t.add_argument("--warmup-epochs", type=nonneg_int,
                   help=f"linear warm-up epochs of the 'cosine' schedule {dflt('warmup_epochs')}")
    t.add_argument("--early-stop-patience", type=positive_int, metavar="EPOCHS",
                   help="stop after this many epochs without improvement (default: never stop early)")
    t.add_argument("--val-fraction", type=number,
                   help=f"fraction of TRAIN held out for validation when there is no --test {dflt('val_fraction')}")
    t.add_argument("--seed", type=nonneg_int, help=f"random seed {dflt('seed')}")
    e = p.add_argument_group("execution")
    e.add_argument("--accelerator", choices=ACCELERATORS, help=f"hardware {dflt('accelerator')}")
    e.add_argument("--devices", type=devices, help=f"number of devices or 'auto' {dflt('devices')}")
    e.add_argument("--num-nodes", type=positive_int, help=f"machines for multi-node training {dflt('num_nodes')}")
    e.add_argument("--strategy", choices=STRATEGIES, help=f"parallel strategy {dflt('strategy')}")
    e.add_argument("--precision", choices=PRECISIONS, help=f"numeric precision {dflt('precision')}")
    e.add_argument("--num-workers", type=nonneg_int,
                   help=f"data-loader worker processes {dflt('num_workers')}")
    e.add_argument("--gradient-clip-val", type=number, metavar="V",
                   help="clip gradients at this norm (default: no clipping)")
    e.add_argument("--accumulate-grad-batches", type=positive_int, metavar="K",
                   help=f"optimiser step every K batches {dflt('accumulate_grad_batches')}")
    e.add_argument("--logger", choices=LOGGERS,
                   help=f"metrics logger; tensorboard and mlflow also receive validation images and need "
                        f"their extra installed {dflt('logger')}")
    e.add_argument("--no-deterministic", dest="deterministic", action="store_false", default=None,
                   help="allow non-deterministic kernels, faster on some GPUs (default: deterministic)")
    y = p.add_argument_group("synthetic training (a network before the sample: README 'Train before the sample')")
    y.add_argument("--synthetic", action="store_true",
                   help="train on generated objects scanned with TRAIN's probe, positions, N and mean counts per "
                        "pattern, with Poisson noise; TRAIN's patterns are not trained on (default: off)")
    y.add_argument("--synthetic-kinds", type=synthetic_kinds, metavar="KINDS",
                   help="comma-separated object kinds of --synthetic: lines, grf, image (default: lines,grf)")
    y.add_argument("--synthetic-objects", type=positive_int, metavar="K",
                   help="number of generated objects of --synthetic, each scanned at every point (default: 2)")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoints/last.ckpt (default: start afresh)")
    add_frame_options(p)
    add_common_options(p)
    p.set_defaults(func=command(run, plan))


def synthetic_kinds(text: str) -> tuple[str, ...]:
    """argparse type: ``lines,grf`` style object kinds (:func:`ptychopinn.simulate.synthetic.parse_kinds`)."""
    from ptychopinn.errors import ConfigError
    from ptychopinn.simulate.synthetic import parse_kinds

    try:
        return parse_kinds(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("synthetic object kinds: ")) from None


def build_configs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """ModelConfig, TrainingConfig, ExecutionConfig from defaults, ``--config`` and flags.

    The config file has the sections of :class:`~ptychopinn.config.RunConfig` (the one schema of a training
    run: ``model``, ``training``, ``execution``), each validated by its dataclass, so an unknown section or
    field is an error that lists the valid names; flags then override single fields.
    """
    from ptychopinn.config import RUN_SECTIONS, ExecutionConfig, ModelConfig, TrainingConfig
    from ptychopinn.config_fields import sketch
    from ptychopinn.config_files import load_config_file
    from ptychopinn.errors import ConfigError

    base: dict[str, Any] = load_config_file(args.config) if args.config else {}
    if "inference" in base:
        raise ConfigError(f"config file {args.config}: section 'inference' is not used by `ptychopinn train`; "
                          "remove it (inference settings are options of `ptychopinn infer`)")
    # keys of a YAML mapping may be of any type (numbers, null): sort by text, show a bounded sketch
    unknown = sorted((k for k in base if k not in RUN_SECTIONS), key=str)
    if unknown:
        raise ConfigError(f"config file {args.config}: unknown section(s) {sketch(unknown)}; valid sections are "
                          f"{list(RUN_SECTIONS)}")
    for section in RUN_SECTIONS:
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
    for key, attr in (("accelerator", "accelerator"), ("devices", "devices"), ("num_nodes", "num_nodes"),
                      ("strategy", "strategy"), ("precision", "precision"), ("num_workers", "num_workers"),
                      ("gradient_clip_val", "gradient_clip_val"),
                      ("accumulate_grad_batches", "accumulate_grad_batches"), ("logger", "logger"),
                      ("deterministic", "deterministic")):
        set_if(execution, key, getattr(args, attr))
    if not show_progress(args):
        execution["enable_progress_bar"] = False
    return ModelConfig.from_dict(model), TrainingConfig.from_dict(training), ExecutionConfig.from_dict(execution)


def plan(args: argparse.Namespace) -> tuple[tuple[str, ...], list[str | None]] | None:
    """The outputs of this invocation and the files it reads (compared before anything is written); None for
    ``--print-config``, which writes nothing (no run.log either). The resume checkpoint is an output: a
    resumed run continues and rewrites it."""
    if args.print_config:
        return None
    from ptychopinn.workflows import train_outputs

    return train_outputs(), [args.train_file, args.test, args.probe, args.config]


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from ptychopinn.io.registry import load_scan
    from ptychopinn.workflows import train_model

    if args.print_config:
        import yaml

        from ptychopinn.config import RunConfig

        model, training, execution = build_configs(args)
        resolved = RunConfig(model=model, training=training, execution=execution).to_dict()
        print("# ptychopinn train: resolved configuration (model.N is taken from the training data when it differs)")
        print(yaml.safe_dump(resolved, sort_keys=False), end="")
        return 0
    if args.train_file is None or args.output_dir is None:
        from ptychopinn.errors import ConfigError

        raise ConfigError("train needs the training scan TRAIN.npz and --output-dir DIR (only --print-config "
                          "runs without them); e.g. ptychopinn train scan.npz --output-dir run")
    # stacks above $PTYCHOPINN_MMAP_THRESHOLD bytes (default 1 GiB) stay on disk instead of in memory
    probe = args.probe
    if not args.synthetic and (args.synthetic_kinds is not None or args.synthetic_objects is not None):
        from ptychopinn.errors import ConfigError

        raise ConfigError("--synthetic-kinds and --synthetic-objects only apply to --synthetic training; add "
                          "--synthetic or drop them")
    train_scan = load_scan(args.train_file, units=args.units, probe=probe, **frame_options(args))
    logging.getLogger("ptychopinn").info("probe: %s", train_scan.metadata["probe_source"])
    test_scan = load_scan(args.test, units=args.units, probe=probe, **frame_options(args)) if args.test else None
    model, training, execution = build_configs(args)
    if model.N != train_scan.N:
        model = model.replace(N=train_scan.N)
    logging.getLogger("ptychopinn.cli").info(
        "resolved configuration: model %s; training %s; execution %s",
        model.to_dict(), training.to_dict(), execution.to_dict())
    if args.synthetic:
        from ptychopinn.workflows import train_synthetic

        outcome = train_synthetic(train_scan, test=test_scan, output_dir=Path(args.output_dir), model=model,
                                  training=training, execution=execution, resume=args.resume,
                                  kinds=args.synthetic_kinds, objects=args.synthetic_objects)
    else:
        outcome = train_model(train_scan, test=test_scan, output_dir=Path(args.output_dir), model=model,
                              training=training, execution=execution, resume=args.resume)
    hist = outcome.history
    last_train = hist.get("train_loss", [float("nan")])[-1] if hist.get("train_loss") else float("nan")
    last_val = hist.get("val_loss", [])
    val_txt = f", val_loss {last_val[-1]:.4g}" if last_val else ""
    made = " on generated objects (--synthetic)" if args.synthetic else ""
    summary(f"trained {outcome.epochs_completed} epochs{made} in {outcome.seconds:.1f} s (train_loss {last_train:.4g}"
            f"{val_txt}); model archive: {outcome.archive}; loss curves: {outcome.loss_plot}")
    return 0

