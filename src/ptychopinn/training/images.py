"""Pictures for the experiment trackers: a fixed validation patch every few epochs, the final figures, and
``hp_metric`` = the best validation loss.

TensorBoard and MLflow are told apart by what their ``experiment`` object offers, as Lightning hands it
out: a TensorBoard ``SummaryWriter`` has ``add_image(tag, img, global_step, dataformats)``; an
``MlflowClient`` has ``log_image(run_id, image, artifact_file)`` and ``log_artifact(run_id, path,
artifact_path)`` (the logger carries ``run_id``). Loggers without either (CSV) receive nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

__all__ = ["IMAGE_EVERY_N_EPOCHS", "ValidationImages", "send_artifacts"]

IMAGE_EVERY_N_EPOCHS = 5
"""Epochs between two validation-patch images (the first and the last epoch always get one)."""

_TAG = "validation_patch"
_log = logging.getLogger(__name__)


def _tensorboard(logger: Any) -> Any:
    exp = getattr(logger, "experiment", None)
    return exp if callable(getattr(exp, "add_image", None)) else None


def _mlflow(logger: Any) -> Any:
    exp = getattr(logger, "experiment", None)
    ok = callable(getattr(exp, "log_image", None)) and getattr(logger, "run_id", None) is not None
    return exp if ok else None


def send_artifacts(loggers: Iterable[Any], paths: Iterable[Path | None], artifact_path: str = "figures") -> int:
    """Upload the existing files among ``paths`` to every MLflow logger in ``loggers``; returns the count."""
    sent = 0
    for logger in loggers:
        client = _mlflow(logger)
        if client is None:
            continue
        for p in paths:
            if p is not None and Path(p).is_file():
                client.log_artifact(logger.run_id, str(p), artifact_path)
                sent += 1
    return sent


class ValidationImages(Callback):
    """Sends one fixed validation sample's measured pattern with its predicted amplitude and phase (a
    :func:`ptychopinn.pictures.patch_figure_rgb` picture, ``[H, W, 3]`` uint8) to the image-capable loggers
    every ``every_n_epochs`` epochs, and reports ``hp_metric`` = the lowest ``val_loss`` (``train_loss``
    without validation) at the end of training; the last picture is also written to ``figure_path``
    (PNG) and uploaded to MLflow as an artifact.

    The sample is the first of the validation loader (the training loader without validation), taken
    once, so every picture shows the same patch.
    """

    def __init__(self, every_n_epochs: int = IMAGE_EVERY_N_EPOCHS, figure_path: str | Path | None = None) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs: expected >= 1, found {every_n_epochs}")
        self.every_n_epochs = int(every_n_epochs)
        self.figure_path = Path(figure_path) if figure_path is not None else None
        self._sample: tuple[torch.Tensor, torch.Tensor] | None = None
        self._best: float | None = None
        self._last_image: np.ndarray | None = None
        self.sent = 0

    # ------------------------------------------------------------------------------------------ sample
    def _fixed_sample(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._sample is None:
            dm = getattr(trainer, "datamodule", None)  # set by Lightning during fit
            loader = None
            if dm is not None:
                loader = dm.val_dataloader() if getattr(dm, "has_val", False) else dm.train_dataloader()
            if loader is None:
                return None
            batch = next(iter(loader))
            self._sample = (batch["x"][:1].detach().cpu(), batch["offsets"][:1].detach().cpu())
        return self._sample

    def _picture(self, trainer: L.Trainer, pl_module: L.LightningModule) -> np.ndarray | None:
        from ptychopinn.pictures import patch_figure_rgb

        sample = self._fixed_sample(trainer)
        if sample is None:
            return None
        x, offsets = (t.to(pl_module.device) for t in sample)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                patch = pl_module(x, offsets)
        finally:
            pl_module.train(was_training)
        pattern = x[0, 0].float().cpu().numpy()
        obj = patch[0, 0].detach().to(torch.complex64).cpu().numpy()
        return patch_figure_rgb(pattern, obj, title=f"epoch {trainer.current_epoch}")

    # ------------------------------------------------------------------------------------------- hooks
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        key = "val_loss" if "val_loss" in m else "train_loss"
        if key in m and not getattr(pl_module, "diverged", False):
            value = float(m[key])
            if np.isfinite(value) and (self._best is None or value < self._best):
                self._best = value
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if epoch % self.every_n_epochs and not last:
            return
        sinks = [lg for lg in trainer.loggers if _tensorboard(lg) is not None or _mlflow(lg) is not None]
        if not sinks:
            return
        img = self._picture(trainer, pl_module)
        if img is None:
            return
        self._last_image = img
        for logger in sinks:
            tb = _tensorboard(logger)
            if tb is not None:
                tb.add_image(_TAG, img, global_step=epoch, dataformats="HWC")
            else:
                run_id = getattr(logger, "run_id", None)  # an MLFlowLogger (checked by _mlflow)
                _mlflow(logger).log_image(run_id, img, artifact_file=f"{_TAG}/epoch_{epoch:04d}.png")
            self.sent += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self._best is not None:
            for logger in trainer.loggers:
                if _tensorboard(logger) is not None:
                    # TensorBoard's HPARAMS tab pairs the run's settings with this number
                    logger.log_hyperparams(dict(pl_module.hparams), {"hp_metric": self._best})
                elif _mlflow(logger) is not None:
                    logger.log_metrics({"hp_metric": self._best}, step=trainer.current_epoch)
            _log.info("hp_metric (best %s loss): %.5g", "validation" if "val_loss" in trainer.callback_metrics
                      else "training", self._best)
        if self._last_image is not None and self.figure_path is not None:
            from ptychopinn.drawing import write_atomic

            img = self._last_image
            import matplotlib.image

            write_atomic(self.figure_path, lambda tmp: matplotlib.image.imsave(tmp, img, format="png"))
            send_artifacts(trainer.loggers, [self.figure_path])
