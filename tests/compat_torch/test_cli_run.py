"""Real runs of ``python -m ptycho_torch.train`` / ``.inference`` (subprocesses) and of the ``*_torch`` workflow
functions of :mod:`ptycho_torch.workflows.components` on small simulated N=32 scans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import norm_corr

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}


def _scan(seed: int) -> Any:
    from ptychopinn.config import SimulationConfig
    from ptychopinn.simulate import simulate_scan

    # 'lines' rather than 'grf': with the default network width (there is no --n_filters_scale flag on this
    # CLI) a 10-epoch run on the smooth 'grf' phase measured r = -0.17 even with all 256 groups, so its phase
    # is not yet retrievable in a test-sized run; the 'lines' object is (see the floor below).
    return simulate_scan(SimulationConfig(N=32, object_size=96, object_kind="lines", overlap=0.6, nphotons=1e6,
                                          seed=seed))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The training and test scan files of this module."""
    from ptychopinn.io.npz import save_npz

    d = tmp_path_factory.mktemp("cli_run_data")
    return {"train": save_npz(d / "train.npz", _scan(3)), "test": save_npz(d / "test.npz", _scan(4))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data: dict[str, Path]) -> dict[str, Any]:
    """Train once with the command line (cwd = an empty directory)."""
    root = tmp_path_factory.mktemp("cli_run")
    train, test = data["train"], data["test"]
    cwd, out = root / "cwd", root / "cwd" / "OUT"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "ptycho_torch.train", "--train_data_file", str(train), "--test_data_file", str(test),
         "--output_dir", str(out), "--max_epochs", "10", "--n_groups", "64", "--gridsize", "1", "--batch_size", "8",
         "--accelerator", "cpu", "--quiet"],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    return {"proc": proc, "train": train, "test": test, "cwd": cwd, "out": out, "root": root}


def test_train_and_inference_command_lines(trained: dict[str, Any]) -> None:
    import matplotlib.image as mpimg

    proc, out, cwd, test = trained["proc"], trained["out"], trained["cwd"], trained["test"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "wts.h5.zip").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert [p.name for p in cwd.iterdir()] == ["OUT"], "training wrote into the working directory"

    rec_dir = trained["root"] / "recon"
    inf = subprocess.run(
        [sys.executable, "-m", "ptycho_torch.inference", "--model_path", str(out), "--test_data", str(test),
         "--output_dir", str(rec_dir), "--accelerator", "cpu", "--quiet"],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert inf.returncode == 0, inf.stderr[-3000:]
    assert [p.name for p in cwd.iterdir()] == ["OUT"], "inference wrote into the working directory"
    for name in ("reconstructed_amplitude.png", "reconstructed_phase.png"):
        img = mpimg.imread(rec_dir / name)
        assert img.ndim >= 2 and img.shape[0] > 100 and img.shape[1] > 100, img.shape
        assert float(np.ptp(img)) > 0, f"{name} is constant"

    with np.load(rec_dir / "reconstruction.npz") as z:
        obj, coverage = z["obj"], z["coverage"]
    truth = np.load(test)["objectGuess"]
    assert obj.ndim == 2 and np.iscomplexobj(obj)
    # The documented canvas is the scan's object pixel grid (origin 0), so no registration is needed.
    assert obj.shape == truth.shape and coverage.shape == obj.shape
    m = coverage > 0
    assert m.mean() > 0.3
    rot = np.exp(-1j * np.angle(np.sum(obj[m] * np.conj(truth[m]))))  # remove the global phase
    phase = np.angle(obj[m] * rot)
    r = norm_corr(phase, np.angle(truth[m]))
    tp = np.angle(truth)
    wrong = [tp[::-1, :], tp[:, ::-1], tp[::-1, ::-1]] + ([tp.T] if tp.shape[0] == tp.shape[1] else [])
    r_wrong = max(abs(norm_corr(phase, w[m])) for w in wrong)
    # The network's phase at gridsize 1 varies between machines and thread counts (measured r = 0.40 once,
    # 0.18 with the same code on another machine, 0.22-0.25 now); a flipped or transposed canvas gives
    # |r| < 0.1. What this test must prove is that the phase is retrieved and on the object grid.
    assert r >= 0.15 and r > r_wrong + 0.08, (r, r_wrong)


def test_workflow_functions(data: dict[str, Path], tiny_archive: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The workflow functions train and stitch themselves; the inference-bundle part loads the suite's shared
    archive (the archive written by ``ptycho_torch.train`` is loaded by the command-line test above)."""
    from ptycho.config.config import ModelConfig, TrainingConfig
    from ptycho.raw_data import RawData
    from ptycho.workflows import components as ptycho_wf
    from ptycho_torch.workflows import components as torch_wf

    monkeypatch.chdir(tmp_path)
    train_raw = RawData.from_file(data["train"])
    test_raw = RawData.from_file(data["test"])
    config = TrainingConfig(model=ModelConfig(N=32, gridsize=1, n_filters_scale=1), nepochs=2, batch_size=8,
                            n_groups=32)
    # Documented relationship: a delegating wrapper (same implementation, same returned objects), not an alias.
    assert torch_wf.run_cdi_example_torch is not ptycho_wf.run_cdi_example
    amp, phase, results = torch_wf.run_cdi_example_torch(train_raw, test_raw, config, do_stitching=True)
    assert results["backend"] == "pytorch" and results["epochs_completed"] == 2
    assert isinstance(results["model"], type(ptycho_wf.last_model().model))
    for img in (amp, phase):
        assert isinstance(img, np.ndarray) and img.ndim == 2 and img.dtype == np.float32
    assert amp.shape == test_raw.objectGuess.shape and np.isfinite(phase).all()
    assert results["reconstructed_obj"].shape == amp.shape
    assert list(tmp_path.iterdir()) == [], "nothing may be written into the working directory"
    a0, p0, _ = torch_wf.run_cdi_example_torch(train_raw, None, config)
    assert a0 is None and p0 is None

    models, params = torch_wf.load_inference_bundle_torch(tiny_archive)
    ref_model, ref_params = ptycho_wf.load_inference_bundle(tiny_archive)
    model = models["diffraction_to_obj"]
    assert type(model) is type(ref_model) and params["N"] == ref_params["N"] == 32
    assert params["gridsize"] == 1 and params["backend"] == "pytorch"
    x = test_raw.to_scan().diffraction[:4, :, :, None].astype(np.float32)
    patches = model.predict(x)
    assert patches.shape == (4, 32, 32, 1) and np.iscomplexobj(patches)
    np.testing.assert_allclose(patches, ref_model.predict(x), rtol=1e-5, atol=1e-6)

    amp2, phase2, extra = torch_wf.reassemble_cdi_image_torch(test_raw, None, train_results={"model": model})
    obj = extra["obj"]
    assert extra["backend"] == "pytorch" and obj.ndim == 2 and np.iscomplexobj(obj)
    assert obj.shape == test_raw.objectGuess.shape and amp2.shape == phase2.shape == obj.shape
    np.testing.assert_allclose(obj, ptycho_wf.reassemble_cdi_image(test_raw, model.model), rtol=1e-5, atol=1e-6)
    obj_last = torch_wf.reassemble_cdi_image_torch(test_raw)[2]["obj"]  # default: the model loaded last
    np.testing.assert_allclose(obj_last, obj, rtol=1e-5, atol=1e-6)
    assert list(tmp_path.iterdir()) == []
