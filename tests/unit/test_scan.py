"""ScanData construction, casting, validation and subsetting."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ptychopinn.data import ScanData
from ptychopinn.errors import DataFormatError, PtychoInputError

M, N, H, W = 12, 16, 48, 40


def _fields(**over: Any) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    f: dict[str, Any] = dict(
        diffraction=rng.uniform(0.0, 2.0, (M, N, N)),
        positions=np.stack([rng.uniform(0, W - 1, M), rng.uniform(0, H - 1, M)], axis=1).astype(np.float32),
        probe=np.exp(1j * rng.uniform(0, 1, (N, N))),
        obj=np.exp(1j * rng.uniform(0, 1, (H, W))),
        positions_start=np.zeros((M, 2), np.float32) + 5.0,
        scan_index=np.arange(M, dtype=np.int32),
        patches=np.exp(1j * rng.uniform(0, 1, (M, N, N))),
        metadata={"nphotons": 1e6},
    )
    f.update(over)
    return f


def test_construction_casts_dtypes() -> None:
    scan = ScanData(**_fields())
    assert scan.diffraction.dtype == np.float32
    assert scan.positions.dtype == np.float64
    assert scan.positions_start is not None and scan.positions_start.dtype == np.float64
    assert scan.probe.dtype == np.complex64
    assert scan.obj is not None and scan.obj.dtype == np.complex64
    assert scan.patches is not None and scan.patches.dtype == np.complex64
    assert scan.scan_index is not None and scan.scan_index.dtype == np.int64
    assert (scan.n_points, scan.N) == (M, N)
    assert scan.metadata == {"nphotons": 1e6}


def test_optional_fields_may_be_absent() -> None:
    scan = ScanData(**_fields(obj=None, positions_start=None, scan_index=None, patches=None, metadata={}))
    assert scan.obj is None and scan.patches is None and scan.metadata == {}


def test_frozen_hashable_and_short_repr() -> None:
    scan = ScanData(**_fields())
    with pytest.raises(AttributeError):
        scan.probe = np.zeros((N, N))  # type: ignore[misc]
    assert scan == scan and len({scan}) == 1
    assert repr(scan).startswith("ScanData(M=12, N=16, obj=(48, 40), optional=['obj'")


def test_subset_selects_points() -> None:
    scan = ScanData(**_fields())
    sub = scan.subset([3, 0, 7])
    assert sub.n_points == 3
    np.testing.assert_array_equal(sub.diffraction, scan.diffraction[[3, 0, 7]])
    np.testing.assert_array_equal(sub.positions, scan.positions[[3, 0, 7]])
    assert sub.scan_index is not None and sub.scan_index.tolist() == [3, 0, 7]
    assert sub.patches is not None and np.array_equal(sub.patches, scan.patches[[3, 0, 7]])  # type: ignore[index]
    mask = np.zeros(M, bool)
    mask[[1, 2]] = True
    assert scan.subset(mask).n_points == 2
    assert scan.subset(slice(0, 5)).n_points == 5


def test_subset_bad_indices() -> None:
    scan = ScanData(**_fields())
    with pytest.raises(PtychoInputError, match=r"indices must lie in \[-12, 11\], found range \[0, 12\]"):
        scan.subset([0, 12])
    with pytest.raises(PtychoInputError, match=r"boolean mask must have shape \(12,\)"):
        scan.subset(np.ones(3, bool))
    with pytest.raises(PtychoInputError, match="1-D integer index array"):
        scan.subset([0.5])
    with pytest.raises(DataFormatError, match="empty scan"):
        scan.subset([])


def test_from_arrays_converts_counts() -> None:
    f = _fields()
    counts = np.round(f.pop("diffraction") ** 2 * 100).astype(np.uint16)
    scan = ScanData.from_arrays(counts, f.pop("positions"), f.pop("probe"), units="auto", **f)
    np.testing.assert_allclose(scan.diffraction, np.sqrt(counts.astype(np.float64)), rtol=1e-6)
    assert scan.metadata["units_detected"] == "intensity"
    assert scan.metadata["input_units"] == "intensity"
    assert scan.metadata["nphotons"] == 1e6


def test_integer_diffraction_needs_units() -> None:
    with pytest.raises(DataFormatError, match=r"diffraction: .*integer data.*units='intensity'"):
        ScanData(**_fields(diffraction=np.ones((M, N, N), np.uint16)))


@pytest.mark.parametrize(
    ("over", "pattern"),
    [
        ({"diffraction": np.ones((M, N))}, r"diffraction: expected shape \(M, N, N\)"),
        ({"diffraction": np.ones((M, N, N + 2))}, r"diffraction: expected square N x N .*found 16 x 18"),
        ({"diffraction": np.ones((M, 15, 15))}, r"diffraction: expected an even pattern size N.*N = 15"),
        ({"diffraction": np.ones((M, 6, 6))}, r"diffraction: expected N >= 8, found N = 6"),
        ({"diffraction": np.ones((0, N, N))}, r"empty scan \(M = 0\)"),
        ({"diffraction": np.ones((M, N, N), np.complex64)}, r"diffraction: expected real amplitude.*complex"),
        ({"diffraction": np.zeros((M, N, N))}, r"all-zero scan"),
        ({"positions": np.zeros((M, 3))}, r"positions: expected shape \(12, 2\)"),
        ({"positions": np.zeros((M - 1, 2)) + 5}, r"positions: expected 12 scan points.*found 11"),
        ({"positions_start": np.zeros((M + 1, 2))}, r"positions_start: expected 12 scan points"),
        ({"scan_index": np.arange(M - 2)}, r"scan_index: expected 12 scan points"),
        ({"scan_index": np.arange(M) + 0.5}, r"scan_index: expected whole numbers"),
        ({"patches": np.ones((M - 1, N, N), np.complex64)}, r"patches: expected 12 scan points"),
        ({"patches": np.ones((M, N, N), np.float32)}, r"patches: expected a complex array"),
        ({"patches": np.ones((M, 8, 8), np.complex64)}, r"patches: expected shape \(12, 16, 16\)"),
        ({"obj": np.ones((4, 4, 4), np.complex64)}, r"obj: expected a 2-D \[H, W\]"),
        ({"metadata": {"a": np.zeros(2)}}, r"metadata: expected JSON-serialisable"),
    ],
)
def test_malformed_fields(over: dict[str, Any], pattern: str) -> None:
    with pytest.raises(DataFormatError, match=pattern):
        ScanData(**_fields(**over))


def test_probe_shape_mismatch_message() -> None:
    f = _fields(diffraction=np.ones((M, 32, 32)), patches=None, probe=np.ones((64, 64), np.complex64))
    with pytest.raises(
        DataFormatError,
        match=r"probe is \(64, 64\) but patterns are \(32, 32\); resample the probe or crop the patterns",
    ):
        ScanData(**f)


def test_non_finite_values_reported_with_count_and_index() -> None:
    d = np.ones((M, N, N))
    d[2, 3, 4] = np.nan
    d[5, 0, 0] = np.inf
    with pytest.raises(DataFormatError, match=r"diffraction: .*2 NaN/Inf values \(first at index \(2, 3, 4"):
        ScanData(**_fields(diffraction=d))
    probe = np.ones((N, N), np.complex64)
    probe[1, 1] = np.nan
    with pytest.raises(DataFormatError, match=r"probe: .*1 NaN/Inf values"):
        ScanData(**_fields(probe=probe))


def test_negative_amplitude_reported() -> None:
    d = np.ones((M, N, N))
    d[4, 1, 2] = -0.5
    with pytest.raises(DataFormatError, match=r"1 negative values \(first at index \(4, 1, 2\)\)"):
        ScanData(**_fields(diffraction=d))


def test_positions_outside_object() -> None:
    pos = np.full((M, 2), 10.0)
    pos[3] = (W - 1 + 0.5, 10.0)  # 0.5 px beyond the right edge
    pos[8] = (-20.0, 10.0)  # the worst one
    with pytest.raises(DataFormatError, match=r"2 of 12 outside; worst is point 8 at \(x=-20, y=10\)"):
        ScanData(**_fields(positions=pos))
    pos[8] = (0.0, H - 1)  # exactly on the edge is inside
    pos[3] = (W - 1, 0.0)
    ScanData(**_fields(positions=pos))
    # without an object there is nothing to check against
    ScanData(**_fields(positions=pos * 100, obj=None))
