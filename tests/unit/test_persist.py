"""Model archive round trip (src/ptychopinn/models/persist.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ptychopinn.config import InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ArchiveError
from ptychopinn.inference.predict import reconstruct
from ptychopinn.io.archive import ARCHIVE_NAME, load_archive, save_archive
from ptychopinn.models.persist import PROBE_KEY, LoadedModel, load_model, save_model
from ptychopinn.models.pinn import PtychoPINN

N = 32


def _probe(n: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, dtype=torch.complex64, generator=g)


def _model(gridsize: int = 1, seed: int = 0, **cfg: object) -> PtychoPINN:
    torch.manual_seed(seed)
    config = ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1, **cfg)  # type: ignore[arg-type]
    return PtychoPINN(config, probe=_probe(seed=seed), intensity_scale=12.5)


def _inputs(gridsize: int, b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    c = gridsize * gridsize
    x = (torch.arange(b * c * N * N, dtype=torch.float32).reshape(b, c, N, N) % 17) / 17
    rel = (torch.arange(b * c * 2, dtype=torch.float32).reshape(b, c, 2) % 5) - 2
    return x, rel


def _predict(model: PtychoPINN, gridsize: int) -> torch.Tensor:
    x, rel = _inputs(gridsize)
    with torch.inference_mode():
        return model.eval().predict_patches(x, rel)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_round_trip_is_exact(tmp_path: Path, gridsize: int) -> None:
    model = _model(gridsize, probe_trainable=True, intensity_scale_trainable=True)
    with torch.no_grad():  # a "trained" model: probe and scale moved away from their initial values
        model.physics.probe.mul_(0.5 + 0.25j)
        model.log_intensity_scale.add_(0.3)
    training = TrainingConfig(nepochs=3).to_dict()
    meta = {"history": {"loss": [3.0, 2.0]}, "input_scale": 0.8, "nphotons": 1e6}
    path = save_model(tmp_path, model, training=training, metadata=meta)
    assert path == tmp_path / ARCHIVE_NAME
    loaded = load_model(tmp_path)  # the directory holding the archive
    assert isinstance(loaded, LoadedModel) and loaded.path == path
    assert loaded.model_config == model.config and loaded.model.config == model.config
    assert loaded.training == training and loaded.metadata == meta
    assert loaded.manifest["backend"] == "pytorch"
    assert not loaded.model.training
    saved, back = model.state_dict(), loaded.model.state_dict()
    assert set(saved) == set(back)
    for k in saved:
        assert torch.equal(saved[k], back[k]), k
    assert isinstance(loaded.model.log_intensity_scale, torch.nn.Parameter)
    assert torch.equal(_predict(model, gridsize), _predict(loaded.model, gridsize))
    cfg = load_archive(path).config
    assert cfg["N"] == N and cfg["gridsize"] == gridsize
    assert cfg["intensity_scale"] == pytest.approx(12.5, rel=1e-6)
    assert cfg["model"] == model.config.to_dict()


@pytest.mark.slow
def test_fresh_process_rebuilds_the_model_from_the_archive_alone(tmp_path: Path) -> None:
    model = _model(2, seed=3)
    path = save_model(tmp_path / "run" / "model.zip", model)
    out = _predict(model, 2).to(torch.complex128)
    here = [float(out.real.sum()), float(out.imag.sum()), float(out.abs().sum()),
            float((out.abs() * torch.arange(out.numel()).reshape(out.shape)).sum())]
    code = textwrap.dedent(f"""
        import json, torch
        from ptychopinn.models.persist import load_model
        N, b, c = {N}, 3, 4
        x = (torch.arange(b * c * N * N, dtype=torch.float32).reshape(b, c, N, N) % 17) / 17
        rel = (torch.arange(b * c * 2, dtype=torch.float32).reshape(b, c, 2) % 5) - 2
        with torch.inference_mode():
            out = load_model({str(path)!r}).model.predict_patches(x, rel).to(torch.complex128)
        print(json.dumps([float(out.real.sum()), float(out.imag.sum()), float(out.abs().sum()),
                          float((out.abs() * torch.arange(out.numel()).reshape(out.shape)).sum())]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(there, here, rtol=1e-6)
    assert abs(here[2]) > 0


def test_loaded_model_reconstructs_identically(tmp_path: Path, device: str) -> None:
    model = _model(1)
    rng = np.random.default_rng(0)
    pos = np.stack(np.meshgrid(np.arange(20, 50, 6.0), np.arange(20, 44, 6.0)), -1).reshape(-1, 2)
    scan = ScanData(diffraction=rng.uniform(0, 1, (len(pos), N, N)).astype(np.float32), positions=pos,
                    probe=_probe().numpy())
    cfg = InferenceConfig(batch_size=8)
    a = reconstruct(model, scan, cfg, device=device)
    b = reconstruct(load_model(save_model(tmp_path, model)).model, scan, cfg, device=device)
    if device == "cpu":
        np.testing.assert_array_equal(a.obj, b.obj)
    else:  # CUDA's scatter-add (atomics) sums overlapping windows in a varying order
        np.testing.assert_allclose(a.obj, b.obj, rtol=1e-5, atol=1e-6)


def _resave(src: Path, dst: Path, *, config: dict | None = None,
            tensors: dict[str, torch.Tensor] | None = None) -> Path:
    arch = load_archive(src)
    return save_archive(dst, config=arch.config if config is None else config,
                        tensors=arch.tensors if tensors is None else tensors, metadata=arch.metadata)


def test_wrong_shape_weights_are_an_archive_error(tmp_path: Path) -> None:
    small = save_model(tmp_path / "small.zip", _model(1))
    wide = PtychoPINN(ModelConfig(N=N, n_filters_scale=2), probe=_probe(), intensity_scale=12.5)
    bad = _resave(small, tmp_path / "bad.zip", tensors=wide.state_dict())
    with pytest.raises(ArchiveError, match="weights do not match the configuration: shape mismatch") as info:
        load_model(bad)
    assert "\n" not in str(info.value)


def test_missing_and_unexpected_tensors_are_archive_errors(tmp_path: Path) -> None:
    src = save_model(tmp_path / "m.zip", _model(1))
    tensors = dict(load_archive(src).tensors)
    name = next(k for k in tensors if k.startswith("generator."))
    missing = {k: v for k, v in tensors.items() if k != name}
    with pytest.raises(ArchiveError, match=f"missing {name}"):
        load_model(_resave(src, tmp_path / "a.zip", tensors=missing))
    with pytest.raises(ArchiveError, match="unexpected extra.weight"):
        load_model(_resave(src, tmp_path / "b.zip", tensors={**tensors, "extra.weight": torch.ones(2)}))
    no_probe = {k: v for k, v in tensors.items() if k != PROBE_KEY}
    with pytest.raises(ArchiveError, match="physics.probe"):
        load_model(_resave(src, tmp_path / "c.zip", tensors=no_probe))


def test_invalid_config_is_an_archive_error(tmp_path: Path) -> None:
    src = save_model(tmp_path / "m.zip", _model(1))
    cfg = load_archive(src).config
    bad_n = {**cfg, "model": {**cfg["model"], "N": 30}}
    with pytest.raises(ArchiveError, match="saved model configuration is invalid.*'N'") as info:
        load_model(_resave(src, tmp_path / "a.zip", config=bad_n))
    assert "\n" not in str(info.value)
    unknown = {**cfg, "model": {**cfg["model"], "bogus": 1}}
    with pytest.raises(ArchiveError, match="unknown key"):
        load_model(_resave(src, tmp_path / "b.zip", config=unknown))
    with pytest.raises(ArchiveError, match="'intensity_scale'"):
        load_model(_resave(src, tmp_path / "c.zip", config={**cfg, "intensity_scale": -1.0}))
    with pytest.raises(ArchiveError, match="no 'model' section"):
        load_model(_resave(src, tmp_path / "d.zip", config={"N": N}))


def test_missing_path_and_wrong_object(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing.zip")
    with pytest.raises(ArchiveError, match="PtychoPINN"):
        save_model(tmp_path, torch.nn.Linear(2, 2))  # type: ignore[arg-type]
