"""Hostile HDF5 inputs (:mod:`hdf5_corpus`): links and storage that pull in other files or devices, filters
outside the supported list, corrupt chunks that crashed or hung decoders, declared sizes above the memory
limit, undecodable text and malformed metadata. Each is refused with its one-line message through the Python
API, and through ``ptychopinn info`` and ``refine`` (exit 2, one stderr line, no output folder) run in a child
process under a time limit; accepted variants read the right data and exit 0."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hdf5_corpus as hc  # noqa: E402

from helpers import time_limit  # noqa: E402
from ptychopinn.errors import DataFormatError, PtychoInputError  # noqa: E402
from ptychopinn.io import h5decode, h5guard  # noqa: E402
from ptychopinn.io.reconstruction import reconstruction_metadata  # noqa: E402
from ptychopinn.io.registry import load_probe, load_scan  # noqa: E402

SECONDS = 60
SRC = Path(__file__).resolve().parents[2] / "src"



@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case's input built once: ``{'scan': valid NPZ, 'inputs': {id: path}, 'root': folder}``."""
    root = tmp_path_factory.mktemp("hdf5_corpus")
    (root / "valid").mkdir()
    inputs = {}
    for case in hc.CASES:
        folder = root / case.id / "in"
        folder.mkdir(parents=True)
        inputs[case.id] = case.make(folder)
    return {"scan": hc.scan_npz(root / "valid" / "scan.npz"), "inputs": inputs, "root": root}


def _out(corpus: dict[str, Any], case: hc.Case) -> Path:
    return corpus["root"] / case.id / "out"


