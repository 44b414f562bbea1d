"""Malformed tike files (bzip2-compressed or plain NPZ): ``info`` and ``refine`` exit 2 with one line naming the
problem, write nothing, never unpickle; a bzip2 bomb is refused before it is decompressed."""

from __future__ import annotations

import bz2
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import PickleMarker, write_tike
from ptychopinn.cli import main
from ptychopinn.errors import PtychoInputError
from ptychopinn.io.registry import load_scan

M, N = 8, 16


def _good() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:N, :N] - N // 2
    return {"data": rng.poisson(20.0, (1, M, N, N)).astype(np.float32),
            "scan": rng.uniform(0, 20, (1, M, 2)).astype(np.float32),
            "probe": np.exp(-(xx ** 2 + yy ** 2) / 20.0).astype(np.complex64)[None, None, None, None]}


def _with(**changes: Any) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        arrays = {k: v for k, v in {**_good(), **changes}.items() if v is not None}
        return write_tike(path, **arrays)
    return make


def _bytes(content: bytes) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.write_bytes(content)
        return path
    return make


def _truncated(path: Path) -> Path:
    full = _with()(path).read_bytes()
    path.write_bytes(full[: len(full) // 2])
    return path


def _trailing_garbage(path: Path) -> Path:
    path.write_bytes(_with()(path).read_bytes() + b"not bzip2 at all")
    return path


def _zip_without_tike_keys(path: Path) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    path.write_bytes(bz2.compress(buf.getvalue()))
    return path


def _nan(key: str) -> Callable[[Path], Path]:
    arr = _good()[key].copy()
    arr.reshape(-1)[3] = np.nan
    return _with(**{key: arr})


CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("truncated-bz2", _truncated, "not a readable bzip2 file"),
    ("trailing-garbage", _trailing_garbage, "not a readable bzip2 file"),
    ("bz2-of-text", _bytes(bz2.compress(b"just some text, not an archive")), "bzip2 content is not an NPZ"),
    ("zip-without-tike-keys", _zip_without_tike_keys, "tike file lacks 'data'"),
    ("no-scan", _with(scan=None), "tike file lacks 'scan'"),
    ("no-probe", _with(probe=None), "--probe FILE or --probe estimate"),
    ("data-rank", _with(data=np.ones((M, N), np.float32)), "must be [..., M, N, N] photon counts"),
    ("two-views", _with(data=np.ones((2, M, N, N), np.float32)), "leading axes of length 1"),
    ("no-frames", _with(data=np.ones((1, 0, N, N), np.float32), scan=np.ones((1, 0, 2), np.float32)),
     "holds no frames"),
    ("frames-not-square", _with(data=np.ones((1, M, N, N + 2), np.float32)), "expected square N x N frames"),
    ("odd-frames", _with(data=np.ones((1, M, N - 1, N - 1), np.float32),
                         probe=np.ones((1, 1, N - 1, N - 1), np.complex64)), "even pattern size"),
    ("scan-columns", _with(scan=np.ones((1, M, 3), np.float32)), "expected [..., 8, 2] (row, column)"),
    ("scan-count", _with(scan=np.ones((1, M + 1, 2), np.float32)), "but 'data' holds 8 frames"),
    ("scan-text", _with(scan=np.full((1, M, 2), "a")), "tike 'scan' must be real numbers"),
    ("probe-size", _with(probe=np.ones((1, 1, 1, 1, N + 2, N + 2), np.complex64)), "its frames must match"),
    ("probe-views", _with(probe=np.ones((2, 1, 1, 1, N, N), np.complex64)), "leading axes of length 1"),
    ("complex-data", _with(data=np.ones((1, M, N, N), np.complex64)), "tike 'data' must be real numbers"),
    ("negative-counts", _with(data=-np.ones((1, M, N, N), np.float32)), "negative"),
    ("nan-data", _nan("data"), "NaN/Inf"),
    ("nan-scan", _nan("scan"), "tike 'scan' contains NaN/Inf"),
    ("nan-probe", _nan("probe"), "NaN/Inf"),
    ("pickled-data", _with(data=np.array([1, "x"], dtype=object)), "pickled object array"),
    ("pickled-scan", _with(scan=np.array([PickleMarker("/nonexistent/unpickled")], dtype=object)),
     "pickled object array"),
]


@pytest.mark.parametrize(("name", "make", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_malformed_tike_file_on_the_command_line(name: str, make: Callable[[Path], Path], fragment: str,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make(tmp_path / "star.npz.bz2")
    out = tmp_path / "out"
    commands = [] if name == "no-probe" else [["info", str(path)]]  # info reports the estimate it would use
    for argv in (*commands, ["refine", str(path), "--flat", "--iterations", "1", "--output-dir", str(out), "-q"]):
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2, (argv[0], err)
        assert len(err.splitlines()) == 1 and err.startswith(f"ptychopinn {argv[0]}: error: "), (argv[0], err)
        assert fragment in err and "Traceback" not in err, (argv[0], err)
    assert not out.exists()


def test_pickled_member_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = write_tike(tmp_path / "evil.npz.bz2", **{**_good(), "probe": np.array([PickleMarker(marker)], object)})
    with pytest.raises(PtychoInputError, match="pickled object array"):
        load_scan(path)
    assert not marker.exists()


def test_bzip2_bomb_is_refused_before_it_is_decompressed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.npz.bz2"
    bomb.write_bytes(bz2.compress(b"\0" * (48 << 20), 9))  # 48 MiB of zeros in a few kB
    assert bomb.stat().st_size < 10_000
    monkeypatch.setenv("PTYCHOPINN_MAX_MEMORY", "4M")
    assert main(["refine", str(bomb), "--flat", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "decompressing its bzip2 content" in err and "more than the limit of 4.0 MiB" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


_DTYPES = st.sampled_from([np.float32, np.float64, np.int16, np.uint8, np.complex64, np.bool_, np.dtype("<U2")])


@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["data", "scan", "probe"]),
       arr=hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=5, max_side=4)),
       compress=st.booleans())
def test_random_arrays_load_or_are_refused_cleanly(tmp_path: Path, key: str, arr: np.ndarray, compress: bool) -> None:
    path = write_tike(tmp_path / f"fuzz-{key}.npz", compress=compress, **{**_good(), key: arr})
    try:
        load_scan(path, probe="auto")
    except PtychoInputError as exc:
        assert "\n" not in str(exc)
