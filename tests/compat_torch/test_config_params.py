"""``ptycho_torch.config_params`` and the object API at the level that needs no training."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import N, counts_of, sim_scan, write_ptychodus_npz
from ptycho_torch.config_params import (
    DataConfig,
    DatagenConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
    to_core_configs,
)
from ptychopinn.errors import ConfigError, DataFormatError

PTYCHODUS_MODEL_KW = dict(
    mode="Unsupervised", object_big=True, probe_big=True, loss_function="Poisson", amp_activation="silu",
    cbam_encoder=True, decoder_last_amp_channels=4, use_shared_decoder=False, intensity_scale_trainable=False,
    intensity_scale=10000.0, max_position_jitter=10, num_datasets=1, C_model=4, C_forward=4, amp_loss=None,
    phase_loss=None, amp_loss_coeff=1.0, phase_loss_coeff=1.0, n_filters_scale=2, probe_mask=None,
    eca_decoder=False, batch_norm=False, edge_pad=10, decoder_last_c_outer_fraction=0.125, cbam_bottleneck=False,
    cbam_decoder=False, spatial_decoder=False, decoder_spatial_kernel=7, eca_encoder=False, offset=6,
    probe_reference_coeff=0.0, amplitude_variance_loss=False, amplitude_variance_coeff=0.01)


def test_import_needs_no_lightning_and_no_cuda() -> None:
    code = ("import sys, ptycho_torch.config_params as c; c.DataConfig(N=64); "
            "assert 'lightning' not in sys.modules; "
            "t = sys.modules.get('torch'); assert t is None or not t.cuda.is_initialized(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_ptychodus_keywords_accepted_mutable_picklable() -> None:
    m = ModelConfig(**PTYCHODUS_MODEL_KW)
    t = TrainingConfig(epochs=2, device="cuda", strategy="ddp_spawn", num_workers=4, gradient_clip_val=None,
                       scheduler="Default", warmup_epochs=0, min_lr_ratio=0.1, framework="Lightning",
                       orchestrator="Lightning", finetune_stage1_epochs=7, finetune_val_split=0.05)
    d = DataConfig(N=64, C=4, grid_size=(2, 2), x_bounds=(0.1, 0.9), y_bounds=(0.1, 0.9), K=6, n_subsample=7)
    i = InferenceConfig(batch_size=1000, middle_trim=32, experiment_number=0, patch_weighting="probe",
                        pad_eval=True, window=20)
    for cfg in (m, t, d, i, DatagenConfig()):
        assert pickle.loads(pickle.dumps(cfg)) == cfg
    t.n_devices = 1
    with pytest.warns(RuntimeWarning, match="CPU"):
        core = to_core_configs(d, m, t, i, n_points=100)
    assert core["model"].cbam_encoder is True and core["model"].gridsize == 2 and core["model"].N == 64
    assert core["model"].amp_activation == "swish" and core["training"].n_groups == 700
    assert core["execution"].accelerator == "cpu" and core["execution"].strategy == "auto"
    assert core["execution"].num_workers == 4 and core["inference"].batch_size == 1000


@pytest.mark.parametrize(("cls", "kw"), [(ModelConfig, {"eca_encoder": True}), (ModelConfig, {"batch_norm": True}),
                                         (ModelConfig, {"amp_loss": "Total_Variation"}),
                                         (ModelConfig, {"amplitude_variance_loss": True}),
                                         (TrainingConfig, {"enable_staged_finetuning": True}),
                                         (TrainingConfig, {"epochs_fine_tune": 3}),
                                         (TrainingConfig, {"scheduler": "MultiStage"}),
                                         (DataConfig, {"neighbor_function": "4_quadrant"}),
                                         (DataConfig, {"probe_ramp_removal": True}),
                                         (DataConfig, {"C": 4, "grid_size": (1, 4)}),
                                         (DataConfig, {"C": 1, "grid_size": (2, 2)}),
                                         (DataConfig, {"normalize": "Group"})])
def test_unimplemented_knobs_raise(cls: type, kw: dict) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**kw)
    assert "\n" not in str(info.value)


def test_loader_checks_n_and_reads_every_npz(tmp_path: Path) -> None:
    from ptycho_torch.api.base_api import ConfigManager, DataloaderFormats, PtychoDataLoader

    s = sim_scan(1, size=96)
    write_ptychodus_npz(tmp_path / "a.npz", s, counts_of(s))
    write_ptychodus_npz(tmp_path / "b.npz", s, counts_of(s, np.int32))
    bad = ConfigManager(data_config=DataConfig(N=128), model_config=ModelConfig(), training_config=TrainingConfig(),
                        inference_config=InferenceConfig())
    with pytest.raises(ConfigError, match="model_size"):
        PtychoDataLoader(data_dir=tmp_path, config_manager=bad, data_format=DataloaderFormats("lightning_only_module"))
    cm = ConfigManager(data_config=DataConfig(N=N), model_config=ModelConfig(), training_config=TrainingConfig(),
                       inference_config=InferenceConfig())
    loader = PtychoDataLoader(data_dir=tmp_path, config_manager=cm,
                              data_format=DataloaderFormats("lightning_only_module"), output_dir=tmp_path / "o")
    assert len(loader.files) == 2 and loader.output_dir.name.startswith("run_") and loader.output_dir.is_dir()
    inner = int(((s.positions[:, 0] >= 0) & (s.positions[:, 0] <= 1e9)).sum())
    assert loader.scan.n_points < 2 * inner  # x/y bounds dropped the outer points
    np.testing.assert_allclose(loader.scan.diffraction[0] ** 2, loader.scan.diffraction[0] ** 2)
    with pytest.raises(FileNotFoundError):
        PtychoDataLoader(data_dir=tmp_path / "missing", config_manager=cm)
    with pytest.raises(DataFormatError):
        PtychoDataLoader.from_np(diff_patterns=counts_of(s), probe=s.probe[None], positions=s.positions[:5],
                                 config_manager=cm)


def test_find_best_checkpoint_order(tmp_path: Path) -> None:
    from ptycho_torch.lightning_utils import find_best_checkpoint

    assert find_best_checkpoint(tmp_path) is None
    c = tmp_path / "checkpoints"
    c.mkdir()
    (c / "other.ckpt").write_bytes(b"x")
    assert find_best_checkpoint(tmp_path) == c / "other.ckpt"
    (c / "last.ckpt").write_bytes(b"x")
    assert find_best_checkpoint(tmp_path) == c / "last.ckpt"
    (c / "best-epoch=001.ckpt").write_bytes(b"x")
    assert find_best_checkpoint(tmp_path) == c / "best-epoch=001.ckpt"
    (c / "best-checkpoint.ckpt").write_bytes(b"x")
    assert find_best_checkpoint(tmp_path) == c / "best-checkpoint.ckpt"


def test_intensity_scale_is_reported_as_unused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """ptychodus's intensity_scale has no counterpart here (the likelihood uses the measured dose): an INFO
    line at its default 1e4, a RuntimeWarning (once per process) when changed, both naming the dose used."""
    import logging
    import warnings

    from ptycho_torch.api import base_api
    from ptycho_torch.api.base_api import ConfigManager, DataloaderFormats, PtychoDataLoader, PtychoModel, Trainer
    from ptycho_torch.model import PtychoPINN_Lightning

    s = sim_scan(1, size=96)
    counts = counts_of(s, np.int32)
    write_ptychodus_npz(tmp_path / "a.npz", s, counts)
    dose = float(counts.astype(np.float64).sum(axis=(1, 2)).mean())
    monkeypatch.setattr(base_api, "_warned", set())

    def bind(scale: float) -> None:
        cm = ConfigManager(data_config=DataConfig(N=N), training_config=TrainingConfig(device="cpu"),
                           model_config=ModelConfig(intensity_scale=scale, n_filters_scale=1),
                           inference_config=InferenceConfig())
        loader = PtychoDataLoader(data_dir=tmp_path, config_manager=cm,
                                  data_format=DataloaderFormats("lightning_only_module"), output_dir=tmp_path / "o")
        Trainer._from_lightning(model=PtychoModel._new_model(model=PtychoPINN_Lightning, config_manager=cm),
                                dataloader=loader, orchestration="lightning", config_manager=cm)

    with caplog.at_level(logging.INFO, logger="ptycho_torch.api.base_api"), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        bind(10000.0)
    line = next(r.getMessage() for r in caplog.records if "intensity_scale" in r.getMessage())
    assert "intensity_scale=10000 is not used" in line and "measured" in line
    measured = float(line.split("the data, ")[1].split(" counts")[0])
    assert measured == pytest.approx(dose, rel=0.05)  # the in-bounds points' mean, close to the whole scan's
    with pytest.warns(RuntimeWarning, match="intensity_scale=50 is not used"):
        bind(50.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        bind(50.0)  # once per process
