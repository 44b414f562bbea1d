"""One training run, from scans and configs to a trained model, checkpoints, logs and a loss plot.

:func:`train` does it in one call. :func:`prepare_training` and :meth:`TrainingRun.fit` are the same run in
two steps, for callers that must see the Lightning module and Trainer before the fit (the ptychodus
plugin's ``Trainer`` adds its callbacks there); ``train`` is exactly those two steps under the output lock.

Order of work: validate the inputs (N, labels, optional logger packages, resume checkpoint) before
anything expensive; seed everything (so grouping, weight initialisation and shuffling are reproducible);
build the data module (grouping and scales), the model and the Trainer; fit; plot the loss curves; return
the very model object that was trained (the reference once saved an untrained copy), on CPU in eval mode.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch

from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, PtychoInputError
from ptychopinn.training.data import PtychoDataModule, check_scans_fit_model
from ptychopinn.training.guards import (
    TrainingInterrupted,
    check_resume_checkpoint,
    interrupt_as_exception,
    interrupt_requested,
    output_lock,
    rendezvous_error,
)
from ptychopinn.training.module import PINNLightningModule
from ptychopinn.training.trainer import (
    LAST_NAME,
    LossHistory,
    build_trainer,
    check_logger_available,
    checkpoint_paths,
    find_callback,
)

if TYPE_CHECKING:
    from ptychopinn.models.pinn import PtychoPINN

__all__ = ["ModuleFactory", "TrainResult", "TrainingDivergedError", "TrainingRun", "prepare_training", "train"]

# Lightning hints that are noise for this library: a few workers is a deliberate default on small data,
# and the number of batches is what it is.
_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches.*is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*`training_step` returned `None`.*",  # a skipped non-finite step; reported as TrainingDivergedError
)


# a DDP process group whose processes did not all join before the rendezvous timeout
_RENDEZVOUS_ERRORS = tuple(getattr(torch.distributed, name) for name in ("DistStoreError", "DistNetworkError")
                           if hasattr(torch.distributed, name))


class TrainingDivergedError(RuntimeError, PtychoInputError):
    """The training loss became NaN or infinite; the last good checkpoint is kept.

    Also a :class:`PtychoInputError`: what makes training diverge is a setting (learning rate, gradient
    clipping) or the data, so the CLI reports it as bad input (one line, exit code 2)."""


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        model: the trained ``PtychoPINN`` (the object that was optimised), on CPU, in eval mode.
        history: ``{'train_loss': [...], 'val_loss': [...]}`` per-epoch means (float, loss units);
            ``val_loss`` is empty without validation. After a resume it covers all epochs.
        input_scale: ``a`` of the training patterns (inference normalises a new scan with its own ``a``).
        intensity_scale: photon scale ``s = sqrt(nphotons) / (N/2)`` used by the likelihood.
        nphotons: mean total counts per pattern; nphotons_source: 'config' or 'measured'.
        checkpoint_dir: ``output_dir/checkpoints``. best_checkpoint / last_checkpoint: files, or None.
        loss_plot: ``checkpoints/loss_curves.png`` or None. metrics_csv: the CSV logger's file or None.
        epochs_completed: number of finished epochs (including those before a resume).
    """

    model: PtychoPINN = field(repr=False)
    history: dict[str, list[float]]
    input_scale: float
    intensity_scale: float
    nphotons: float
    nphotons_source: str
    checkpoint_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    loss_plot: Path | None
    metrics_csv: Path | None
    epochs_completed: int


ModuleFactory = Callable[[PtychoDataModule], PINNLightningModule]
"""Builds the Lightning module once the data module knows the scales (``intensity_scale``, ``input_scale``,
``has_val``); the default is a plain :class:`PINNLightningModule`."""


def _check_inputs(train_scan: ScanData, val_scan: ScanData | None, model: ModelConfig,
                  training: TrainingConfig, execution: ExecutionConfig, resume_from: Path | None) -> None:
    for name, value, typ in (("train_scan", train_scan, ScanData), ("model", model, ModelConfig),
                             ("training", training, TrainingConfig), ("execution", execution, ExecutionConfig)):
        if not isinstance(value, typ):
            raise ConfigError(f"{name}: expected a {typ.__name__}, found {type(value).__name__}; "
                              f"build one with {typ.__name__}(...)")
    if val_scan is not None and not isinstance(val_scan, ScanData):
        raise ConfigError(f"val_scan: expected a ScanData or None, found {type(val_scan).__name__}; "
                          "load it with ptychopinn.io")
    check_scans_fit_model(model, training=train_scan, validation=val_scan)
    check_logger_available(execution.logger)
    if resume_from is not None and not resume_from.is_file():
        raise ConfigError(f"resume=True expects a checkpoint at {resume_from}, found none; train without "
                          "resume first or point output_dir at the earlier run")


