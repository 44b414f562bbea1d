"""The Lightning module: a thin training shell around :class:`~ptychopinn.models.pinn.PtychoPINN`.

The physics lives in the model and the loss terms in :mod:`ptychopinn.training.losses`; this module only
logs, configures the
optimiser and learning-rate schedule, and guards against a diverging loss. It uses Lightning's automatic
optimisation so that the Trainer's gradient clipping and gradient accumulation work (the reference's
manual optimisation silently disabled both and never stepped most schedulers).

Checkpoints stay loadable with ``torch.load(weights_only=True)``: the hyper-parameters saved in them are
plain containers only (dicts of str/int/float/bool/None, floats); the probe travels in the state dict as a
buffer of the model, not in the hyper-parameters.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch

from ptychopinn.config import ModelConfig, TrainingConfig
from ptychopinn.errors import ConfigError
from ptychopinn.training.losses import compute_losses

__all__ = ["PINNLightningModule", "cosine_lr_factor"]


def cosine_lr_factor(epoch: int, *, warmup_epochs: int, nepochs: int, lr: float, min_lr: float) -> float:
    """Multiplier of the base learning rate for epoch ``epoch`` (0-based) of the 'cosine' schedule.

    Linear warm-up for ``warmup_epochs`` epochs (``lr * (e + 1) / (W + 1)``, reaching ``lr`` at epoch W),
    then cosine decay from ``lr`` at epoch W to ``min_lr`` at epoch ``nepochs`` (clamped after that):
    ``min_lr + (lr - min_lr) * (1 + cos(pi * (e - W) / (nepochs - W))) / 2``.
    """
    w = warmup_epochs
    if epoch < w:
        return (epoch + 1) / (w + 1)
    span = max(1, nepochs - w)
    progress = min(1.0, (epoch - w) / span)
    target = min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return target / lr


def _plain(value: Any) -> Any:
    """Convert numpy scalars / tuples inside a config dict to plain Python (weights_only-safe) values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class PINNLightningModule(L.LightningModule):
    """Trains a :class:`PtychoPINN` on batches ``{'x', 'offsets'[, 'y']}`` from the data module.

    Args:
        model_config: ``ModelConfig.to_dict()``.
        training_config: ``TrainingConfig.to_dict()`` (loss weights, learning rate, scheduler).
        probe: ``[N, N]`` complex probe (numpy or tensor) on the object pixel grid.
        intensity_scale: photon scale ``s = sqrt(nphotons) / (N/2)`` used by the likelihood.
        input_scale: input normalisation ``a`` of the training data (recorded for inference).
        has_validation: whether a validation set exists (the plateau scheduler then monitors
            ``val_loss``, otherwise ``train_loss``).

    Attributes:
        model: the :class:`PtychoPINN` being trained. diverged: True once a non-finite training loss was
        met; diverged_epoch / diverged_step: where (0-based epoch, global optimiser step).
    """

    def __init__(self, model_config: dict[str, Any], training_config: dict[str, Any], probe: Any,
                 intensity_scale: float, input_scale: float, has_validation: bool = False) -> None:
        super().__init__()
        from ptychopinn.models.pinn import PtychoPINN

        mcfg = ModelConfig.from_dict(dict(model_config))
        tcfg = TrainingConfig.from_dict({k: v for k, v in dict(training_config).items()
                                         if k not in TrainingConfig.RETIRED_FIELDS})
        for name, v in (("intensity_scale", intensity_scale), ("input_scale", input_scale)):
            if not (isinstance(v, (int, float, np.floating)) and math.isfinite(float(v)) and float(v) > 0):
                raise ConfigError(f"{name}: expected a finite number > 0, found {v!r}; "
                                  "take it from PtychoDataModule")
        # save_hyperparameters reads the __init__ arguments from this frame, so rebind them to their plain,
        # validated forms first (weights_only-loadable checkpoints); the probe array is left out on purpose.
        model_config, training_config = _plain(mcfg.to_dict()), _plain(tcfg.to_dict())
        intensity_scale, input_scale = float(intensity_scale), float(input_scale)
        has_validation = bool(has_validation)
        self.save_hyperparameters("model_config", "training_config", "intensity_scale", "input_scale",
                                  "has_validation")
        self.model_config, self.training_config = mcfg, tcfg
        probe_t = probe if isinstance(probe, torch.Tensor) else torch.from_numpy(np.asarray(probe))
        self.model = PtychoPINN(mcfg, probe_t.to(torch.complex64), float(intensity_scale))
        self.input_scale = float(input_scale)
        self.has_validation = bool(has_validation)
        self.diverged = False
        self.diverged_epoch: int | None = None
        self.diverged_step: int | None = None

    # ------------------------------------------------------------------------------------------ steps
    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor | None:
        """Losses of one batch, logged as ``{stage}_loss`` and ``{stage}_{term}`` (epoch means).

        Returns the total loss, or None for a batch whose loss is not finite (nothing logged; a validation
        batch then marks the run diverged).
        """
        x, rel = batch["x"], batch["offsets"]
        losses = compute_losses(self.model, x, rel, self.training_config, y=batch.get("y"),
                                weights=batch.get("weights"))
        bs = int(x.shape[0])
        loss = losses["loss"]
        if not self._all_finite(loss):
            if stage == "train":
                return None
            # weights that give NaN/Inf on held-out data have diverged too (e.g. an absurd learning rate
            # took one step to enormous weights): stop before the end-of-epoch checkpoint stores them
            self._mark_diverged()
            return None
        self.log(f"{stage}_loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True,
                 sync_dist=True, batch_size=bs)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"{stage}_{name}", value.detach(), on_step=False, on_epoch=True, sync_dist=True,
                         batch_size=bs)
        return loss

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = bool(torch.isfinite(loss.detach()).all())
        trainer = self._trainer
        if trainer is not None:
            # Every rank must take the same decision, or DDP would hang in the gradient all-reduce.
            finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        return finite

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        loss = self._step(batch, "train")
        if loss is None:
            # Skip this optimiser step (returning None) and stop: the weights stay those of the last
            # finite step, checkpoints are no longer written, and the api raises TrainingDivergedError.
            self._mark_diverged()
            return None
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A finite loss can still take a step to NaN/Inf weights (an absurd learning rate): stop before a
        # checkpoint or the archive stores them (the end-of-epoch checkpoint runs after this hook).
        if not self.diverged and not self._all_finite(self._weights_finite()):
            self._mark_diverged()

    def _weights_finite(self) -> torch.Tensor:
        finite = [torch.isfinite(p.detach()).all() for p in self.parameters()]
        return torch.stack(finite).all() if finite else torch.tensor(True)

    def _mark_diverged(self) -> None:
        if not self.diverged:
            self.diverged = True
            self.diverged_epoch = int(self.current_epoch)
            self.diverged_step = int(self.global_step)
            if self._trainer is not None:
                self.trainer.should_stop = True
                # Also as a metric: with strategy 'ddp_spawn' only the trainer's metrics (not this module's
                # attributes) travel back from the worker processes to the caller.
                self.log("diverged_epoch", float(self.current_epoch), on_step=False, on_epoch=True,
                         reduce_fx="max", batch_size=1)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        return self._step(batch, "val")

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Predicted complex patches ``[B, C, N, N]`` complex64 for normalised ``x`` ``[B, C, N, N]``."""
        return self.model.predict_patches(x, offsets)

    # ------------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> Any:
        """Adam(lr) plus the configured per-epoch learning-rate schedule.

        'constant': none. 'exponential': ``lr * gamma**epoch``. 'cosine': see :func:`cosine_lr_factor`.
        'plateau': multiply by ``plateau_factor`` after ``plateau_patience`` epochs without improvement of
        ``val_loss`` (``train_loss`` without validation), never below ``min_learning_rate``.
        """
        t = self.training_config
        opt = torch.optim.Adam(self.parameters(), lr=t.learning_rate)
        if t.scheduler == "constant":
            return opt
        if t.scheduler == "exponential":
            sched: Any = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=t.scheduler_gamma)
        elif t.scheduler == "cosine":
            lr, warm, n, lo = t.learning_rate, t.warmup_epochs, t.nepochs, t.min_learning_rate
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda e: cosine_lr_factor(e, warmup_epochs=warm, nepochs=n, lr=lr, min_lr=lo))
        elif t.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=t.plateau_factor, patience=t.plateau_patience,
                min_lr=t.min_learning_rate)
            monitor = "val_loss" if self.has_validation else "train_loss"
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch",
                                                       "frequency": 1, "monitor": monitor,
                                                       "strict": True}}
        else:  # unreachable: TrainingConfig validates the name
            raise ConfigError(f"scheduler: expected constant/exponential/cosine/plateau, found {t.scheduler!r}")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch", "frequency": 1}}
