"""Adapting a trained network to a new scan with the physics loss alone (``infer --adapt-epochs``), and training
on the very scan that is then reconstructed: the loss adaptation lowers, what inference feeds the adapted
network, the files written and the errors refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import sim_scan
from ptychopinn.cli import main
from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.data.normalize import input_scale, intensity_scale, mean_pattern_energy
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError
from ptychopinn.models.pinn import PtychoPINN
from ptychopinn.physics.losses import poisson_loss
from ptychopinn.training.adapt import adapt_model
from ptychopinn.workflows import reconstruct_scan

pytestmark = pytest.mark.slow

QUIET = ExecutionConfig(accelerator="cpu", logger="none", enable_progress_bar=False, enable_checkpointing=False)


def _blind(scan: ScanData) -> ScanData:
    return dataclasses.replace(scan, obj=None, patches=None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> PtychoPINN:
    """A network trained for 2 epochs on a 'lines' scan (N=32, width 1, seed 0)."""
    from ptychopinn.training.run import train

    return train(sim_scan(1, 64, "lines"), model=ModelConfig(N=32, n_filters_scale=1),
                 training=TrainingConfig(nepochs=2, batch_size=8, seed=0), execution=QUIET,
                 output_dir=tmp_path_factory.mktemp("adapt_train")).model


def _poisson_as_inference_feeds_it(model: PtychoPINN, scan: ScanData) -> float:
    """The Poisson loss of ``model`` on every pattern of ``scan``, the patterns scaled by the scan's own input scale
    (inference's rule) and compared at the scan's measured photon scale: written out here, apart from the code
    under test."""
    a = input_scale(scan.diffraction)
    s0 = intensity_scale(scan.N, mean_pattern_energy(scan.diffraction))
    x = torch.from_numpy(scan.diffraction * np.float32(a))[:, None]
    with torch.no_grad():
        _, amp = model.eval()(x, torch.zeros(x.shape[0], 1, 2))
        return float(poisson_loss(amp * model.amplitude_gain(), x, s0))


def test_adaptation_lowers_the_poisson_loss_of_another_scan(trained: PtychoPINN) -> None:
    scan = _blind(sim_scan(2, 64, "grf"))  # another object kind and seed than the network saw
    weights = {k: v.clone() for k, v in trained.generator.state_dict().items()}
    result = adapt_model(trained, scan, epochs=2, accelerator="cpu")
    # measured on this 2-core CPU at 1 thread: 0.0593 -> 0.0375 (ratio 0.63) at the default learning rate
    assert result.loss_after < 0.8 * result.loss_before
    assert len(result.history) == 2 and result.epochs == 2 and result.seconds > 0
    # the reported losses are the scan's loss as inference feeds the network (its own input scale); adapt_model
    # averages the deviance normalised per batch of 64 groups, this one normalises over the whole scan: they
    # differ by 0.4 % here, where another input or photon scale would change the loss many times over
    assert result.input_scale == pytest.approx(input_scale(scan.diffraction), rel=1e-6)
    assert result.loss_after == pytest.approx(_poisson_as_inference_feeds_it(result.model, scan), rel=0.02)
    assert not result.model.training and next(result.model.parameters()).device.type == "cpu"
    # the network it started from is left as it was
    for k, v in trained.generator.state_dict().items():
        assert torch.equal(v, weights[k])


def test_adapt_model_refuses_bad_settings(trained: PtychoPINN) -> None:
    scan = _blind(sim_scan(2, 64, "grf"))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="epochs: expected a positive integer"):
            adapt_model(trained, scan, epochs=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="learning_rate"):
        adapt_model(trained, scan, epochs=1, learning_rate=0.0)


def _npz(path: Path) -> tuple[np.ndarray, dict[str, object]]:
    with np.load(path, allow_pickle=False) as z:
        return z["obj"], json.loads(str(z["_metadata"]))


def test_adapt_epochs_zero_is_todays_output(tiny_archive: Path, tiny_scan_path: Path, tmp_path: Path) -> None:
    plain = reconstruct_scan(tiny_archive, tiny_scan_path, output_dir=tmp_path / "plain")
    zero = reconstruct_scan(tiny_archive, tiny_scan_path, output_dir=tmp_path / "zero", adapt_epochs=0)
    adapted = reconstruct_scan(tiny_archive, tiny_scan_path, output_dir=tmp_path / "one", adapt_epochs=1)
    (a, _), (b, meta_b), (c, meta_c) = _npz(plain.npz), _npz(zero.npz), _npz(adapted.npz)
    np.testing.assert_array_equal(a, b)
    assert zero.adapted is None and "adapt_epochs" not in meta_b
    assert not np.array_equal(a, c)
    assert meta_c["adapt_epochs"] == 1 and len(meta_c["adapt_history"]) == 1  # type: ignore[arg-type]
    assert adapted.seconds > adapted.adapted.seconds > 0  # the adaptation counts in the reconstruction's time
    with pytest.raises(ConfigError, match="adapt_epochs: expected an integer >= 0"):
        reconstruct_scan(tiny_archive, tiny_scan_path, output_dir=tmp_path / "bad", adapt_epochs=-1)


def test_cli_infer_adapt_epochs(tiny_archive: Path, tiny_scan_path: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rec"
    assert main(["infer", str(tiny_archive), str(tiny_scan_path), "--output-dir", str(out), "--adapt-epochs", "2",
                 "--adapt-learning-rate", "1e-3", "--refine", "2", "--quiet"]) == 0
    assert "adapted the network on the scan for 2 epochs" in capsys.readouterr().out
    log = (out / "run.log").read_text()
    assert "adaptation: 2 epochs on 24 patterns" in log and "learning rate 0.001" in log
    _, meta = _npz(out / "network_reconstruction.npz")  # the refinement started from the adapted network's image
    assert meta["adapt_epochs"] == 2 and meta["adapt_learning_rate"] == 1e-3
    assert (out / "reconstruction.npz").is_file()


@pytest.mark.parametrize("value", ["-1", "1.5", "two"])
def test_cli_adapt_epochs_refuses_what_is_not_a_count(value: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["infer", "run", "scan.npz", "--output-dir", str(tmp_path / "o"), f"--adapt-epochs={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--adapt-epochs" in err[0] and "expected an integer >= 0" in err[0]


def test_cli_adapt_learning_rate_needs_adapt_epochs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["infer", "run", "scan.npz", "--output-dir", str(tmp_path / "o"), "--adapt-learning-rate", "1e-3",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--adapt-learning-rate only applies to --adapt-epochs" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["infer", "run", "scan.npz", "--output-dir", str(tmp_path / "p"), "--adapt-learning-rate", "0"])
    assert exc.value.code == 2 and "expected a number > 0" in capsys.readouterr().err


def test_train_on_the_scan_then_infer_it(tiny_scan_path: Path, tmp_path: Path) -> None:
    run, rec = tmp_path / "run", tmp_path / "rec"
    assert main(["train", str(tiny_scan_path), "--output-dir", str(run), "--epochs", "1", "--batch-size", "8",
                 "--n-filters-scale", "1", "--quiet"]) == 0
    assert main(["infer", str(run), str(tiny_scan_path), "--output-dir", str(rec), "--refine", "0", "--quiet"]) == 0
    obj, _ = _npz(rec / "reconstruction.npz")
    assert obj.dtype == np.complex64 and np.isfinite(obj).all() and np.abs(obj).max() > 0
