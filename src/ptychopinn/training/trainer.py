"""Construction of the Lightning ``Trainer``: hardware, precision, callbacks, loggers, checkpoints.

Output layout under ``output_dir``::

    checkpoints/last.ckpt              state after the last completed epoch (resume from here)
    checkpoints/best-epoch=EEE.ckpt    lowest val_loss (train_loss without validation)
    logs/version_K/metrics.csv         per-epoch metrics (logger 'csv'; each run or resume is a new K)
    logs/...                           TensorBoard events (logger 'tensorboard')
    mlruns/                            MLflow file store (logger 'mlflow')

Checkpoints are written at the END of each training epoch, after validation, so that everything an epoch
produced (including the loss history kept by :class:`LossHistory`) is in the checkpoint of that epoch.
They are written atomically (:class:`AtomicCheckpointIO`): a kill mid-write leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ptychopinn.config import ExecutionConfig, TrainingConfig
from ptychopinn.errors import ConfigError
from ptychopinn.io.atomic import remove_stale_temp_files, temp_prefix_suffix
from ptychopinn.runtime import uses_cuda
from ptychopinn.training.guards import StopOnInterrupt

__all__ = ["LAST_NAME", "AtomicCheckpointIO", "DivergenceGuardedCheckpoint", "EpochLog", "LossHistory",
           "StderrProgressBar", "build_trainer", "check_hardware", "check_logger_available", "is_distributed",
           "checkpoint_paths", "find_callback", "map_accelerator", "map_precision", "remove_stale_temp_files",
           "with_filename"]

LAST_NAME = "last"
"""Stem of the checkpoint written at the end of every epoch (``checkpoints/last.ckpt``)."""

_OPTIONAL_LOGGERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "ptychopinn[tensorboard]"),
    "mlflow": (("mlflow",), "ptychopinn[mlflow]"),
}


def check_logger_available(logger: str) -> None:
    """Raise :class:`ConfigError` when ``logger`` needs an optional package that is not installed."""
    if logger not in _OPTIONAL_LOGGERS:
        return
    modules, extra = _OPTIONAL_LOGGERS[logger]
    if not any(importlib.util.find_spec(m) is not None for m in modules):
        raise ConfigError(f"logger '{logger}' needs the optional extra, which is not installed: "
                          f"pip install '{extra}' (or use logger 'csv')")


def map_accelerator(accelerator: str) -> str:
    """Lightning accelerator name: 'gpu' and 'cuda' both mean 'gpu'; others pass through."""
    return "gpu" if accelerator in ("gpu", "cuda") else accelerator


def map_precision(precision: str) -> str:
    """Lightning precision name: '32' is '32-true'; mixed precisions pass through."""
    return "32-true" if precision == "32" else precision



def with_filename(exc: BaseException, path: str | Path) -> BaseException:
    """``exc`` itself, or for an ``OSError`` without a file name (a failed write: disk full, I/O error) the same
    error type with ``path`` as its file name, so that the one-line CLI message says which file failed."""
    if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
        return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    return exc


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file next to the target, fsync, then ``os.replace`` over the target;
    loading always passes ``weights_only=True`` (a checkpoint never unpickles code).

    Lightning's own local writer stages the bytes in the system temp folder and ``shutil.move``s them,
    which copies straight into the final name (not atomic) when that folder is on another file system,
    and leaves an orphan in the temp folder when the process is killed. Here a kill at any point leaves
    either the previous checkpoint or the new one under the final name, never a truncated file; the
    ``.NAME.*.tmp`` a kill may leave is removed by :func:`remove_stale_temp_files` on the next run.
    Remote paths (``scheme://``) keep Lightning's behaviour.
    """

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Read a checkpoint with ``torch.load(weights_only=True)``, whatever the caller or the environment
        (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) asks: a checkpoint is data and must never run code."""
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix, suffix = temp_prefix_suffix(target.name)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp_name, 0o644)  # mkstemp makes 0600
            os.replace(tmp_name, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            named = with_filename(exc, target)
            if named is not exc:  # e.g. disk full while writing: name the file in the message
                raise named from exc
            raise
        with contextlib.suppress(OSError):  # make the rename durable (best effort)
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


class LossHistory(Callback):
    """Collects per-epoch ``train_loss`` and ``val_loss`` (floats) at the end of every training epoch.

    The history is part of the callback state, so it is saved in every checkpoint and restored when
    training resumes from one: after a resume ``history`` covers all epochs, not only the new ones.
    Epochs cut short by divergence (module attribute ``diverged``) are not recorded.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "diverged", False):
            return
        metrics = trainer.callback_metrics
        for key in ("train_loss", "val_loss"):
            if key in metrics:
                self.history[key].append(float(metrics[key]))

    def state_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self.history.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [float(x) for x in v] for k, v in state_dict.items()}
        for key in ("train_loss", "val_loss"):
            self.history.setdefault(key, [])


class StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, drawn on stderr (Lightning draws on stdout, which mixes the bar into
    redirected output: ``ptychopinn train ... > log`` would fill the file with carriage returns)."""

    def init_sanity_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):  # Lightning reads sys.stdout when it builds the bar
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_predict_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_predict_tqdm()

    def init_test_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_test_tqdm()


class EpochLog(Callback):
    """Writes the model size once and each epoch's losses and duration to the ``ptychopinn.training`` logger
    (INFO: the command line's ``run.log``), in place of Lightning's model-summary box."""

    def __init__(self) -> None:
        self._log = logging.getLogger("ptychopinn.training")
        self._t0 = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = sum(p.numel() for p in pl_module.parameters())
        n_train = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        self._log.info("model %s: %d parameters (%d trainable); %d epochs at most on %s",
                       type(getattr(pl_module, "model", pl_module)).__name__, n, n_train, trainer.max_epochs,
                       type(trainer.accelerator).__name__.replace("Accelerator", "").lower() or "?")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        parts = [f"{k} {float(m[k]):.5g}" for k in ("train_loss", "val_loss") if k in m]
        self._log.info("epoch %d: %s (%.1f s)", trainer.current_epoch, ", ".join(parts) or "no loss",
                       time.perf_counter() - self._t0)


class DivergenceGuardedCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes nothing once the module has diverged (attribute ``diverged``).

    Lightning still runs the end-of-epoch hooks after a stop request; without this guard they would
    overwrite ``last.ckpt`` with the state at the moment of divergence.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any,
                           **kwargs: Any) -> None:
        if not getattr(pl_module, "diverged", False):
            super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not getattr(pl_module, "diverged", False):
            super().on_exception(trainer, pl_module, exception)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not getattr(pl_module, "diverged", False):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not getattr(pl_module, "diverged", False):
            super().on_validation_end(trainer, pl_module)


def check_hardware(execution: ExecutionConfig) -> None:
    """Raise :class:`ConfigError` when ``execution`` asks for hardware this machine does not have (a GPU where
    there is none, more GPUs than installed), before Lightning fails on it deep inside."""
    accelerator = map_accelerator(execution.accelerator)
    devices = execution.devices
    if accelerator == "gpu":
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(f"accelerator '{execution.accelerator}': expected a CUDA GPU, found none on this "
                              "machine (torch.cuda.is_available() is False); use accelerator 'cpu' or 'auto'")
        if isinstance(devices, int) and devices > count:
            raise ConfigError(f"devices: expected at most the {count} CUDA GPU(s) of this machine, got {devices}; "
                              "lower --devices (per node) or use 'auto'")
    elif accelerator == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("accelerator 'mps': expected an Apple GPU (MPS), found none on this machine; use "
                              "accelerator 'cpu' or 'auto'")
    elif isinstance(devices, int) and (accelerator == "cpu" or not torch.cuda.is_available()):
        cores = os.cpu_count() or 1
        if devices > _MAX_PROCESSES_PER_CORE * cores:
            raise ConfigError(f"devices: on the CPU each device is a training process; expected at most "
                              f"{_MAX_PROCESSES_PER_CORE * cores} for this machine's {cores} cores, got {devices}; "
                              "lower --devices")


_MAX_PROCESSES_PER_CORE = 4


def is_distributed(execution: ExecutionConfig) -> bool:
    """Whether ``execution`` runs more than one training process (a DDP process group)."""
    devices = execution.devices
    many_devices = devices == "auto" and torch.cuda.device_count() > 1 or isinstance(devices, int) and devices > 1
    return execution.strategy.startswith("ddp") or execution.num_nodes > 1 or many_devices


def _strategy(execution: ExecutionConfig) -> Any:
    """The Lightning strategy: a name, or for distributed runs a ``DDPStrategy`` whose process group gives up
    after ``execution.rendezvous_timeout`` seconds instead of torch's 30 minutes."""
    if not is_distributed(execution):
        return execution.strategy
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(
        timeout=timedelta(seconds=execution.rendezvous_timeout),
        start_method="spawn" if execution.strategy == "ddp_spawn" else "popen",
        find_unused_parameters=execution.strategy == "ddp_find_unused_parameters_true",
    )


def _build_logger(kind: str, output_dir: Path) -> Any:
    check_logger_available(kind)
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(output_dir), name="logs")
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        # no placeholder hp_metric of -1 at the start: ValidationImages reports the best loss at the end
        return TensorBoardLogger(save_dir=str(output_dir), name="logs", default_hp_metric=False)
    if kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        # MLflow 3 refuses a plain-file tracking store unless opted in. This logger is a local file store
        # by design (no server, no database package), so opt in unless the user decided otherwise.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return MLFlowLogger(experiment_name="ptychopinn",
                            tracking_uri=(output_dir / "mlruns").resolve().as_uri())
    return False