def _state_from_checkpoint(path: Path, hist_cb: LossHistory | None) -> tuple[dict[str, list[float]], int]:
    """(loss history, epochs completed) as recorded in a Lightning checkpoint (read weights_only)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    key = hist_cb.state_key if hist_cb is not None else LossHistory.__qualname__
    state = ckpt.get("callbacks", {}).get(key, {})
    history = {k: [float(x) for x in v] for k, v in state.items()}
    return history, int(ckpt.get("epoch", -1)) + 1


def _diverged_message(epoch: int | None, step: int | None, last: Path | None, training: TrainingConfig) -> str:
    where = f"epoch {epoch} (0-based)" + (f", optimiser step {step}" if step is not None else "")
    kept = f"the last good checkpoint is {last}" if last is not None and last.is_file() else \
        "no checkpoint was written before that"
    return (f"training diverged (non-finite loss) at {where}; {kept}; lower the learning rate "
            f"(now {training.learning_rate:g}) or clip gradients (gradient_clip_val), then train again")


def train(
    train_scan: ScanData,
    *,
    model: ModelConfig,
    training: TrainingConfig,
    execution: ExecutionConfig | None = None,
    output_dir: str | Path,
    val_scan: ScanData | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train a PtychoPINN on ``train_scan``: :func:`prepare_training` then :meth:`TrainingRun.fit`, holding
    the output folder's lock (one training per folder) from before anything is built until the end.

    Args:
        train_scan: training scan (``diffraction`` ``[M, N, N]`` float32 amplitude sqrt(counts), positions
            ``[M, 2]`` (x, y) px, probe ``[N, N]`` complex64; ``patches`` required for 'supervised').
        model: architecture; ``model.N`` must equal the scan's N.
        training: data selection, losses, optimiser, schedule, epochs, seed.
        execution: hardware, precision, logging, checkpoints (default ``ExecutionConfig()``).
        output_dir: run folder (created); see :mod:`ptychopinn.training.trainer` for the layout.
        val_scan: optional validation scan (normalised with its own input scale); without it
            ``training.val_fraction`` of the training groups are held out.
        resume: continue from ``output_dir/checkpoints/last.ckpt`` (weights, optimiser, scheduler, epoch
            counter and loss history) up to ``training.nepochs`` epochs in total.

    Returns:
        :class:`TrainResult`; ``result.model`` is the trained model on CPU in eval mode.

    Raises:
        ConfigError: mismatched N, missing labels for supervised training, an optional logger that is
            not installed, hardware this machine lacks, ``resume`` without a checkpoint or with one of another
            architecture (or one that does not load with ``weights_only=True``), another training holding
            ``output_dir`` (see :mod:`ptychopinn.training.guards`), or DDP processes that did not all join
            within ``execution.rendezvous_timeout`` seconds.
        TrainingDivergedError: the training loss became non-finite (the last good checkpoint is kept).
        KeyboardInterrupt: Ctrl-C; the message says which checkpoint to resume from.
    """
    execution = execution if execution is not None else ExecutionConfig()
    out = Path(output_dir)
    _check_inputs(train_scan, val_scan, model, training, execution, _last_checkpoint(out) if resume else None)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        return _build(train_scan, val_scan, model, training, execution, out, resume, None).fit()


def prepare_training(
    train_scan: ScanData,
    *,
    model: ModelConfig,
    training: TrainingConfig,
    execution: ExecutionConfig | None = None,
    output_dir: str | Path,
    val_scan: ScanData | None = None,
    resume: bool = False,
    module_factory: ModuleFactory | None = None,
) -> TrainingRun:
    """The first half of :func:`train`: check the inputs, seed, build the data module, the Lightning module
    and the Trainer, and return them as a :class:`TrainingRun` to :meth:`~TrainingRun.fit`.

    Arguments, defaults and errors are those of :func:`train`, plus ``module_factory``, which builds the
    Lightning module from the data module (default: a :class:`PINNLightningModule` of ``model`` and
    ``training``). Unlike :func:`train` the output folder is not locked: the caller owns it.

    The process-wide torch settings that building and training change (thread count, deterministic
    algorithms) are given back when :meth:`TrainingRun.fit` ends, or at once when building fails.
    """
    execution = execution if execution is not None else ExecutionConfig()
    out = Path(output_dir)
    _check_inputs(train_scan, val_scan, model, training, execution, _last_checkpoint(out) if resume else None)
    out.mkdir(parents=True, exist_ok=True)
    return _build(train_scan, val_scan, model, training, execution, out, resume, module_factory)


