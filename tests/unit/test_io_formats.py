"""The scan-I/O layer: every registered format round-trips, is recognised from its content, and reads to
the same ScanData; CXI geometry agrees with ptychodus's own reader; probes come from files or the data."""

from __future__ import annotations

import json
import logging
import os
import stat
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.io.atomic import atomic_write, default_file_mode
from ptychopinn.io.cxi import EV_J, HC_EV_M, save_cxi
from ptychopinn.io.hdf5 import save_h5_scan
from ptychopinn.io.npz import save_npz
from ptychopinn.io.registry import describe_file, detect_format, load_object, load_probe, load_scan

M, N = 24, 16
PIXEL, ENERGY, DISTANCE = 20e-9, 8000.0, 2.0


def _scan(**over: object) -> ScanData:
    rng = np.random.default_rng(1)
    fields: dict = {
        "diffraction": rng.uniform(0.1, 3.0, (M, N, N)).astype(np.float32),
        "positions": rng.uniform(N / 2, 30.0, (M, 2)),
        "probe": (rng.normal(size=(N, N)) + 1j * rng.normal(size=(N, N))).astype(np.complex64),
        "obj": np.exp(1j * rng.uniform(-1, 1, (48, 48))).astype(np.complex64),
        "pixel_size_m": PIXEL, "energy_ev": ENERGY, "distance_m": DISTANCE,
    }
    fields.update(over)
    return ScanData(**fields)


@pytest.mark.parametrize("compression", ["none", "gzip", "bitshuffle-lz4", "lz4"])
def test_hdf5_round_trip(tmp_path: Path, compression: str) -> None:
    s = _scan()
    path = save_h5_scan(tmp_path / "s.h5", s, compression=compression, chunk_rows=5)
    with h5py.File(path) as f:
        assert (f["diff3d"].chunks is None) == (compression == "none")
    assert detect_format(path).name == "hdf5"
    r = load_scan(path)
    np.testing.assert_array_equal(r.diffraction, s.diffraction)
    np.testing.assert_array_equal(r.positions, s.positions)
    np.testing.assert_array_equal(r.probe, s.probe)
    np.testing.assert_array_equal(r.obj, s.obj)
    assert (r.pixel_size_m, r.energy_ev, r.distance_m) == (PIXEL, ENERGY, DISTANCE)
    assert r.metadata["input_units"] == "amplitude"


def test_npz_round_trip_keeps_physics(tmp_path: Path) -> None:
    r = load_scan(save_npz(tmp_path / "s.npz", _scan()))
    assert (r.pixel_size_m, r.energy_ev, r.distance_m) == (PIXEL, ENERGY, DISTANCE)
    assert "pixel_size_m" not in r.metadata


def test_compressed_hdf5_counts_read_in_batches(tmp_path: Path) -> None:
    """uint16 counts, gzip-chunked, a stack above the on-disk threshold: decoded batch by batch into a file."""
    rng = np.random.default_rng(2)
    counts = rng.poisson(20.0, (M, N, N)).astype(np.uint16)
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("diffraction", data=counts, chunks=(4, N, N), compression="gzip")
        f["xcoords"], f["ycoords"] = np.full(M, 9.0), np.full(M, 9.0)
        f["probeGuess"] = np.ones((N, N), np.complex64)
    r = load_scan(path, threshold=1024)
    base = r.diffraction
    while not isinstance(base, np.memmap):
        base = base.base
    assert base.mode == "r" and not r.diffraction.flags.writeable
    np.testing.assert_allclose(r.diffraction, np.sqrt(counts.astype(np.float64)), rtol=1e-6)
    assert r.metadata["input_units"] == "intensity"
    np.testing.assert_array_equal(load_scan(path).diffraction, r.diffraction)  # in memory: same values