def build_trainer(execution: ExecutionConfig, training: TrainingConfig, output_dir: str | Path, *,
                  has_val: bool) -> L.Trainer:
    """Build the ``Trainer`` for one training run.

    Args:
        execution: hardware, precision, parallelism, logging and checkpoint settings.
        training: ``nepochs`` (max epochs) and ``early_stop_patience``.
        output_dir: run folder; checkpoints go to ``output_dir/checkpoints``, logs to ``output_dir/logs``.
        has_val: whether a validation set exists (checkpoints and early stopping then monitor
            ``val_loss``, else ``train_loss``; validation is switched off when False).

    Side effect: ``torch.set_num_threads(execution.num_threads)`` when that is set (process-wide; the
    caller restores it if it must).

    Raises:
        ConfigError: an optional logger ('tensorboard', 'mlflow') whose package is not installed, hardware
            this machine does not have (:func:`check_hardware`), or settings Lightning refuses.
    """
    from ptychopinn.logs import adopt_lightning_logging

    check_hardware(execution)
    out = Path(output_dir)
    adopt_lightning_logging()  # inside the command line: Lightning's messages go to run.log, not the console
    logger = _build_logger(execution.logger, out)
    if execution.num_threads is not None:
        torch.set_num_threads(execution.num_threads)
    monitor = "val_loss" if has_val else "train_loss"
    quiet = not execution.enable_progress_bar

    callbacks: list[Callback] = [LossHistory(), EpochLog()]
    if execution.enable_checkpointing:
        ckpt_dir = str(out / "checkpoints")
        remove_stale_temp_files(ckpt_dir, ".ckpt")
        # last.ckpt has its own callback: since Lightning 2.6 ``save_last`` only refreshes last.ckpt in an
        # epoch that also wrote a top-k file, which would leave a stale resume point after a non-improving
        # epoch. A monitor-free top-1 checkpoint named 'last' is overwritten every epoch instead.
        callbacks.append(DivergenceGuardedCheckpoint(
            dirpath=ckpt_dir, filename=LAST_NAME, monitor=None, save_top_k=1, save_last=False,
            save_on_train_epoch_end=True, enable_version_counter=False,
        ))
        if execution.checkpoint_save_top_k > 0:
            callbacks.append(DivergenceGuardedCheckpoint(
                dirpath=ckpt_dir, filename="best-{epoch:03d}", monitor=monitor, mode="min", save_last=False,
                save_top_k=execution.checkpoint_save_top_k, save_on_train_epoch_end=True,
            ))
    if training.early_stop_patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=training.early_stop_patience,
                                       check_on_train_epoch_end=True, check_finite=False))
    if not quiet:
        callbacks.append(StderrProgressBar())
    if logger is not False:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if execution.logger in ("tensorboard", "mlflow"):
        from ptychopinn.training.images import ValidationImages

        callbacks.append(ValidationImages(figure_path=out / "checkpoints" / "validation_patch.png"))
    callbacks.append(StopOnInterrupt())  # Ctrl-C stops at the end of a batch, never inside a checkpoint write

    # Strict deterministic algorithms raise on CUDA for the scatter-add (index_add_) with which the overlap
    # constraint places patches; 'warn' keeps every other op deterministic there. On CPU everything is.
    deterministic: bool | Literal["warn"] = False
    if execution.deterministic:
        deterministic = "warn" if uses_cuda(map_accelerator(execution.accelerator)) else True

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return _make_trainer(execution, training, out, callbacks, logger, deterministic, quiet, has_val)
    except MisconfigurationException as exc:  # a combination the checks above did not foresee, as one line
        first = " ".join(str(exc).split())[:300]
        raise ConfigError(f"execution settings refused by Lightning: {first}; change the execution settings "
                          "(accelerator, devices, strategy, precision)") from None