def _last_checkpoint(out: Path) -> Path:
    return out / "checkpoints" / f"{LAST_NAME}.ckpt"


@dataclass(frozen=True)
class _TorchSettings:
    """The process-wide torch settings a training run changes, to give them back to the caller afterwards."""

    threads: int
    deterministic: bool
    warn_only: bool

    @classmethod
    def now(cls) -> _TorchSettings:
        return cls(torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                   torch.is_deterministic_algorithms_warn_only_enabled())

    def restore(self) -> None:
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence the Lightning hints that are noise for this library (``_QUIET_WARNINGS``)."""
    with warnings.catch_warnings():
        for pattern in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def _build(train_scan: ScanData, val_scan: ScanData | None, model: ModelConfig, training: TrainingConfig,
           execution: ExecutionConfig, out: Path, resume: bool, module_factory: ModuleFactory | None) -> TrainingRun:
    """:func:`prepare_training` once the inputs are checked."""
    settings = _TorchSettings.now()
    try:
        with _quiet_lightning():
            # Seed before grouping and weight initialisation, so the whole run is reproducible.
            L.seed_everything(training.seed, workers=True, verbose=False)
            dm = PtychoDataModule(train_scan, model, training, execution, val=val_scan)
            if module_factory is None:
                module = PINNLightningModule(model.to_dict(), training.to_dict(), train_scan.probe,
                                             dm.intensity_scale, dm.input_scale, has_validation=dm.has_val)
            else:
                module = module_factory(dm)
            trainer = build_trainer(execution, training, out, has_val=dm.has_val)
            if resume:
                check_resume_checkpoint(_last_checkpoint(out), module.state_dict())
    except BaseException:
        settings.restore()
        raise
    return TrainingRun(datamodule=dm, module=module, trainer=trainer, output_dir=out, training=training,
                       execution=execution, resume=resume, _settings=settings)


def _remove_run_logs(trainer: L.Trainer, out: Path) -> None:
    """Remove this run's logger folder, then ``logs/`` and ``checkpoints/`` under ``out`` if they are empty."""
    import shutil

    log_dir = getattr(trainer.logger, "log_dir", None) if trainer.logger else None
    if log_dir and Path(log_dir).resolve().is_relative_to(out.resolve()):
        shutil.rmtree(log_dir, ignore_errors=True)
    for folder in (out / "logs", out / "checkpoints"):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


RESUME_HINT = "continue with `ptychopinn train ... --resume` (or resume=True)"
"""What :meth:`TrainingRun.fit` tells a user after Ctrl-C, by default, about the last checkpoint."""


def _interrupted_message(trainer: L.Trainer, last: Path, resume_hint: str = RESUME_HINT) -> str:
    kept = (f"{last} holds the last completed epoch; {resume_hint}"
            if last.is_file() else "no epoch was completed, so there is nothing to resume")
    return f"training stopped by Ctrl-C during epoch {trainer.current_epoch} (0-based); {kept}"


