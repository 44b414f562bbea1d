"""The real ptychodus 1.7.0 PtychoPINN plugin, driven headless against this package.

``PtychoPINNReconstructorLibrary`` is built from a ``SettingsRegistry`` exactly as ptychodus's model core
does (no GUI, no Qt). Training and reconstruction run in fresh ``spawn`` child processes started by the
plugin itself (``SubprocessReconstructor``), so this also proves that nothing but files carries over
between train and reconstruct. Product files are exchanged in both directions between
``ptychopinn.io.product_h5`` and ``ptychodus.api.io``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import N, compare_with_truth, counts_of, sim_scan

pytest.importorskip("ptychodus")

from ptychodus.api.io import load_product, save_product  # noqa: E402
from ptychodus.api.reconstruct import ReconstructInput  # noqa: E402
from ptychodus.api.settings import SettingsRegistry  # noqa: E402
from ptychodus.model.ptychopinn.core import PtychoPINNReconstructorLibrary  # noqa: E402

PIXEL_M = 1e-8
CENTER_M = (2.5e-7, -1.5e-7)  # off-centre on purpose: positions must still map to the same pixels


def _library() -> PtychoPINNReconstructorLibrary:
    return PtychoPINNReconstructorLibrary(SettingsRegistry(), is_developer_mode_enabled=False)


def _pinn(library: PtychoPINNReconstructorLibrary) -> Any:
    return next(r for r in library if r.name == "PINN")


def _reconstruct_input(scan: Any, tmp: Path, name: str, ptychodus_convention: bool = False) -> ReconstructInput:
    """A ptychodus ReconstructInput for a simulated scan: the product is written by ptychopinn's writer and
    read back by ptychodus's reader; the patterns are uint16 photon counts, as from a detector.

    ``ptychodus_convention``: give ptychodus the positions of the probe array's centre (N-1)/2, its
    convention, instead of ptychopinn's (pixel N//2, where the simulator put them): half a pixel less."""
    from ptychopinn.io.product_h5 import ptychodus_centre_offset, save_product_h5

    positions = scan.positions - (ptychodus_centre_offset(N) if ptychodus_convention else 0.0)
    path = save_product_h5(tmp / f"{name}.h5", scan.obj, positions, scan.probe, pixel_size_m=PIXEL_M,
                           center_m=CENTER_M, metadata={"probe_energy_eV": 8000.0})
    product = load_product(path)
    return ReconstructInput(diffraction_patterns=counts_of(scan, np.uint16),
                            bad_pixels=np.zeros((N, N), dtype=bool), product=product)


# --------------------------------------------------------------------------------------------- fast
def test_plugin_registers_pinn_and_supervised_and_builds_picklable_payloads() -> None:
    from ptychodus.model.ptychopinn import reconstructor as plugin

    library = _library()
    assert {r.name for r in library} == {"PINN", "Supervised"}
    training = plugin._build_training_config(library.model_settings, library.training_settings, "PINN")
    inference = plugin._build_inference_config(library.model_settings, "Supervised", 64,
                                               is_developer_mode_enabled=True)
    back = pickle.loads(pickle.dumps(training))
    assert back.model.N == 0 and back.nphotons == 1e6 and back.intensity_scale_trainable is True
    back.model.N = 64
    assert back.model.N == 64
    assert pickle.loads(pickle.dumps(inference)).model.model_type == "supervised"


def test_our_product_file_reads_in_ptychodus(tmp_path: Path) -> None:
    scan = sim_scan(2)
    parameters = _reconstruct_input(scan, tmp_path, "product")
    product = parameters.product
    geometry = product.object_.get_geometry()
    x = geometry.map_probe_positions_to_object_x_px(product.probe_positions)
    y = geometry.map_probe_positions_to_object_y_px(product.probe_positions)
    np.testing.assert_allclose(np.stack([x, y], axis=1), scan.positions, atol=1e-9)
    np.testing.assert_array_equal(product.object_.get_layer(0), scan.obj)
    np.testing.assert_array_equal(product.probes.get_probe_no_opr().get_array(), scan.probe[None])
    assert geometry.pixel_width_m == PIXEL_M and (geometry.center_x_m, geometry.center_y_m) == CENTER_M
    assert product.metadata.photon_energy_eV == 8000.0