def _make_trainer(execution: ExecutionConfig, training: TrainingConfig, out: Path, callbacks: list[Callback],
                  logger: Any, deterministic: bool | Literal["warn"], quiet: bool, has_val: bool) -> L.Trainer:
    return L.Trainer(
        accelerator=map_accelerator(execution.accelerator),
        devices=execution.devices,
        num_nodes=execution.num_nodes,
        strategy=_strategy(execution),
        precision=map_precision(execution.precision),  # type: ignore[arg-type]
        deterministic=deterministic,
        gradient_clip_val=execution.gradient_clip_val,
        gradient_clip_algorithm=execution.gradient_clip_algorithm,
        accumulate_grad_batches=execution.accumulate_grad_batches,
        max_epochs=training.nepochs,
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=execution.enable_checkpointing,
        enable_progress_bar=not quiet,
        # Lightning's summary box goes to stdout and reports "FLOPs 0"; EpochLog logs the parameter count.
        enable_model_summary=False,
        limit_val_batches=None if has_val else 0,
        num_sanity_val_steps=0 if not has_val else 2,
        # Every metric is logged per epoch (on_step=False), so this only decides how often Lightning looks
        # for step metrics; 1 avoids its "fewer batches than the logging interval" warning on small data.
        log_every_n_steps=1,
        default_root_dir=str(out),
        plugins=[AtomicCheckpointIO()],  # also when not saving: it is what reads a checkpoint on resume
    )


def checkpoint_paths(trainer: L.Trainer) -> tuple[Path | None, Path | None]:
    """``(best, last)`` checkpoint files written by the callbacks of :func:`build_trainer` (None if absent)."""
    best = last = None
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, DivergenceGuardedCheckpoint) and cb.best_model_path:
            path = Path(cb.best_model_path)
            if not path.is_file():
                continue
            if cb.monitor is None:
                last = path
            else:
                best = path
    return best, last


def find_callback(trainer: L.Trainer, kind: type[Callback]) -> Any:
    """The first callback of type ``kind`` on ``trainer``, or None."""
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, kind):
            return cb
    return None

