"""NPZ reading/writing: round trips, tolerated layouts, malformed files, safety."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import PickleMarker
from ptychopinn.data import ScanData
from ptychopinn.errors import DataFormatError
from ptychopinn.io.npz import describe_npz, load_npz, save_npz

M, N, H, W = 10, 16, 40, 40


def _arrays(**over: Any) -> dict[str, Any]:
    """Keys of a valid legacy scan NPZ (amplitude in diff3d), with overrides."""
    rng = np.random.default_rng(2)
    a: dict[str, Any] = dict(
        diff3d=rng.uniform(0.01, 2.0, (M, N, N)).astype(np.float32),
        probeGuess=np.exp(1j * rng.uniform(0, 1, (N, N))).astype(np.complex64),
        xcoords=rng.uniform(5, 30, M),
        ycoords=rng.uniform(5, 30, M),
    )
    a.update(over)
    return {k: v for k, v in a.items() if v is not None}


def _write(tmp_path: Path, name: str = "scan.npz", **over: Any) -> Path:
    p = tmp_path / name
    np.savez(p, **_arrays(**over))
    return p


def _full_scan() -> ScanData:
    rng = np.random.default_rng(3)
    return ScanData(
        diffraction=rng.uniform(0.0, 1.5, (M, N, N)),
        positions=rng.uniform(5, 30, (M, 2)),
        probe=np.exp(1j * rng.uniform(0, 1, (N, N))),
        obj=np.exp(1j * rng.uniform(0, 1, (H, W))),
        positions_start=rng.uniform(5, 30, (M, 2)),
        scan_index=np.arange(M) % 3,
        patches=np.exp(1j * rng.uniform(0, 1, (M, N, N))),
        metadata={"nphotons": 1e6, "note": "round trip"},
    )


# ----------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("legacy_names", [True, False])
def test_round_trip_all_fields(tmp_path: Path, legacy_names: bool) -> None:
    scan = _full_scan()
    out = save_npz(tmp_path / "s.npz", scan, legacy_names=legacy_names)
    with np.load(out, allow_pickle=False) as f:
        assert ("diff3d" in f.files) == legacy_names and ("diffraction" in f.files) != legacy_names
        assert json.loads(str(f["_metadata"]))["diffraction_units"] == "amplitude"
    back = load_npz(out)
    for name in ("diffraction", "positions", "probe", "obj", "positions_start", "scan_index", "patches"):
        np.testing.assert_array_equal(getattr(back, name), getattr(scan, name), err_msg=name)
    assert back.metadata["nphotons"] == 1e6 and back.metadata["note"] == "round trip"
    assert back.metadata["input_units"] == "amplitude"


def test_save_keeps_name_without_suffix_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "train_data"
    out = save_npz(target, _full_scan())
    assert out == target and target.is_file()
    assert sorted(os.listdir(target.parent)) == ["train_data"]
    save_npz(target, _full_scan().subset([0, 1]))  # replaces the existing file
    assert load_npz(target).n_points == 2
    assert sorted(os.listdir(target.parent)) == ["train_data"]


def test_minimal_file_defaults(tmp_path: Path) -> None:
    scan = load_npz(_write(tmp_path))
    assert scan.obj is None and scan.patches is None and scan.positions_start is None
    assert scan.diffraction.dtype == np.float32 and scan.positions.dtype == np.float64
    np.testing.assert_array_equal(scan.positions[:, 0], _arrays()["xcoords"])


def test_diffraction_key_preferred_over_diff3d(tmp_path: Path) -> None:
    new = np.full((M, N, N), 0.5, np.float32)
    scan = load_npz(_write(tmp_path, diffraction=new))
    np.testing.assert_array_equal(scan.diffraction, new)
    p = _write(tmp_path, "both.npz", diffraction=np.ones((M, 8, 8), np.float32))
    with pytest.raises(DataFormatError, match=r"both 'diffraction' \(10, 8, 8\) and 'diff3d' \(10, 16, 16\)"):
        load_npz(p)
    only_new = _arrays(diffraction=new)
    del only_new["diff3d"]
    np.savez(tmp_path / "new.npz", **only_new)
    assert load_npz(tmp_path / "new.npz").n_points == M


def test_metadata_json_read(tmp_path: Path) -> None:
    meta = {"physics_parameters": {"nphotons": 1e9}, "N": N}
    scan = load_npz(_write(tmp_path, _metadata=np.array(json.dumps(meta))))
    assert scan.metadata["physics_parameters"] == {"nphotons": 1e9}
    assert scan.metadata["units_detected"] == "amplitude"


def test_metadata_units_hint_used_by_auto(tmp_path: Path) -> None:
    # small integer-valued floats would be guessed as counts; the file says they are amplitudes
    d = np.full((M, N, N), 2.0, np.float32)
    meta = np.array(json.dumps({"diffraction_units": "amplitude"}))
    scan = load_npz(_write(tmp_path, diff3d=d, _metadata=meta))
    np.testing.assert_array_equal(scan.diffraction, d)
    assert "diffraction_units" not in scan.metadata
    assert load_npz(_write(tmp_path, "n.npz", diff3d=d)).metadata["input_units"] == "intensity"


# ----------------------------------------------------------------------------------- tolerated layouts
def test_ptychodus_export_layout(tmp_path: Path) -> None:
    """uint16 counts in diff3d, (1, N, N) probe, bad_pixels extra key, scan_index zeros."""
    counts = np.random.default_rng(4).poisson(50.0, (M, N, N)).astype(np.uint16)
    a = _arrays(diff3d=counts, probeGuess=_arrays()["probeGuess"][None], bad_pixels=np.zeros((N, N), bool),
                scan_index=np.zeros(M, np.int64), objectGuess=np.ones((H, W), np.complex128),
                xcoords_start=_arrays()["xcoords"], ycoords_start=_arrays()["ycoords"])
    np.savez(tmp_path / "train_data.npz", **a)
    scan = load_npz(tmp_path / "train_data.npz")
    np.testing.assert_allclose(scan.diffraction, np.sqrt(counts.astype(np.float64)), rtol=1e-6)
    assert scan.metadata["units_detected"] == "intensity"
    np.testing.assert_array_equal(scan.probe, a["probeGuess"][0])


def test_explicit_units_argument(tmp_path: Path) -> None:
    p = _write(tmp_path, diff3d=np.full((M, N, N), 9.0))
    assert np.allclose(load_npz(p, units="intensity").diffraction, 3.0)
    assert np.allclose(load_npz(p, units="amplitude").diffraction, 9.0)


@pytest.mark.parametrize("probe_shape", [(1, N, N), (N, N, 1), (1, 1, N, N)])
def test_probe_layouts(tmp_path: Path, probe_shape: tuple[int, ...]) -> None:
    probe = _arrays()["probeGuess"]
    scan = load_npz(_write(tmp_path, probeGuess=probe.reshape(probe_shape)))
    np.testing.assert_array_equal(scan.probe, probe)


def test_multiple_probe_modes_rejected(tmp_path: Path) -> None:
    p = _write(tmp_path, probeGuess=np.ones((3, N, N), np.complex64))
    with pytest.raises(DataFormatError, match=r"3 incoherent modes.*not supported.*probeGuess=probe\[0\]"):
        load_npz(p)


def test_channel_last_diffraction_and_patches(tmp_path: Path) -> None:
    d = _arrays()["diff3d"]
    y = np.exp(1j * np.ones((M, N, N))).astype(np.complex64)
    scan = load_npz(_write(tmp_path, diff3d=d[..., None], Y=y[..., None]))
    np.testing.assert_array_equal(scan.diffraction, d)
    np.testing.assert_array_equal(scan.patches, y)  # type: ignore[arg-type]


def test_legacy_hwm_layout_transposed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _arrays()["diff3d"]
    with caplog.at_level("INFO", logger="ptychopinn.io"):
        scan = load_npz(_write(tmp_path, diff3d=np.moveaxis(d, 0, 2)))
    np.testing.assert_array_equal(scan.diffraction, d)
    assert scan.diffraction.flags["C_CONTIGUOUS"]
    assert "legacy layout" in caplog.text


def test_extra_keys_ignored_even_object_arrays(tmp_path: Path) -> None:
    a = _arrays(bad_pixels=np.zeros((N, N), bool), ground_truth_patches=np.ones((M, N, N), np.complex64))
    a["notes"] = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "x.npz", **a)
    assert load_npz(tmp_path / "x.npz").n_points == M


# ----------------------------------------------------------------------------------- malformed files
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="NPZ file not found: .*nope.npz"):
        load_npz(tmp_path / "nope.npz")


def test_missing_keys_listed(tmp_path: Path) -> None:
    p = _write(tmp_path, probeGuess=None, ycoords=None)
    with pytest.raises(
        DataFormatError,
        match=r"missing required keys \['probeGuess', 'ycoords'\]; found keys \['diff3d', 'xcoords'\]",
    ):
        load_npz(p)


def test_coordinate_length_mismatches(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="xcoords has 10 entries but ycoords has 9"):
        load_npz(_write(tmp_path, ycoords=np.zeros(M - 1)))
    with pytest.raises(DataFormatError, match=r"'diff3d' has 12 patterns but xcoords/ycoords have 10"):
        load_npz(_write(tmp_path, "b.npz", diff3d=np.ones((M + 2, N, N), np.float32)))
    with pytest.raises(DataFormatError, match="only one of xcoords_start/ycoords_start"):
        load_npz(_write(tmp_path, "c.npz", xcoords_start=np.zeros(M)))


def test_real_y_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"'Y' \(ground-truth patches\) must be complex.*lost the"):
        load_npz(_write(tmp_path, Y=np.ones((M, N, N), np.float64)))


def test_validation_errors_carry_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"scan.npz: probe is \(8, 8\) but patterns are \(16, 16\)"):
        load_npz(_write(tmp_path, probeGuess=np.ones((8, 8), np.complex64)))
    counts = np.ones((M, N, N), np.int32)
    counts[0, 0, 0] = -3
    with pytest.raises(DataFormatError, match=r"neg.npz: intensity patterns contain 1 negative counts"):
        load_npz(_write(tmp_path, "neg.npz", diff3d=counts))


def test_pickled_arrays_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    trap = np.empty(1, dtype=object)
    trap[0] = PickleMarker(marker)
    np.savez(tmp_path / "evil.npz", **_arrays(diff3d=trap))
    with pytest.raises(DataFormatError, match=r"key 'diff3d' holds a pickled object array.*refuses"):
        load_npz(tmp_path / "evil.npz")
    assert not marker.exists()
    # a pickled _metadata is only skipped, with a warning
    np.savez(tmp_path / "meta.npz", **_arrays(_metadata=trap))
    with pytest.warns(UserWarning, match="'_metadata' is a pickled object array; skipped"):
        scan = load_npz(tmp_path / "meta.npz")
    assert not marker.exists()
    assert "input_units" in scan.metadata
    info = describe_npz(tmp_path / "evil.npz")
    assert info["keys"]["diff3d"]["dtype"] == "object" and not info["valid"]
    assert not marker.exists()


def test_truncated_file(tmp_path: Path) -> None:
    p = _write(tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"scan.npz is not a readable NPZ file \(BadZipFile"):
        load_npz(p)


def test_corrupt_member(tmp_path: Path) -> None:
    p = _write(tmp_path)
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("diff3d.npy")
    raw = bytearray(p.read_bytes())
    body = info.header_offset + 30 + len(info.filename) + 200  # inside the array data
    raw[body : body + 64] = bytes(64)
    p.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match=r"not a readable NPZ file \(key 'diff3d'.*corrupt"):
        load_npz(p)


def test_non_zip_and_npy_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("hello, not a zip\n")
    with pytest.raises(DataFormatError, match="notes.npz is not a readable NPZ file"):
        load_npz(text)
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(DataFormatError, match=r"single.npy is a single \.npy array, not an NPZ archive"):
        load_npz(tmp_path / "single.npy")
    with pytest.raises(DataFormatError, match="is a directory"):
        load_npz(tmp_path)


# ----------------------------------------------------------------------------------- describe
def test_describe_valid_and_invalid(tmp_path: Path) -> None:
    good = describe_npz(save_npz(tmp_path / "g.npz", _full_scan()))
    assert good["valid"] and good["errors"] == [] and good["n_points"] == M and good["N"] == N
    assert good["keys"]["diff3d"] == {"shape": [M, N, N], "dtype": "float32"}
    json.dumps(good)  # serialisable for the CLI
    bad = describe_npz(_write(tmp_path, ycoords=None))
    assert not bad["valid"] and "missing required keys ['ycoords']" in bad["errors"][0]
    assert "xcoords" in bad["keys"]
    missing = describe_npz(tmp_path / "absent.npz")
    assert missing["errors"] == [f"NPZ file not found: {tmp_path / 'absent.npz'}"]