@pytest.fixture(scope="module")
def cli_results(corpus: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The command lines of every case, run by the corpus driver in one child process (a decoder crash, a
    regression, would end it and fail the cases from there on, never pytest)."""
    spec = [{"id": case.id, "env": {"PTYCHOPINN_MAX_MEMORY": hc.SMALL_LIMIT} if case.small_memory else {},
             "argvs": hc.cli_argvs(case, corpus["inputs"][case.id], corpus["scan"], _out(corpus, case)),
             "api": str(corpus["inputs"][case.id]) if case.crash else None} for case in hc.CASES]
    spec_path, results_path = corpus["root"] / "spec.json", corpus["root"] / "results.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("PTYCHOPINN_MAX_MEMORY", None)
    proc = subprocess.run([sys.executable, hc.__file__, str(spec_path), str(results_path)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=corpus["root"])
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if proc.returncode != 0:
        results["__driver__"] = [{"rc": proc.returncode, "stderr": proc.stderr[-2000:]}]
    return results


def test_corpus_size() -> None:
    assert len(hc.CASES) >= 60
    assert len({c.id for c in hc.CASES}) == len(hc.CASES)
    assert {c.category for c in hc.CASES} == {"links", "storage", "filters", "chunks", "memory", "text"}


@pytest.mark.parametrize("case", hc.CASES, ids=lambda c: c.id)
def test_command_lines(case: hc.Case, corpus: dict[str, Any], cli_results: dict[str, list[dict[str, Any]]]) -> None:
    runs = [r for r in cli_results.get(case.id, []) if "argv" in r]
    assert runs and all("started" not in r for r in runs), (runs, cli_results.get("__driver__"))
    assert len(runs) == len(hc.cli_argvs(case, corpus["inputs"][case.id], corpus["scan"], _out(corpus, case)))
    for run in runs:
        command, stderr = run["argv"][0], run["stderr"].strip()
        if case.fragment is None:
            assert run["rc"] == 0, (command, stderr)
            continue
        assert run["rc"] == 2, (command, run["rc"], stderr)
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ptychopinn {command}: error: "), (command, stderr)
        fragment = case.info_fragment if command == "info" and case.info_fragment else case.fragment
        assert fragment in lines[0], (command, stderr)
    if case.id in hc.REFINED_WHEN_ACCEPTED:
        assert (_out(corpus, case) / "reconstruction.npz").is_file()
    else:
        assert not _out(corpus, case).exists()


def _api(case: hc.Case, path: Path) -> Any:
    if case.role == "scan":
        return load_scan(path, probe="auto", **case.api_kwargs)
    if case.role == "probe":
        return load_probe(path)
    return reconstruction_metadata(path)


@pytest.mark.parametrize("case", [c for c in hc.CASES if not c.crash and c.fragment is not None],
                         ids=lambda c: c.id)
def test_api_refuses(case: hc.Case, corpus: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    if case.small_memory:
        monkeypatch.setenv("PTYCHOPINN_MAX_MEMORY", hc.SMALL_LIMIT)
    assert case.fragment is not None
    with pytest.raises(PtychoInputError) as info, time_limit(SECONDS):
        _api(case, corpus["inputs"][case.id])
    assert isinstance(info.value, DataFormatError), type(info.value)
    assert case.fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("case", [c for c in hc.CASES if c.crash], ids=lambda c: c.id)
def test_api_refuses_corrupt_chunks_in_a_child(case: hc.Case, cli_results: dict[str, list[dict[str, Any]]]) -> None:
    """The corrupt chunks once crashed the process that decoded them, so the API is called in the driver."""
    runs = [r for r in cli_results.get(case.id, []) if "api" in r]
    assert len(runs) == 1 and "started" not in runs[0], (runs, cli_results.get("__driver__"))
    assert runs[0].get("error") == "DataFormatError" and "PtychoInputError" in runs[0]["mro"], runs[0]
    assert case.fragment is not None and case.fragment in runs[0]["message"], runs[0]


ACCEPTED = {c.id: c for c in hc.CASES if c.fragment is None}


@pytest.mark.parametrize("case", list(ACCEPTED.values()), ids=lambda c: c.id)
def test_api_accepts(case: hc.Case, corpus: dict[str, Any]) -> None:
    with time_limit(SECONDS):
        scan = load_scan(corpus["inputs"][case.id], probe="auto")
    assert scan.n_points == hc.M
    np.testing.assert_allclose(scan.diffraction, np.sqrt(hc.frames()), rtol=1e-6)
    probe = 2.0 if case.id == "elink-inside-accepted" else 1.0
    np.testing.assert_array_equal(scan.probe, np.full((hc.N, hc.N), probe, np.complex64))


# ------------------------------------------------------------------------------------------- the decoder
def _fifo_dataset(folder: Path) -> tuple[Path, Path]:
    """A file whose dataset is an external link into a named pipe, for requests sent to the decoder directly
    (bypassing the guard, which refuses it): HDF5 in the decoder blocks opening, then reading, the pipe."""
    pipe = hc.fifo(folder)
    path = folder / "blocked.h5"
    with h5py.File(path, "w") as f:
        f["d"] = h5py.ExternalLink(str(pipe), "/x")
    return path, pipe


def _blocked_opening_a_pipe(pid: int) -> bool:
    """True while process ``pid`` waits in open() for a named pipe's writer (Linux /proc)."""
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/wchan").read_text().strip() in ("wait_for_partner", "fifo_open"):
            return True
        number = Path(f"/proc/{pid}/syscall").read_text().split()[0]
        return number == {"x86_64": "257", "aarch64": "56"}.get(os.uname().machine)
    return False


def test_a_decoder_crash_is_one_error_and_the_next_read_works(tmp_path: Path) -> None:
    path, _pipe = _fifo_dataset(tmp_path)
    errors: list[BaseException] = []

    def request() -> None:
        try:
            h5decode.decode(str(path), "/d", None, np.dtype(np.uint8), (4,), 4, "the blocked dataset")
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    worker = threading.Thread(target=request)
    worker.start()
    with time_limit(SECONDS):
        while True:  # the decoder blocks opening the pipe until it is killed: a crash in mid-read
            child = h5decode._child
            if child is not None and _blocked_opening_a_pipe(child.pid):
                break
            worker.join(0.01)
        os.kill(child.pid, signal.SIGSEGV)
        worker.join()
    assert len(errors) == 1 and isinstance(errors[0], DataFormatError), errors
    assert "the blocked dataset crashed the decoder (signal SIGSEGV)" in str(errors[0])
    ok = tmp_path / "ok.h5"
    with h5py.File(ok, "w") as f:
        f.create_dataset("d", data=np.arange(64, dtype=np.float32), chunks=(8,), compression="gzip")
    with h5guard.open_h5(ok) as f:
        np.testing.assert_array_equal(h5guard.read(f, h5guard.dataset(f, "d"), "d"), np.arange(64))


def test_a_decoder_that_does_not_return_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _pipe = _fifo_dataset(tmp_path)
    monkeypatch.setattr(h5decode, "TIMEOUT_S", 0.5)
    with time_limit(SECONDS), pytest.raises(DataFormatError, match="was still decoding after 1 s and was stopped"):
        h5decode.decode(str(path), "/d", None, np.dtype(np.uint8), (4,), 4, "the blocked dataset")


def test_only_the_supported_filters_are_registered() -> None:
    code = ("import h5py; from ptychopinn.io import h5guard as g; g.register_filters(); "
            "print(sorted(i for i in (*g.ALLOWED_FILTERS, *g.KNOWN_FILTERS) if h5py.h5z.filter_avail(i)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=SECONDS, check=True)
    available = set(json.loads(out.stdout))
    plugins = {i for i in available if i >= 256}  # ids below 256 are built into libhdf5 (refused per dataset)
    assert plugins <= set(h5guard.ALLOWED_FILTERS), plugins
    assert {1, 32000, 32001, 32004, 32008, 32015} <= available
    importers = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if "import hdf5plugin" in p.read_text())
    assert importers == ["ptychopinn/io/h5guard.py", "ptychopinn/io/hdf5.py"], importers


def test_text_of_a_file_larger_than_the_memory_limit_is_read_by_the_decoder(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable-length string declares no size: above the limit its file's size cannot bound it, so the
    decoder process reads it under the limit; the metadata still arrives."""
    path = hc.h5_scan(tmp_path / "scan.h5", lambda f: (f.attrs.__setitem__("_metadata", '{"note": "kept"}'),
                                                       f.__setitem__("padding", np.ones(1 << 18))))
    monkeypatch.setenv("PTYCHOPINN_MAX_MEMORY", "1M")
    assert path.stat().st_size > 1 << 20
    with time_limit(SECONDS):
        scan = load_scan(path)
    assert scan.metadata["note"] == "kept"
