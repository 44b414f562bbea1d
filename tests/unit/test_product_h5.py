"""ptychodus product HDF5 files: round trip, coordinate mapping, malformed files."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.io.product_h5 import load_product_h5, metres_to_pixels, pixels_to_metres, save_product_h5

H, W, N, M = 24, 32, 16, 15


def _inputs(seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obj = (rng.uniform(0.5, 1, (H, W)) * np.exp(1j * rng.uniform(-1, 1, (H, W)))).astype(np.complex64)
    pos = np.stack([rng.uniform(0, W - 1, M), rng.uniform(0, H - 1, M)], axis=1)
    probe = np.exp(1j * rng.uniform(0, 1, (N, N))).astype(np.complex64)
    return obj, pos, probe


def test_round_trip(tmp_path: Path) -> None:
    obj, pos, probe = _inputs()
    out = save_product_h5(
        tmp_path / "p.h5", obj, pos, probe, pixel_size_m=(2e-8, 3e-8), center_m=(1e-6, -2e-6),
        metadata={"name": "run 1", "probe_energy_eV": 8000.0, "nphotons": 1e6}, losses=[3.0, 2.0, 1.5],
    )
    assert out == tmp_path / "p.h5" and os.listdir(tmp_path) == ["p.h5"]
    prod = load_product_h5(out)
    np.testing.assert_array_equal(prod.obj, obj)
    assert prod.object_layers.shape == (1, H, W)
    np.testing.assert_array_equal(prod.probe, probe)
    assert prod.probe_array.shape == (1, 1, N, N) and prod.probe.dtype == np.complex64
    np.testing.assert_allclose(prod.positions, pos, rtol=0, atol=1e-9)
    assert prod.pixel_size_m == (2e-8, 3e-8) and prod.probe_pixel_size_m == (2e-8, 3e-8)
    assert prod.center_m == (1e-6, -2e-6)
    assert prod.position_indexes.tolist() == list(range(M))
    np.testing.assert_array_equal(prod.losses, [3.0, 2.0, 1.5])
    assert prod.loss_epochs.tolist() == [0, 1, 2]
    assert prod.layer_spacing_m.shape == (0,)
    assert prod.metadata["name"] == "run 1" and prod.metadata["photon_energy_eV"] == 8000.0
    assert prod.metadata["nphotons"] == 1e6 and prod.metadata["exposure_time_s"] == 1.0


def test_ptychodus_names_and_metre_mapping(tmp_path: Path) -> None:
    obj, pos, probe = _inputs()
    pos[0] = ((W - 1) / 2, (H - 1) / 2)  # the object centre pixel
    pos[1] = ((W - 1) / 2 + 10, (H - 1) / 2 - 4)
    save_product_h5(tmp_path / "p.h5", obj, pos, probe, pixel_size_m=1e-8, center_m=(5e-7, 7e-7))
    with h5py.File(tmp_path / "p.h5", "r") as f:
        for key in ("name", "comments", "detector_object_distance_m", "photon_energy_eV", "exposure_time_s",
                    "probe_photon_count", "mass_attenuation_m2_per_kg", "tomography_angle_deg",
                    "probe_energy_eV", "mass_attenuation_m2_kg"):
            assert key in f.attrs, key
        x, y = f["probe_position_x_m"][()], f["probe_position_y_m"][()]
        assert f["probe"].shape == (1, N, N) and f["probe"].dtype == np.complex64
        assert f["object"].shape == (1, H, W) and f["object"].attrs["pixel_width_m"] == 1e-8
        assert f["object_layer_spacing_m"].shape == (0,)
        assert f["loss_values"].shape == (0,)
    np.testing.assert_allclose([x[0], y[0]], [5e-7, 7e-7], rtol=1e-12)
    np.testing.assert_allclose([x[1], y[1]], [5e-7 + 10e-8, 7e-7 - 4e-8], rtol=1e-12)


def test_mapping_functions_are_inverse() -> None:
    pts = np.array([[0.0, 0.0], [12.25, 3.5], [31.0, 23.0]])
    m = pixels_to_metres(pts, (H, W), (1e-8, 2e-8), (1e-6, 0.0))
    np.testing.assert_allclose(m[0], [-15.5e-8 + 1e-6, -11.5 * 2e-8])
    np.testing.assert_allclose(metres_to_pixels(m, (H, W), (1e-8, 2e-8), (1e-6, 0.0)), pts, atol=1e-9)


def test_multi_layer_object_and_probe_modes(tmp_path: Path) -> None:
    obj, pos, probe = _inputs()
    layers = np.stack([obj, obj * 0.5, obj * 0.25])
    modes = np.stack([probe, probe * 0.1])
    prod = load_product_h5(save_product_h5(tmp_path / "p.h5", layers, pos, modes))
    assert prod.object_layers.shape == (3, H, W) and prod.layer_spacing_m.shape == (2,)
    np.testing.assert_array_equal(prod.obj, obj)
    assert prod.probe_array.shape == (1, 2, N, N)
    np.testing.assert_array_equal(prod.probe, probe)


def test_reads_minimal_ptychodus_style_file(tmp_path: Path) -> None:
    """2-D arrays, float32 positions, legacy 'costs', no optional attributes or loss_epochs."""
    obj, pos, probe = _inputs()
    p = tmp_path / "ptychodus.h5"
    with h5py.File(p, "w") as f:
        f.attrs.update(name="x", comments="", detector_object_distance_m=2.0, probe_energy_eV=1e4,
                       exposure_time_s=0.1)
        f["probe_position_indexes"] = np.arange(M, dtype=np.int32)
        f["probe_position_x_m"] = np.zeros(M, np.float32)
        f["probe_position_y_m"] = np.zeros(M, np.float32)
        f["probe"] = probe.astype(np.complex128)
        f["probe"].attrs.update(pixel_width_m=1e-8, pixel_height_m=1e-8)
        f["object"] = obj
        f["object"].attrs.update(center_x_m=0.0, center_y_m=0.0, pixel_width_m=1e-8, pixel_height_m=1e-8)
        f["object_layer_spacing_m"] = np.zeros(0)
        f["costs"] = np.array([1.0, 0.5])
    prod = load_product_h5(p)
    np.testing.assert_allclose(prod.positions, np.tile([(W - 1) / 2, (H - 1) / 2], (M, 1)))
    assert prod.loss_epochs.tolist() == [0, 1] and prod.metadata["tomography_angle_deg"] == 0.0
    assert prod.probe.dtype == np.complex64


def test_not_hdf5_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DataFormatError, match="bad.h5 is not a readable HDF5 file"):
        load_product_h5(bad)
    with pytest.raises(FileNotFoundError, match="product file not found"):
        load_product_h5(tmp_path / "none.h5")


def test_missing_dataset_and_attribute(tmp_path: Path) -> None:
    obj, pos, probe = _inputs()
    p = save_product_h5(tmp_path / "p.h5", obj, pos, probe)
    with h5py.File(p, "a") as f:
        del f["object_layer_spacing_m"]
        del f["loss_values"]
    expected = r"missing datasets \['object_layer_spacing_m', 'loss_values'\]"
    with pytest.raises(DataFormatError, match=expected):
        load_product_h5(p)
    p = save_product_h5(tmp_path / "q.h5", obj, pos, probe)
    with h5py.File(p, "a") as f:
        del f["object"].attrs["center_x_m"]
        del f.attrs["probe_energy_eV"]
        del f.attrs["photon_energy_eV"]
    with pytest.raises(DataFormatError, match="the root lacks the attribute 'photon_energy_eV'"):
        load_product_h5(p)
    with h5py.File(p, "a") as f:
        f.attrs["probe_energy_eV"] = 1.0
    with pytest.raises(DataFormatError, match="'object' lacks the attribute 'center_x_m'"):
        load_product_h5(p)


def test_bad_shapes(tmp_path: Path) -> None:
    obj, pos, probe = _inputs()
    with pytest.raises(DataFormatError, match=r"positions_px must be a finite real \(M, 2\) array"):
        save_product_h5(tmp_path / "p.h5", obj, pos[:, :1], probe)
    with pytest.raises(DataFormatError, match="object must be a non-empty complex array with 2 or 3 dim"):
        save_product_h5(tmp_path / "p.h5", obj[0], pos, probe)
    with pytest.raises(ConfigError, match="pixel_size_m must be .* positive"):
        save_product_h5(tmp_path / "p.h5", obj, pos, probe, pixel_size_m=0.0)
    p = save_product_h5(tmp_path / "p.h5", obj, pos, probe)
    with h5py.File(p, "a") as f:
        del f["probe_position_y_m"]
        f["probe_position_y_m"] = np.zeros(M - 1)
    with pytest.raises(DataFormatError, match=r"probe_position_x_m/_y_m/_indexes have 15/14/15 entries"):
        load_product_h5(p)