def test_cxi_geometry_and_positions(tmp_path: Path) -> None:
    s = _scan(obj=None)
    path = save_cxi(tmp_path / "s.cxi", s)
    assert detect_format(path).name == "cxi"
    r = load_scan(path)
    assert r.pixel_size_m == pytest.approx(PIXEL, rel=1e-12)
    assert r.energy_ev == pytest.approx(ENERGY) and r.distance_m == DISTANCE
    np.testing.assert_allclose(r.positions - r.positions.min(0), s.positions - s.positions.min(0), atol=1e-9)
    np.testing.assert_allclose(r.diffraction, s.diffraction, rtol=1e-6)
    assert r.metadata["input_units"] == "intensity"  # frames are counts, as the writer's units attribute says
    np.testing.assert_array_equal(r.probe, s.probe)


def test_cxi_probe_modes_are_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A modes-first illumination [K, N, N]: mode 0 is the probe, all K the scan's probe_modes."""
    s = _scan(obj=None)
    path = save_cxi(tmp_path / "s.cxi", s)
    modes = np.stack([s.probe, 0.4 * s.probe.T, 0.2 * s.probe[::-1]]).astype(np.complex64)
    with h5py.File(path, "r+") as f:
        del f["entry_1/instrument_1/source_1/illumination"]
        f["entry_1/instrument_1/source_1/illumination"] = modes
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        r = load_scan(path)
    np.testing.assert_array_equal(r.probe, s.probe)
    np.testing.assert_array_equal(r.probe_modes, modes)
    assert r.metadata["probe_modes"] == 3
    assert any("3 incoherent modes" in rec.getMessage() for rec in caplog.records)
    np.testing.assert_array_equal(load_probe(path), s.probe)


def _cxi(path: Path, *, energy: float = ENERGY * EV_J, energy_units: str | None = None, n: int = N,
         frames: np.ndarray | None = None, translation: np.ndarray | None = None, distance: float = 1.5,
         det_px: float = 75e-6, mask: np.ndarray | None = None, drop: tuple[str, ...] = ()) -> Path:
    rng = np.random.default_rng(3)
    frames = rng.poisson(30.0, (M, n, n)).astype(np.uint32) if frames is None else frames
    translation = np.c_[rng.uniform(-2e-6, 2e-6, (M, 2)), np.zeros(M)] if translation is None else translation
    items = {"entry_1/data_1/data": frames, "entry_1/sample_1/geometry_1/translation": translation,
             "entry_1/instrument_1/source_1/energy": energy, "entry_1/instrument_1/detector_1/distance": distance,
             "entry_1/instrument_1/detector_1/x_pixel_size": det_px,
             "entry_1/instrument_1/detector_1/y_pixel_size": det_px}
    if mask is not None:
        items["entry_1/instrument_1/detector_1/mask"] = mask
    with h5py.File(path, "w") as f:
        for key, value in items.items():
            if key not in drop:
                f[key] = value
        if energy_units is not None and "entry_1/instrument_1/source_1/energy" not in drop:
            f["entry_1/instrument_1/source_1/energy"].attrs["units"] = energy_units
    return path


def test_cxi_energy_in_ev_and_conversion_to_pixels(tmp_path: Path) -> None:
    joules = load_scan(_cxi(tmp_path / "j.cxi"), probe="estimate")
    ev = load_scan(_cxi(tmp_path / "e.cxi", energy=ENERGY, energy_units="eV"), probe="estimate")
    dx = HC_EV_M / ENERGY * 1.5 / (N * 75e-6)
    assert joules.pixel_size_m == pytest.approx(dx) and ev.pixel_size_m == pytest.approx(dx)
    with h5py.File(tmp_path / "e.cxi") as f:
        t = f["entry_1/sample_1/geometry_1/translation"][:, :2]
    np.testing.assert_allclose(ev.positions, (t - t.min(0)) / dx + N / 2)
    assert ev.metadata["probe_source"].startswith("estimated from the mean diffraction pattern")


