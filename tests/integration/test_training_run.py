"""The two-step training run (``prepare_training`` then ``TrainingRun.fit``) that the ptychodus plugin's
``Trainer`` drives: the caller's module factory and callbacks are used, torch's process-wide settings come
back, and a run fits once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ptychopinn.config import ExecutionConfig, ModelConfig, SimulationConfig, TrainingConfig
from ptychopinn.simulate.simulator import simulate_scan
from ptychopinn.training.module import PINNLightningModule
from ptychopinn.training.run import prepare_training

N = 32


class _Tagged(PINNLightningModule):
    tag = "built by the factory"


class _EpochCounter(Callback):
    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.epochs += 1


def test_prepared_run_uses_the_callers_module_and_callbacks_and_gives_torch_settings_back(tmp_path: Path) -> None:
    scan = simulate_scan(SimulationConfig(N=N, object_size=96, nphotons=1e6, n_points=24, seed=3))
    model, training = ModelConfig(N=N, n_filters_scale=1), TrainingConfig(nepochs=2, batch_size=8)
    seen: list[float] = []

    def factory(dm) -> _Tagged:  # noqa: ANN001
        seen.append(dm.intensity_scale)
        return _Tagged(model.to_dict(), training.to_dict(), scan.probe, dm.intensity_scale, dm.input_scale,
                       has_validation=dm.has_val)

    det_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        run = prepare_training(scan, model=model, training=training, output_dir=tmp_path / "run",
                               execution=ExecutionConfig(accelerator="cpu", enable_progress_bar=False,
                                                         num_workers=0, logger="none", deterministic=True),
                               module_factory=factory)
        assert isinstance(run.module, _Tagged) and seen == [run.datamodule.intensity_scale]
        counter = _EpochCounter()
        run.trainer.callbacks.append(counter)
        result = run.fit(loss_plot=False)
        assert torch.are_deterministic_algorithms_enabled() is False  # the run's setting was given back
    finally:
        torch.use_deterministic_algorithms(det_before)

    assert counter.epochs == 2 and result.epochs_completed == 2 and len(result.history["train_loss"]) == 2
    assert result.model is run.module.model and not result.model.training
    assert result.loss_plot is None and not (tmp_path / "run" / "checkpoints" / "loss_curves.png").exists()
    assert result.last_checkpoint == tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(RuntimeError, match="fitted already"):
        run.fit()