@dataclass
class TrainingRun:
    """One training run, built by :func:`prepare_training` and ready to :meth:`fit`.

    Attributes:
        datamodule: the grouped, normalised data (``input_scale``, ``intensity_scale``, ``nphotons``,
            ``nphotons_source``, ``has_val``).
        module: the Lightning module to train; ``module.model`` is the PtychoPINN.
        trainer: the Lightning ``Trainer``; callbacks may be appended to ``trainer.callbacks`` before the fit.
        output_dir: the run folder (checkpoints, logs).
    """

    datamodule: PtychoDataModule
    module: PINNLightningModule
    trainer: L.Trainer
    output_dir: Path
    training: TrainingConfig
    execution: ExecutionConfig
    resume: bool
    _settings: _TorchSettings = field(repr=False)
    _fitted: bool = field(default=False, repr=False)

    def fit(self, *, loss_plot: bool = True, resume_hint: str = RESUME_HINT) -> TrainResult:
        """Train, then collect the result; once per run.

        Args:
            loss_plot: write ``checkpoints/loss_curves.png`` (and send it to an MLflow logger).
            resume_hint: how the caller's users continue from the last checkpoint, in the Ctrl-C message.

        Returns:
            :class:`TrainResult`; ``result.model`` is the trained model on CPU in eval mode.

        Raises:
            TrainingDivergedError, KeyboardInterrupt, ConfigError (DDP rendezvous): as :func:`train`.
            RuntimeError: the run was fitted already.
        """
        if self._fitted:
            raise RuntimeError("TrainingRun.fit: this run was fitted already; prepare a new run with "
                               "prepare_training (or resume=True) to train again")
        self._fitted = True
        trainer, resume_from = self.trainer, _last_checkpoint(self.output_dir)
        try:
            with _quiet_lightning(), interrupt_as_exception():
                trainer.fit(self.module, datamodule=self.datamodule,
                            ckpt_path=str(resume_from) if self.resume else None, weights_only=True)
        except TrainingInterrupted:
            raise KeyboardInterrupt(_interrupted_message(trainer, resume_from, resume_hint)) from None
        except _RENDEZVOUS_ERRORS as exc:
            raise rendezvous_error(exc, self.execution) from None
        except Exception:
            # a second Ctrl-C inside C++ code (a checkpoint writer) comes out as some other error
            if interrupt_requested():
                raise KeyboardInterrupt(_interrupted_message(trainer, resume_from, resume_hint)) from None
            raise
        finally:
            self._settings.restore()
        return self._result(loss_plot)

    def _result(self, loss_plot: bool) -> TrainResult:
        trainer, module, dm, out = self.trainer, self.module, self.datamodule, self.output_dir
        ckpt_dir = out / "checkpoints"
        resume_from = _last_checkpoint(out)
        best, last = checkpoint_paths(trainer)
        if last is None and self.resume and resume_from.is_file():
            last = resume_from
        spawned_epoch = trainer.callback_metrics.get("diverged_epoch")  # set by spawned DDP workers
        if module.diverged or spawned_epoch is not None:
            epoch = module.diverged_epoch if module.diverged or spawned_epoch is None else int(spawned_epoch)
            if last is None:
                _remove_run_logs(trainer, out)  # nothing usable was produced: leave nothing behind
            raise TrainingDivergedError(_diverged_message(epoch, module.diverged_step, last, self.training))

        hist_cb = find_callback(trainer, LossHistory)
        history = {k: list(v) for k, v in hist_cb.history.items()} if hist_cb is not None else {}
        epochs_completed = int(trainer.current_epoch)
        if not any(history.values()) and last is not None:
            # Trained in spawned worker processes ('ddp_spawn'): the callbacks here saw nothing, but rank 0
            # wrote its final state (history included) into last.ckpt.
            history, epochs_completed = _state_from_checkpoint(last, hist_cb)
            if best is None:
                found = sorted(ckpt_dir.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
                best = found[-1] if found else None
        history.setdefault("train_loss", [])
        history.setdefault("val_loss", [])

        plot = None
        plotted = {k: v for k, v in history.items() if v}
        if loss_plot and plotted and trainer.is_global_zero:
            from ptychopinn.plots import save_loss_curves

            plot = save_loss_curves(plotted, ckpt_dir / "loss_curves.png", title="PtychoPINN training loss")
            from ptychopinn.training.images import send_artifacts

            send_artifacts(trainer.loggers, [plot])  # MLflow only; the patch figure went at the end of fit

        metrics_csv = None
        if self.execution.logger == "csv" and trainer.logger is not None and trainer.logger.log_dir:
            candidate = Path(trainer.logger.log_dir) / "metrics.csv"
            metrics_csv = candidate if candidate.is_file() else None

        trained = module.model.to("cpu").eval()
        return TrainResult(
            model=trained,
            history=history,
            input_scale=float(dm.input_scale),
            intensity_scale=float(dm.intensity_scale),
            nphotons=float(dm.nphotons),
            nphotons_source=dm.nphotons_source,
            checkpoint_dir=ckpt_dir,
            best_checkpoint=best,
            last_checkpoint=last,
            loss_plot=plot,
            metrics_csv=metrics_csv,
            epochs_completed=epochs_completed,
        )
