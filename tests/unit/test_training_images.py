"""Training pictures for experiment trackers, tested with logger stand-ins (tensorboard and mlflow are not
installed here): each stand-in offers exactly the API the callback uses (TensorBoard's SummaryWriter
``add_image``, MLflow's client ``log_image`` / ``log_artifact`` and ``run_id``) and records what it
receives; the images are real renders, decoded and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.loggers import Logger
from matplotlib.image import imread

from ptychopinn.config import ExecutionConfig, ModelConfig, SimulationConfig, TrainingConfig
from ptychopinn.training.data import PtychoDataModule
from ptychopinn.training.images import ValidationImages, send_artifacts
from ptychopinn.training.module import PINNLightningModule
from ptychopinn.training.trainer import LossHistory


class _Writer:  # the part of torch.utils.tensorboard.SummaryWriter the callback uses
    def __init__(self) -> None:
        self.images: list[tuple[str, np.ndarray, int, str]] = []

    def add_image(self, tag: str, img: Any, global_step: int | None = None, dataformats: str = "CHW") -> None:
        self.images.append((tag, np.asarray(img), int(global_step), dataformats))


class _Client:  # the part of mlflow.MlflowClient the callback uses
    def __init__(self) -> None:
        self.images: list[tuple[str, np.ndarray, str]] = []
        self.artifacts: list[tuple[str, str, str | None]] = []

    def log_image(self, run_id: str, image: Any, artifact_file: str | None = None) -> None:
        self.images.append((run_id, np.asarray(image), str(artifact_file)))

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self.artifacts.append((run_id, local_path, artifact_path))


class _Recorder(Logger):
    def __init__(self, experiment: Any, run_id: str | None = None) -> None:
        super().__init__()
        self._exp = experiment
        self.run_id = run_id
        self.metrics: list[dict[str, float]] = []
        self.hparams_with_metrics: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    @property
    def experiment(self) -> Any:
        return self._exp

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params: Any, metrics: dict[str, float] | None = None) -> None:
        if metrics:
            self.hparams_with_metrics.append(dict(metrics))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from ptychopinn.simulate import simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, object_size=96, n_points=48, seed=2))
    model = ModelConfig(N=32)
    training = TrainingConfig(nepochs=3, batch_size=16, val_fraction=0.25)
    execution = ExecutionConfig(logger="none", enable_progress_bar=False, enable_checkpointing=False)
    L.seed_everything(0, verbose=False)
    dm = PtychoDataModule(scan, model, training, execution)
    module = PINNLightningModule(model.to_dict(), training.to_dict(), scan.probe, dm.intensity_scale,
                                 dm.input_scale, has_validation=dm.has_val)
    tb, mlf = _Recorder(_Writer()), _Recorder(_Client(), run_id="run-1")
    figure = tmp_path_factory.mktemp("fig") / "validation_patch.png"
    hist = LossHistory()
    cb = ValidationImages(every_n_epochs=2, figure_path=figure)
    trainer = L.Trainer(max_epochs=3, logger=[tb, mlf], callbacks=[hist, cb], enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
                        log_every_n_steps=1)
    trainer.fit(module, datamodule=dm)
    return {"tb": tb, "mlf": mlf, "figure": figure, "history": hist.history, "cb": cb}


def test_images_every_n_epochs_and_at_the_last(fitted):
    writer = fitted["tb"].experiment
    assert [(tag, step, fmt) for tag, _, step, fmt in writer.images] == [
        ("validation_patch", 0, "HWC"), ("validation_patch", 2, "HWC")]
    files = [f for _, _, f in fitted["mlf"].experiment.images]
    assert files == ["validation_patch/epoch_0000.png", "validation_patch/epoch_0002.png"]
    for _, img, _, _ in writer.images:
        assert img.dtype == np.uint8 and img.shape[2] == 3 and img.shape[1] > 2 * img.shape[0]
        assert img.std() > 10  # three real panels, not a blank canvas
    # the network changes between epochs 0 and 2, the sample does not: the pictures differ
    assert not np.array_equal(writer.images[0][1], writer.images[1][1])


def test_hp_metric_is_the_best_validation_loss(fitted):
    best = min(fitted["history"]["val_loss"])
    assert fitted["tb"].hparams_with_metrics == [{"hp_metric": pytest.approx(best, rel=1e-6)}]
    assert {"hp_metric": pytest.approx(best, rel=1e-6)} in fitted["mlf"].metrics
    assert best > 0  # not Lightning's placeholder -1


def test_final_figure_written_and_uploaded(fitted, tmp_path):
    fig: Path = fitted["figure"]
    img = imread(fig)
    assert img.shape[1] > 2 * img.shape[0]
    assert (fig.stat().st_mode & 0o777) == 0o644
    assert fitted["mlf"].experiment.artifacts == [("run-1", str(fig), "figures")]
    other = tmp_path / "loss_curves.png"
    other.write_bytes(b"png")
    assert send_artifacts([fitted["tb"], fitted["mlf"]], [other, None, tmp_path / "missing.png"]) == 1


def test_build_trainer_adds_images_only_for_image_loggers(tmp_path, monkeypatch):
    from ptychopinn.training import trainer as tr

    monkeypatch.setattr(tr, "check_logger_available", lambda kind: None)
    monkeypatch.setattr(tr, "_build_logger", lambda kind, out: False)
    for kind, expected in (("csv", False), ("none", False), ("tensorboard", True), ("mlflow", True)):
        t = tr.build_trainer(ExecutionConfig(logger=kind, enable_progress_bar=False), TrainingConfig(nepochs=1),
                             tmp_path, has_val=True)
        assert (tr.find_callback(t, ValidationImages) is not None) == expected, kind
