"""Trainer construction (loggers, accelerator/precision mapping, callbacks) and the LR schedules."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.errors import ConfigError
from ptychopinn.training.module import PINNLightningModule, cosine_lr_factor
from ptychopinn.training.trainer import (
    LossHistory,
    build_trainer,
    check_logger_available,
    find_callback,
    map_accelerator,
    map_precision,
)

N = 32


def _quiet(**kw) -> ExecutionConfig:
    return ExecutionConfig(accelerator="cpu", enable_progress_bar=False, **kw)


def test_accelerator_and_precision_mapping() -> None:
    assert map_accelerator("cuda") == "gpu" and map_accelerator("gpu") == "gpu"
    assert map_accelerator("cpu") == "cpu" and map_accelerator("auto") == "auto"
    assert map_precision("32") == "32-true"
    assert map_precision("bf16-mixed") == "bf16-mixed" and map_precision("16-mixed") == "16-mixed"


def test_csv_trainer_has_expected_callbacks_and_settings(tmp_path) -> None:
    ex = ExecutionConfig(accelerator="cpu", precision="bf16-mixed", gradient_clip_val=0.5,
                         gradient_clip_algorithm="value", accumulate_grad_batches=3, checkpoint_save_top_k=2)
    trainer = build_trainer(ex, TrainingConfig(nepochs=7, early_stop_patience=4), tmp_path, has_val=True)
    assert trainer.max_epochs == 7
    assert trainer.gradient_clip_val == 0.5 and trainer.gradient_clip_algorithm == "value"
    assert trainer.accumulate_grad_batches == 3
    assert trainer.precision == "bf16-mixed"
    assert type(trainer.accelerator).__name__ == "CPUAccelerator"
    ckpts = {cb.filename: cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)}
    assert set(ckpts) == {"last", "best-{epoch:03d}"}
    best, last = ckpts["best-{epoch:03d}"], ckpts["last"]
    assert best.monitor == "val_loss" and best.mode == "min" and best.save_top_k == 2
    assert last.monitor is None and last.save_top_k == 1  # rewritten every epoch
    assert best.dirpath == last.dirpath == str(tmp_path / "checkpoints")
    stop = find_callback(trainer, EarlyStopping)
    assert stop.monitor == "val_loss" and stop.patience == 4
    assert find_callback(trainer, LossHistory) is not None
    assert find_callback(trainer, TQDMProgressBar) is not None
    assert find_callback(trainer, LearningRateMonitor) is not None
    assert str(trainer.logger.log_dir).startswith(str(tmp_path / "logs"))


def test_quiet_no_logger_no_validation(tmp_path) -> None:
    trainer = build_trainer(_quiet(logger="none"), TrainingConfig(), tmp_path, has_val=False)
    assert trainer.logger is None
    assert find_callback(trainer, TQDMProgressBar) is None
    assert find_callback(trainer, LearningRateMonitor) is None
    assert find_callback(trainer, EarlyStopping) is None
    monitors = {cb.monitor for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)}
    assert monitors == {None, "train_loss"}
    assert trainer.precision == "32-true"
    assert trainer.limit_val_batches == 0
    no_best = build_trainer(_quiet(logger="none", checkpoint_save_top_k=0), TrainingConfig(), tmp_path,
                            has_val=False)
    assert [cb.filename for cb in no_best.callbacks if isinstance(cb, ModelCheckpoint)] == ["last"]
    off = build_trainer(_quiet(logger="none", enable_checkpointing=False), TrainingConfig(), tmp_path,
                        has_val=False)
    assert find_callback(off, ModelCheckpoint) is None


def test_num_threads_is_applied(tmp_path) -> None:
    before = torch.get_num_threads()
    try:
        build_trainer(_quiet(logger="none", num_threads=1), TrainingConfig(), tmp_path, has_val=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kind,extra,modules", [
    ("tensorboard", "ptychopinn[tensorboard]", ("tensorboard", "tensorboardX")),
    ("mlflow", "ptychopinn[mlflow]", ("mlflow",)),
])
def test_optional_loggers(tmp_path, kind: str, extra: str, modules: tuple[str, ...]) -> None:
    installed = any(importlib.util.find_spec(m) is not None for m in modules)
    if installed:
        trainer = build_trainer(_quiet(logger=kind), TrainingConfig(), tmp_path, has_val=False)
        assert trainer.logger is not None
        trainer.logger.log_hyperparams({"lr": 1e-3})
        trainer.logger.log_metrics({"train_loss": 0.5}, step=0)
        trainer.logger.finalize("success")
        assert any(tmp_path.iterdir())
    else:
        with pytest.raises(ConfigError, match=re_escape(extra)) as err:
            build_trainer(_quiet(logger=kind), TrainingConfig(), tmp_path, has_val=False)
        assert "\n" not in str(err.value)
        with pytest.raises(ConfigError, match=re_escape(extra)):
            check_logger_available(kind)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


# ---------------------------------------------------------------------------------------- schedulers
def _module(scheduler: str, has_validation: bool = False, **kw) -> PINNLightningModule:
    training = TrainingConfig(scheduler=scheduler, learning_rate=1e-2, nepochs=10, **kw)
    probe = np.ones((N, N), np.complex64)
    return PINNLightningModule(ModelConfig(N=N, n_filters_scale=1).to_dict(), training.to_dict(), probe,
                               intensity_scale=31.25, input_scale=0.5, has_validation=has_validation)


def _lr(opt: torch.optim.Optimizer) -> float:
    return opt.param_groups[0]["lr"]


def _epoch_lrs(config, n_epochs: int, metric: float | None = None) -> list[float]:
    """LR in effect during epochs 0..n-1, stepping the scheduler after each epoch as Lightning does."""
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    lrs = []
    for _ in range(n_epochs):
        lrs.append(_lr(opt))
        opt.step()
        if metric is None:
            sched.step()
        else:
            sched.step(metric)
    return lrs


def test_constant_has_no_scheduler() -> None:
    opt = _module("constant").configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and _lr(opt) == pytest.approx(1e-2)


def test_exponential_steps_per_epoch() -> None:
    lrs = _epoch_lrs(_module("exponential", scheduler_gamma=0.5).configure_optimizers(), 4)
    np.testing.assert_allclose(lrs, [1e-2, 5e-3, 2.5e-3, 1.25e-3], rtol=1e-9)


def test_cosine_warmup_then_decay_to_min() -> None:
    cfg = _module("cosine", warmup_epochs=2, min_learning_rate=1e-4).configure_optimizers()
    lrs = _epoch_lrs(cfg, 12)
    lr0, lo, w, n = 1e-2, 1e-4, 2, 10
    want = [lr0 * (e + 1) / (w + 1) if e < w
            else lo + (lr0 - lo) * 0.5 * (1 + math.cos(math.pi * min(1.0, (e - w) / (n - w))))
            for e in range(12)]
    np.testing.assert_allclose(lrs, want, rtol=1e-9)
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(lr0)  # warm-up reaches the base LR at epoch W
    assert lrs[10] == pytest.approx(lo) and lrs[11] == pytest.approx(lo)  # min at nepochs, then held
    assert cosine_lr_factor(5, warmup_epochs=0, nepochs=10, lr=1.0, min_lr=0.0) == pytest.approx(0.5)


@pytest.mark.parametrize("has_validation,monitor", [(True, "val_loss"), (False, "train_loss")])
def test_plateau_drops_after_patience_on_flat_metric(has_validation: bool, monitor: str) -> None:
    cfg = _module("plateau", has_validation=has_validation, plateau_factor=0.5, plateau_patience=2,
                  min_learning_rate=2e-3).configure_optimizers()
    assert cfg["lr_scheduler"]["monitor"] == monitor
    lrs = _epoch_lrs(cfg, 9, metric=1.0)
    # Epoch 0 sets the best value; after 'patience' + 1 epochs without improvement the LR halves,
    # then again after each further patience + 1 epochs, never below min_learning_rate.
    np.testing.assert_allclose(lrs, [1e-2] * 4 + [5e-3] * 3 + [2.5e-3] * 2, rtol=1e-9)
    more = _epoch_lrs(cfg, 6, metric=1.0)
    assert min(more) == pytest.approx(2e-3)


def test_module_hparams_are_plain_and_probe_is_a_buffer() -> None:
    module = _module("constant")
    hp = dict(module.hparams)
    assert set(hp) == {"model_config", "training_config", "intensity_scale", "input_scale", "has_validation"}

    def plain(v) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or type(v) in (str, int, float, bool)

    assert plain(hp)
    assert any(k.endswith("probe") for k in module.state_dict())


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_module_step_logs_and_skips_nonfinite() -> None:
    module = _module("constant")
    x = torch.rand(4, 1, N, N) * 0.5
    batch = {"x": x, "offsets": torch.zeros(4, 1, 2)}
    loss = module.training_step(batch, 0)
    assert loss is not None and torch.isfinite(loss) and loss.requires_grad
    batch["x"] = x * float("nan")
    assert module.training_step(batch, 1) is None
    assert module.diverged and module.diverged_epoch == 0