def test_cxi_agrees_with_ptychodus_reader(tmp_path: Path) -> None:
    pytest.importorskip("ptychodus")
    from ptychodus.api.constants import energy_eV_to_wavelength_m
    from ptychodus.api.propagate import compute_far_field_pixel_geometry
    from ptychodus.plugins.cxi_file import CXIDiffractionFileReader

    path = _cxi(tmp_path / "p.cxi")
    ours = load_scan(path, probe="estimate")
    md = CXIDiffractionFileReader().read(path).get_metadata()
    theirs = compute_far_field_pixel_geometry(
        md.detector_pixel_geometry, md.detector_extent,
        wavelength_m=energy_eV_to_wavelength_m(md.photon_energy_eV), propagation_distance_m=md.detector_distance_m)
    assert ours.energy_ev == pytest.approx(md.photon_energy_eV, rel=1e-9)
    assert ours.distance_m == pytest.approx(md.detector_distance_m)
    assert ours.pixel_size_m == pytest.approx(theirs.width_m, rel=1e-6)
    assert ours.pixel_size_m == pytest.approx(theirs.height_m, rel=1e-6)


def test_cxi_crop_around_zero_order_and_mask(tmp_path: Path) -> None:
    big = np.zeros((M, 40, 40), np.uint32)
    big[:, 22 - 8:22 + 8, 17 - 8:17 + 8] = np.random.default_rng(4).poisson(50.0, (M, 16, 16))
    big[:, 22, 17] = 100000  # a bright zero order at row 22, column 17
    mask = np.zeros((40, 40), np.uint32)
    mask[20, 15] = 1
    mask[0, 0] = 1  # outside the crop
    r = load_scan(_cxi(tmp_path / "big.cxi", frames=big, n=40, mask=mask), probe="estimate", crop=16)
    assert r.N == 16
    np.testing.assert_allclose(r.diffraction[:, 8, 8], np.sqrt(100000.0), rtol=1e-6)
    assert r.metadata["bad_pixels"] == 1
    assert r.pixel_size_m == pytest.approx(HC_EV_M / ENERGY * 1.5 / (16 * 75e-6))


def test_same_scan_in_every_format_gives_the_same_arrays(tmp_path: Path) -> None:
    s = _scan(obj=None)
    scans = [load_scan(save_npz(tmp_path / "s.npz", s)),
             load_scan(save_h5_scan(tmp_path / "s.h5", s, compression="gzip")),
             load_scan(save_cxi(tmp_path / "s.cxi", s, counts=False))]
    for r in scans[1:]:
        np.testing.assert_allclose(r.diffraction, scans[0].diffraction, rtol=1e-6)
        np.testing.assert_allclose(r.positions - r.positions.min(0), scans[0].positions - scans[0].positions.min(0),
                                   atol=1e-9)
        np.testing.assert_array_equal(r.probe, scans[0].probe)
        assert r.pixel_size_m == pytest.approx(scans[0].pixel_size_m)


def test_reconstruction_npz_is_a_registered_format(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ptychopinn.io.reconstruction import save_reconstruction_npz

    obj = np.exp(1j * np.linspace(0, 1, 400)).reshape(20, 20).astype(np.complex64)
    rec = SimpleNamespace(obj=obj, coverage=np.ones((20, 20)), origin=(1.0, 2.0), positions=np.zeros((3, 2)))
    path = save_reconstruction_npz(tmp_path / "reconstruction.npz", rec, extra={"pixel_size_m": PIXEL},
                                   arrays={"probe": np.ones((N, N), np.complex64)})
    assert stat.S_IMODE(path.stat().st_mode) == default_file_mode()
    kind, info, valid = describe_file(path)
    assert (kind, valid, info["object_shape"]) == ("reconstruction", True, [20, 20])
    assert info["metadata"]["pixel_size_m"] == PIXEL
    np.testing.assert_array_equal(load_object(path), obj)
    np.testing.assert_array_equal(load_probe(path), np.ones((N, N), np.complex64))
    with pytest.raises(DataFormatError, match="is a reconstruction NPZ, not a scan"):
        load_scan(path)


def test_probe_from_another_file(tmp_path: Path) -> None:
    s = _scan()
    other = save_npz(tmp_path / "other.npz", _scan(probe=np.full((N, N), 2 + 1j, np.complex64)))
    path = save_h5_scan(tmp_path / "s.h5", s)
    r = load_scan(path, probe=str(other))
    np.testing.assert_array_equal(r.probe, np.full((N, N), 2 + 1j, np.complex64))
    assert r.metadata["probe_source"] == f"from {other}"


def test_probe_estimate_has_the_mean_spectrum() -> None:
    from ptychopinn.io.probe import estimate_probe

    diff = np.random.default_rng(5).uniform(0, 2, (10, N, N)).astype(np.float32)
    probe = estimate_probe(diff)
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2(np.fft.ifftshift(probe), norm="ortho")))
    np.testing.assert_allclose(spectrum, np.sqrt((diff.astype(np.float64) ** 2).mean(0)), rtol=1e-4, atol=1e-5)


