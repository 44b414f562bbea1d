"""Property tests: random arrays, shapes, dtypes and bytes thrown at the readers either load a valid object or
raise :class:`ptychopinn.errors.PtychoInputError`, never anything else."""

from __future__ import annotations

import pickle
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_corpus as hc  # noqa: E402

from ptychopinn.data.scan import ScanData  # noqa: E402
from ptychopinn.errors import PtychoInputError  # noqa: E402
from ptychopinn.io.archive import Archive, load_archive  # noqa: E402
from ptychopinn.io.npz import load_npz  # noqa: E402

FUZZ = settings(deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])

DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int16, np.uint8, np.int64, np.complex64,
                          np.complex128, np.bool_, np.dtype("<U2"), np.dtype("S3")])
KEYS = ("diff3d", "diffraction", "probeGuess", "xcoords", "ycoords", "xcoords_start", "ycoords_start",
        "scan_index", "objectGuess", "Y", "_metadata", "bad_pixels")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> hc.Shared:
    return hc.build_shared(tmp_path_factory.mktemp("fuzz_shared"))


@st.composite
def random_array(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def plausible_scan(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Mostly-right scans with one or two fields replaced by random arrays (finds checks that are missing)."""
    m = draw(st.integers(0, 5))
    n = draw(st.sampled_from([0, 1, 7, 8, 10, 16]))
    arrays = {
        "diff3d": draw(hnp.arrays(np.float32, (m, n, n), elements=st.floats(-1, 1e6, width=32))),
        "probeGuess": draw(hnp.arrays(np.complex64, (n, n))),
        "xcoords": draw(hnp.arrays(np.float64, (m,))),
        "ycoords": draw(hnp.arrays(np.float64, (m,))),
    }
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True)):
        arrays[key] = draw(random_array())
    for key in draw(st.lists(st.sampled_from(sorted(arrays)), max_size=1)):
        del arrays[key]
    return arrays


def _expect_npz(path: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scan = load_npz(path)
    except PtychoInputError:
        return
    assert isinstance(scan, ScanData)
    scan.validate()


@FUZZ
@given(arrays=st.dictionaries(st.sampled_from(KEYS), random_array(), max_size=6))
def test_load_npz_random_arrays(arrays: dict[str, np.ndarray]) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.npz"
        np.savez(p, **arrays)
        _expect_npz(p)


@FUZZ
@given(arrays=plausible_scan())
def test_load_npz_plausible_scans(arrays: dict[str, np.ndarray]) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.npz"
        np.savez(p, **arrays)
        _expect_npz(p)


@FUZZ
@given(data=st.data(), compressed=st.booleans())
def test_load_npz_byte_flips(data: st.DataObject, compressed: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.npz"
        (np.savez_compressed if compressed else np.savez)(p, **hc.scan_arrays(m=2, n=8))
        raw = bytearray(p.read_bytes())
        flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1,
                                   max_size=8))
        for pos, value in flips:
            raw[pos] = value
        cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
        p.write_bytes(bytes(raw[:cut]))
        _expect_npz(p)


@FUZZ
@given(blob=st.binary(max_size=2048), prefix=st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"]))
def test_load_npz_random_bytes(blob: bytes, prefix: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.npz"
        p.write_bytes(prefix + blob)
        _expect_npz(p)


def test_load_npz_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "absent.npz")


# ------------------------------------------------------------------------------------------ archives
MEMBER_NAMES = ["manifest.json", "config.json", "weights.safetensors", "metadata.json", "notes.txt", "x.pt",
                "../up.json", "/abs.json", "a\\b.json", "sub/", "sub/extra.json", "params.dill", "model.keras",
                "model.pth", "run.sh", ""]


def _expect_archive(path: Path) -> None:
    try:
        archive = load_archive(path)
    except PtychoInputError:
        return
    assert isinstance(archive, Archive)


@FUZZ
@given(blob=st.binary(max_size=4096), prefix=st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06"]))
def test_load_archive_random_bytes(blob: bytes, prefix: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "wts.h5.zip"
        p.write_bytes(prefix + blob)
        _expect_archive(p)


@FUZZ
@given(data=st.data())
def test_load_archive_random_member_sets(shared: hc.Shared, data: st.DataObject) -> None:
    valid = hc.members_of(shared.archive)
    contents = st.one_of(st.sampled_from(sorted(valid.values())), st.binary(max_size=256),
                         st.just(pickle.dumps([1, 2], protocol=4)), st.just(b"{}"), st.just(b"[]"))
    names = data.draw(st.lists(st.sampled_from(MEMBER_NAMES), max_size=6))
    members = [(n, data.draw(contents)) for n in names]
    if data.draw(st.booleans()):  # start from the valid set so deeper checks are reached
        members = [*valid.items(), *members]
    if data.draw(st.booleans()):
        try:
            members = list(hc.fix_manifest(dict(members)).items())
        except (KeyError, ValueError):
            pass
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        p = Path(d) / "wts.h5.zip"
        with zipfile.ZipFile(p, "w", compression=data.draw(st.sampled_from([zipfile.ZIP_STORED,
                                                                             zipfile.ZIP_DEFLATED]))) as zf:
            for name, content in members:
                zf.writestr(zipfile.ZipInfo(name or "unnamed"), content)
        _expect_archive(p)


@FUZZ
@given(data=st.data())
def test_load_archive_byte_flips(shared: hc.Shared, data: st.DataObject) -> None:
    raw = bytearray(shared.archive.read_bytes())
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=8))
    for pos, value in flips:
        raw[pos] = value
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "wts.h5.zip"
        p.write_bytes(bytes(raw[:cut]))
        _expect_archive(p)


def test_load_archive_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_archive(tmp_path / "absent.zip")
