"""Fine-tune a trained network on the scan it is about to reconstruct, with the physics loss alone.

The Poisson loss compares the network's predicted diffraction with the measured patterns, so it needs no
ground truth: a network trained on other data can be adapted to a new scan before it predicts that scan.
:func:`adapt_model` builds an ordinary training run on the scan (:func:`~ptychopinn.training.run.prepare_training`),
puts the trained generator's weights into it and trains for a few epochs.

Normalisation: the run's data module computes the scan's own input scale ``a`` (over all its patterns, as
:func:`~ptychopinn.inference.predict.reconstruct` does for a new scan) and its measured photon scale; the
adapted network is built with those, the scan's probe and the loaded network's :class:`ModelConfig`, so
what it was adapted on is exactly what inference feeds it (:attr:`AdaptResult.input_scale`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ptychopinn.config import ExecutionConfig, TrainingConfig
from ptychopinn.config_fields import is_int, is_num
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError

if TYPE_CHECKING:
    from ptychopinn.models.pinn import PtychoPINN
    from ptychopinn.training.data import PtychoDataModule
    from ptychopinn.training.module import PINNLightningModule

__all__ = ["ADAPT_LEARNING_RATE", "AdaptResult", "AdaptationDivergedError", "adapt_model"]

ADAPT_LEARNING_RATE = 3e-4
"""Default Adam learning rate of :func:`adapt_model`, a third of training's 1e-3: of 1e-4, 3e-4 and 1e-3 it was
the best or within 0.012 SSIM of the best on every unseen-scan measurement (README "Train on the scan itself,
adapt to a new scan, train before the sample")."""

ADAPT_BATCH_SIZE = 16
"""Default groups per optimiser step of :func:`adapt_model` (training's default)."""

_LOSS_BATCH = 64  # groups per forward pass when the loss of the whole scan is measured


class AdaptationDivergedError(RuntimeError, ConfigError):
    """The loss became NaN or infinite while adapting: the learning rate is too high for this network and scan.
    A :class:`ConfigError` too, so the command line reports it on one line with exit code 2."""


@dataclass(frozen=True, eq=False)
class AdaptResult:
    """What :func:`adapt_model` produced.

    Attributes:
        model: the adapted ``PtychoPINN`` on CPU in eval mode; its physics holds the scan's probe and photon
            scale (the generator is what inference uses).
        history: per-epoch mean Poisson loss (normalised deviance, dimensionless) while training, one per epoch.
        loss_before: Poisson loss of all the scan's groups before adaptation (the loaded generator, the scan's
            probe and scales); loss_after: the same after.
        input_scale: ``a``, the amplitude factor the network saw (the scan's own; pass it to ``reconstruct``).
        intensity_scale: ``s0 = sqrt(nphotons) / (N/2)`` measured on the scan.
        epochs: epochs trained. learning_rate: Adam's. seconds: wall time of the whole adaptation (building,
            training, both losses).
    """

    model: PtychoPINN = field(repr=False)
    history: list[float]
    loss_before: float
    loss_after: float
    input_scale: float
    intensity_scale: float
    epochs: int
    learning_rate: float
    seconds: float

    def metadata(self) -> dict[str, Any]:
        """What was done, as JSON-ready ``adapt_*`` entries for a reconstruction's metadata."""
        return {"adapt_epochs": self.epochs, "adapt_learning_rate": self.learning_rate,
                "adapt_seconds": self.seconds, "adapt_loss_before": self.loss_before,
                "adapt_loss_after": self.loss_after, "adapt_history": list(self.history),
                "adapt_input_scale": self.input_scale}


def adapt_model(
    model: PtychoPINN,
    scan: ScanData,
    *,
    epochs: int,
    learning_rate: float = ADAPT_LEARNING_RATE,
    batch_size: int = ADAPT_BATCH_SIZE,
    seed: int = 0,
    accelerator: str = "auto",
    progress: bool = False,
) -> AdaptResult:
    """Fine-tune a copy of ``model``'s generator on ``scan`` with the Poisson loss for ``epochs`` epochs.

    Every group of the scan is trained on (no validation split: the scan is the only data, and all of it is
    reconstructed); the learning rate is constant. Nothing is written: the Trainer works in a temporary
    folder (no checkpoints, no logger) that is removed afterwards. ``model`` itself is left unchanged.

    Args:
        model: a trained ``PtychoPINN`` (e.g. ``load_model(path).model``); its ``config`` builds the copy.
        scan: the scan to adapt on: ``diffraction`` ``[M, N, N]`` float32 amplitude sqrt(counts), ``positions``
            ``[M, 2]`` float64 (x, y) object pixels, ``probe`` ``[N, N]`` complex64 (ScanData always has one);
            ``N`` must be the model's. Ground truth in it is never used.
        epochs: passes over the scan (>= 1).
        learning_rate: Adam learning rate (> 0).
        batch_size: groups per optimiser step (>= 1).
        seed: seeds shuffling (and anything else random) so that two runs give the same weights.
        accelerator: 'auto', 'cpu', 'gpu', ... as :class:`~ptychopinn.config.ExecutionConfig`.
        progress: show Lightning's progress bar on stderr.

    Returns:
        :class:`AdaptResult`.

    Raises:
        ConfigError: a bad ``epochs``, ``learning_rate``, ``batch_size`` or ``seed``, or patterns of another
            size than the model's.
        AdaptationDivergedError: the loss became non-finite (lower ``learning_rate``).
        KeyboardInterrupt: Ctrl-C (nothing was written).
    """
    from ptychopinn.inference.predict import check_scan_fits_model
    from ptychopinn.runtime import resolve_device
    from ptychopinn.training.run import TrainingDivergedError, prepare_training

    t0 = time.perf_counter()
    if not is_int(epochs) or epochs < 1:
        raise ConfigError(f"epochs: expected a positive integer number of adaptation epochs, found {epochs!r}; "
                          "e.g. 5")
    if not is_num(learning_rate) or learning_rate <= 0:
        raise ConfigError(f"learning_rate: expected a finite number > 0, found {learning_rate!r}; "
                          f"e.g. {ADAPT_LEARNING_RATE:g}")
    if not isinstance(scan, ScanData):
        raise ConfigError(f"scan: expected a ScanData, found {type(scan).__name__}; load it with ptychopinn.io")
    check_scan_fits_model(model.config, scan)
    cfg = model.config
    training = TrainingConfig(nepochs=epochs, batch_size=batch_size, learning_rate=float(learning_rate),
                              nll_weight=1.0, mae_weight=0.0, val_fraction=0.0, seed=seed)
    execution = ExecutionConfig(accelerator=accelerator, logger="none", enable_checkpointing=False,
                                enable_progress_bar=progress)

    def build(dm: PtychoDataModule) -> PINNLightningModule:
        from ptychopinn.training.module import PINNLightningModule

        module = PINNLightningModule(cfg.to_dict(), training.to_dict(), scan.probe, dm.intensity_scale,
                                     dm.input_scale, has_validation=False)
        module.model.generator.load_state_dict(model.generator.state_dict())
        with torch.no_grad():  # a learned gain s / s0 (intensity_scale_trainable) carries over to the new s0
            module.model.log_intensity_scale.copy_(module.model.log_data_intensity_scale
                                                   + model.log_intensity_scale - model.log_data_intensity_scale)
        return module

    with tempfile.TemporaryDirectory(prefix="ptychopinn-adapt-") as tmp:
        run = prepare_training(scan, model=cfg, training=training, execution=execution, output_dir=tmp,
                               module_factory=build)
        device = resolve_device(accelerator)  # the loss passes run where training does
        before = _scan_loss(run.module.model, run.datamodule, training, device)
        try:
            result = run.fit(loss_plot=False)
        except TrainingDivergedError:
            raise AdaptationDivergedError(
                f"adaptation diverged (non-finite loss) with learning rate {learning_rate:g}; lower it (e.g. "
                f"{learning_rate / 3:.2g}) or adapt for fewer epochs") from None
        except KeyboardInterrupt:
            raise KeyboardInterrupt("adaptation stopped by Ctrl-C; nothing was written") from None
    adapted = result.model
    after = _scan_loss(adapted, run.datamodule, training, device)
    adapted.to("cpu")
    seconds = time.perf_counter() - t0
    logging.getLogger("ptychopinn").info(
        "adaptation: %d epochs on %d patterns in %.1f s, learning rate %g, Poisson loss %.5g -> %.5g",
        epochs, scan.n_points, seconds, learning_rate, before, after)
    return AdaptResult(model=adapted, history=[float(v) for v in result.history.get("train_loss", [])],
                       loss_before=before, loss_after=after, input_scale=float(result.input_scale),
                       intensity_scale=float(result.intensity_scale), epochs=epochs,
                       learning_rate=float(learning_rate), seconds=seconds)


def _scan_loss(model: PtychoPINN, dm: PtychoDataModule, training: TrainingConfig, device: torch.device) -> float:
    """Mean Poisson loss of every training group of ``dm`` (float, normalised deviance), in eval mode."""
    from ptychopinn.training.losses import compute_losses

    data = dm.train_dataset
    was_training = model.training
    model.to(device).eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(data), _LOSS_BATCH):
                batch = data.__getitems__(list(range(start, min(start + _LOSS_BATCH, len(data)))))
                weights = batch.get("weights")
                losses = compute_losses(model, batch["x"].to(device), batch["offsets"].to(device), training,
                                        weights=None if weights is None else weights.to(device))
                b = int(batch["x"].shape[0])
                total += float(losses["poisson"]) * b
                count += b
    finally:
        model.train(was_training)
    return total / max(count, 1)