def test_probe_auto_estimates_only_where_the_file_has_none(tmp_path: Path) -> None:
    """``probe='auto'``: the file's probe where it has one; an estimate (marked as such) where a reader reports
    that it has none; a malformed probe is still an error, not a reason to estimate."""
    from ptychopinn.errors import ProbeNotFoundError
    from ptychopinn.io.probe import probe_is_estimated

    s = _scan(obj=None)
    path = save_cxi(tmp_path / "s.cxi", s)
    with_probe = load_scan(path, probe="auto")
    np.testing.assert_array_equal(with_probe.probe, s.probe)
    assert not probe_is_estimated(with_probe.metadata)
    with h5py.File(path, "r+") as f:
        del f["entry_1/instrument_1/source_1/illumination"]
    assert probe_is_estimated(load_scan(path, probe="auto").metadata)
    with pytest.raises(ProbeNotFoundError, match="no probe"):
        load_probe(path)
    with h5py.File(path, "r+") as f:
        f["entry_1/instrument_1/source_1/illumination"] = np.full((N, N), np.nan, np.complex64)
    with pytest.raises(DataFormatError, match="NaN/Inf"):
        load_scan(path, probe="auto")


def test_content_not_name_decides(tmp_path: Path) -> None:
    s = _scan()
    misnamed = save_h5_scan(tmp_path / "scan.npz", s)  # an HDF5 file with an .npz name
    assert detect_format(misnamed).name == "hdf5"
    np.testing.assert_array_equal(load_scan(misnamed).diffraction, s.diffraction)
    png = tmp_path / "image.h5"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataFormatError, match="not a readable NPZ file nor an HDF5 file"):
        load_scan(png)


def test_zip_damage_gives_one_line_errors(tmp_path: Path) -> None:
    good = save_npz(tmp_path / "g.npz", _scan())
    raw = good.read_bytes()
    with zipfile.ZipFile(good) as zf:
        cd = zf.start_dir  # offset of the central directory
    broken = tmp_path / "cd.npz"
    broken.write_bytes(raw[:cd] + b"XX" + raw[cd + 2:])
    with pytest.raises(DataFormatError, match="not a readable NPZ file"):
        load_scan(broken)
    name = b"xcoords.npy"
    at = next(k for k in range(cd, len(raw))
              if raw[k:k + 4] == b"PK\x01\x02" and raw[k + 46:k + 46 + len(name)] == name)
    for field, value, fragment in ((8, 0x1, "member 'xcoords' is encrypted"), (10, 99, "compression method 99")):
        data = bytearray(raw)
        data[at + field:at + field + 2] = (int.from_bytes(data[at + field:at + field + 2], "little") | value
                                           if field == 8 else value).to_bytes(2, "little")
        bad = tmp_path / f"bad{field}.npz"
        bad.write_bytes(bytes(data))
        with pytest.raises(DataFormatError, match=fragment):
            load_scan(bad)


def test_special_files_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(DataFormatError, match="is a named pipe"):
        load_scan(fifo)
    if Path("/dev/zero").exists():
        with pytest.raises(DataFormatError, match="is a device"):
            load_scan("/dev/zero")