def test_ptychodus_product_file_reads_in_ptychopinn(tmp_path: Path) -> None:
    from ptychopinn.io.product_h5 import load_product_h5

    scan = sim_scan(2)
    product = _reconstruct_input(scan, tmp_path, "ours").product
    path = tmp_path / "written_by_ptychodus.h5"
    save_product(path, product)
    ours = load_product_h5(path)
    np.testing.assert_allclose(ours.positions, scan.positions, atol=1e-9)
    np.testing.assert_array_equal(ours.obj, scan.obj)
    np.testing.assert_array_equal(ours.probe, scan.probe)
    assert ours.pixel_size_m == (PIXEL_M, PIXEL_M) and ours.center_m == CENTER_M


def test_exported_training_data_is_read_by_raw_data(tmp_path: Path) -> None:
    from ptycho.raw_data import RawData

    scan = sim_scan(1)
    pinn = _pinn(_library())
    pinn.export_training_data(tmp_path / "train_data.npz", _reconstruct_input(scan, tmp_path, "train"))
    with np.load(tmp_path / "train_data.npz") as z:
        assert z["probeGuess"].shape == (1, N, N) and z["diff3d"].dtype == np.uint16 and "bad_pixels" in z
    raw = RawData.from_file(tmp_path / "train_data.npz")
    np.testing.assert_allclose(raw.diff3d, np.sqrt(counts_of(scan).astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(raw.positions, scan.positions, atol=1e-9)


# --------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_plugin_train_save_load_and_reconstruct_end_to_end(tmp_path: Path) -> None:
    """Export -> train (child) -> reconstruct (child, default NumSamples=1) -> save_model('model.zip') ->
    load_model_from_file -> reconstruct again (child, case B). Checked against the truth.

    Floors as in test_ptycho_contract (same data and training budget): phase correlation >= 0.45,
    registration shift <= 1 px, flipped/transposed truth at least 0.25 worse.
    """
    library = _library()
    library.model_settings.n_filters_scale.set_value(1)  # small network: the test must stay cheap
    library.training_settings.nepochs.set_value(10)
    library.training_settings.batch_size.set_value(16)
    pinn = _pinn(library)
    data_dir = tmp_path / "training"  # the GUI uses one directory for input and output
    data_dir.mkdir()
    pinn.export_training_data(data_dir / "train_data.npz", _reconstruct_input(sim_scan(1), tmp_path, "train", True))
    pinn.export_training_data(data_dir / "test_data.npz", _reconstruct_input(sim_scan(3), tmp_path, "val", True))

    train_outputs = list(pinn.train(data_dir, data_dir))
    assert len(train_outputs) == 1 and pinn.is_model_loaded()
    assert (data_dir / "wts.h5.zip").is_file() and (data_dir / "history.json").is_file()

    target = sim_scan(2)
    parameters = _reconstruct_input(target, tmp_path, "target", True)
    assert library.inference_settings.n_samples.get_value() == 1  # the ptychodus default
    outputs = list(pinn.reconstruct(parameters))
    assert len(outputs) == 1
    obj = outputs[0].product.object_
    arr = obj.get_layer(0)
    assert type(arr) is np.ndarray and np.iscomplexobj(arr) and arr.shape == target.obj.shape
    assert obj.get_geometry().center_x_m == CENTER_M[0] and obj.get_pixel_geometry().width_m == PIXEL_M
    q = compare_with_truth(arr, target.obj)
    assert q["phase_corr"] >= 0.45, q
    assert max(abs(s) for s in q["shift"]) <= 1.0, q
    assert max(q["flipped_phase_corr"].values()) <= q["phase_corr"] - 0.25, q

    saved = tmp_path / "model.zip"
    pinn.save_model(saved)
    assert saved.read_bytes() == (data_dir / "wts.h5.zip").read_bytes()
    fresh = _pinn(_library())  # a new session: only the saved file is shared
    fresh.load_model_from_file(saved)
    again = list(fresh.reconstruct(parameters))[0].product.object_.get_layer(0)
    np.testing.assert_allclose(again, arr, rtol=1e-5, atol=1e-6)