def test_declared_sizes_checked_before_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_npz(tmp_path / "s.npz", _scan())
    monkeypatch.setenv("PTYCHOPINN_MAX_MEMORY", "2K")
    with pytest.raises(DataFormatError, match="declares shape .* more than the limit .*PTYCHOPINN_MAX_MEMORY"):
        load_scan(path)
    monkeypatch.setenv("PTYCHOPINN_MAX_MEMORY", "lots")
    with pytest.raises(ConfigError, match="PTYCHOPINN_MAX_MEMORY: expected a number of bytes"):
        load_scan(path)
    monkeypatch.delenv("PTYCHOPINN_MAX_MEMORY")
    monkeypatch.setenv("PTYCHOPINN_MMAP_THRESHOLD", "-3")
    with pytest.raises(ConfigError, match="PTYCHOPINN_MMAP_THRESHOLD"):
        load_scan(path)


def test_non_numeric_dtypes_refused(tmp_path: Path) -> None:
    s = _scan()
    arrays = {"diff3d": s.diffraction, "xcoords": s.positions[:, 0].astype("m8[s]"),
              "ycoords": s.positions[:, 1], "probeGuess": s.probe}
    np.savez(tmp_path / "td.npz", **arrays)
    with pytest.raises(DataFormatError, match="'xcoords' must be real numbers"):
        load_scan(tmp_path / "td.npz")
    arrays.update(xcoords=s.positions[:, 0], diff3d=s.diffraction.astype("m8[s]"))
    np.savez(tmp_path / "tdd.npz", **arrays)
    with pytest.raises(DataFormatError, match="must be a numeric"):
        load_scan(tmp_path / "tdd.npz")


def test_product_nan_pixel_size_refused(tmp_path: Path) -> None:
    from ptychopinn.io.product_h5 import load_product_h5, save_product_h5

    path = save_product_h5(tmp_path / "p.h5", np.ones((20, 20), np.complex64), np.full((3, 2), 9.0),
                           np.ones((N, N), np.complex64), pixel_size_m=PIXEL,
                           metadata={"photon_energy_eV": ENERGY, "detector_object_distance_m": DISTANCE})
    assert stat.S_IMODE(path.stat().st_mode) == default_file_mode()
    assert detect_format(path).name == "product"
    assert load_product_h5(path).metadata["photon_energy_eV"] == ENERGY
    with h5py.File(path, "r+") as f:
        f["object"].attrs["pixel_width_m"] = np.nan
    with pytest.raises(DataFormatError, match="pixel sizes must be finite"):
        load_product_h5(path)


def test_atomic_write_mode_and_cleanup(tmp_path: Path) -> None:
    target = tmp_path / "out" / "m.json"
    with atomic_write(target, "w") as fh:
        json.dump({"a": 1}, fh)
    assert json.loads(target.read_text()) == {"a": 1}
    assert stat.S_IMODE(target.stat().st_mode) == default_file_mode()
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "out" / "x.bin") as fh:
        fh.write(b"half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.json"]


def test_cli_reads_cxi_and_npz_with_crop(tmp_path: Path) -> None:
    from ptychopinn.cli import main

    big = np.zeros((M, 40, 40), np.uint32)
    big[:, 22 - 16:22 + 16, 17 - 16:17 + 16] = np.random.default_rng(5).poisson(50.0, (M, 32, 32))
    big[:, 22, 17] = 100000
    cxi = _cxi(tmp_path / "big.cxi", frames=big, n=40)
    out = tmp_path / "refined"
    assert main(["refine", str(cxi), "--crop", "32", "--probe", "estimate", "--flat", "--iterations", "2",
                 "--output-dir", str(out), "--quiet"]) == 0
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert z["probe"].shape == (32, 32)
    npz = save_npz(tmp_path / "s.npz", _scan(obj=None))
    assert main(["refine", str(npz), "--crop", "8", "--crop-centre", "8,8", "--flat", "--iterations", "1",
                 "--output-dir", str(tmp_path / "npz"), "--quiet"]) == 0
    with np.load(tmp_path / "npz" / "reconstruction.npz", allow_pickle=False) as z:
        assert z["probe"].shape == (8, 8)
