"""A corpus of malformed inputs: each must fail with its exact error class and message, through the Python API
and through the ``ptychopinn`` CLI (exit 2, one ``ptychopinn <cmd>: error:`` line, no traceback, no outputs)."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_corpus as hc  # noqa: E402

from helpers import time_limit  # noqa: E402
from ptychopinn.cli import main  # noqa: E402
from ptychopinn.errors import ArchiveError  # noqa: E402

HAS_TENSORBOARD = any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> hc.Shared:
    return hc.build_shared(tmp_path_factory.mktemp("shared"))


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_corpus_size() -> None:
    counts = hc.categories()
    assert len(hc.ALL_CASES) >= 200, counts
    assert len({c.id for c in hc.ALL_CASES}) == len(hc.ALL_CASES)
    assert set(counts) == {"npz", "archive", "config", "flags", "hang", "memory", "runtime"}


CASE_SECONDS = 60  # a case that takes longer hangs (the slowest, a tiny training, takes a few seconds)



def _unavailable(case: hc.Case) -> str | None:
    if case.id == "flag-logger-tensorboard-absent" and HAS_TENSORBOARD:
        return "tensorboard is installed"
    if case.id in ("runtime-accelerator-gpu", "runtime-accelerator-cuda") and torch.cuda.is_available():
        return "a CUDA GPU is present"
    if case.id == "runtime-accelerator-mps" and torch.backends.mps.is_available():
        return "an Apple GPU is present"
    return None


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def _run_cli(case: hc.Case, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    if case.isolated:  # process-wide state (DDP environment): a child process, under a time limit
        proc = subprocess.run([sys.executable, "-m", "ptychopinn.cli", *argv], capture_output=True, text=True,
                              timeout=CASE_SECONDS, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        return proc.returncode, proc.stdout, proc.stderr
    capsys.readouterr()
    with time_limit(CASE_SECONDS):
        if case.argparse_error:
            with pytest.raises(SystemExit) as exc:
                main(argv)
            rc = exc.value.code
        else:
            rc = main(argv)
    captured = capsys.readouterr()
    return int(rc), captured.out, captured.err


@pytest.mark.parametrize("case", hc.ALL_CASES, ids=lambda c: c.id)
def test_malformed_input(case: hc.Case, shared: hc.Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    reason = _unavailable(case)
    if reason:
        pytest.skip(reason)
    if case.category == "memory":
        monkeypatch.setenv("PTYCHOPINN_MAX_MEMORY", hc.MEMORY_LIMIT)
    inputs = tmp_path / "in"
    inputs.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = case.make(inputs, shared)

    # ---- Python API: exact class, the fragment, one line, nothing written
    api_out = tmp_path / "api_out"
    if case.prepare_out is not None:
        case.prepare_out(path, shared, api_out)
    before = _tree(tmp_path)
    kept = _snapshot(api_out)
    with pytest.raises(BaseException) as info, time_limit(CASE_SECONDS):  # noqa: B017 - class asserted below
        case.api(path, shared, api_out)
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert case.fragment in message
    assert "\n" not in message
    assert _tree(tmp_path) - before <= {"api_out"}
    assert _snapshot(api_out) == kept
    assert not api_out.exists() or not (set(_tree(api_out)) - set(_tree_keys(kept)))
    assert not (tmp_path / "PWNED").exists()

    # ---- CLI
    for kind in case.cli:
        out = tmp_path / f"out_{kind}"
        if case.prepare_out is not None:
            case.prepare_out(path, shared, out)
        command, argv = hc.cli_argv(kind, path, shared, out)
        before = _tree(tmp_path)
        kept = _snapshot(out)
        rc, stdout, stderr = _run_cli(case, argv, capsys)
        assert rc == 2, (kind, stderr)
        assert "Traceback" not in stderr + stdout
        lines = [line for line in stderr.strip().splitlines() if line.startswith("ptychopinn") or not case.isolated]
        prefix = f"ptychopinn {command}: error:"
        if case.argparse_error:  # argparse prints its usage lines first, then the one error line
            assert lines[-1].startswith(prefix), lines
            assert all(not line.startswith("ptychopinn") for line in lines[:-1]), lines
        else:
            assert len(lines) == 1 and lines[0].startswith(prefix), (kind, lines)
        assert (case.cli_fragment or case.fragment) in lines[-1], (kind, lines[-1])
        # nothing outside the output directory, and no (partial) outputs inside it
        assert _tree(tmp_path) - before <= {out.name}, (kind, _tree(tmp_path) - before)
        assert _snapshot(out) == kept, kind
        assert not out.exists() or not (set(_tree(out)) - set(_tree_keys(kept))), (kind, _tree(out))
        assert not (tmp_path / "PWNED").exists()


def _tree_keys(snapshot: dict[str, tuple[int, int]]) -> set[str]:
    """Every file of a snapshot and the folders above it."""
    keys = set(snapshot)
    for name in snapshot:
        parts = name.split("/")
        keys |= {"/".join(parts[:i]) for i in range(1, len(parts))}
    return keys


def test_single_pattern_scan_is_valid(shared: hc.Shared, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Decision documented: one pattern (M=1) is a valid scan (the data contract only needs M >= 1)."""
    from ptychopinn.io.npz import load_npz

    arrays = hc.scan_arrays(m=1)
    p = tmp_path / "one.npz"
    np.savez(p, **arrays)
    scan = load_npz(p)
    assert scan.n_points == 1 and scan.N == hc.N
    assert main(["info", str(p)]) == 0
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------ no code execution
PICKLE_MEMBERS = ("weights.safetensors", "config.json", "x.pt", "manifest.json", "metadata.json")


def test_marker_payload_is_live(tmp_path: Path) -> None:
    """Control: the payload really would create the marker if anything unpickled it."""
    marker = tmp_path / "control"
    with pickle.loads(hc.evil_pickle(marker)):
        pass
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("member", PICKLE_MEMBERS)
def test_malicious_archive_never_executes(member: str, protocol: int, shared: hc.Shared, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from ptychopinn.io.archive import load_archive, read_manifest
    from ptychopinn.models.persist import load_model

    marker = tmp_path / "PWNED"
    members = {**hc.members_of(shared.archive), member: hc.evil_pickle(marker, protocol)}
    if member != "manifest.json":
        members = hc.fix_manifest(members)
    archive = hc.write_zip(tmp_path / "wts.h5.zip", members)

    for load in (load_archive, load_model, read_manifest):
        if load is read_manifest and member not in ("config.json", "manifest.json", "x.pt"):
            continue  # read_manifest never reads the other members
        with pytest.raises(ArchiveError):
            load(archive)
        assert not marker.exists(), load.__name__
    rc = main(["infer", str(archive), str(shared.scan), "--output-dir", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("ptychopinn infer: error:")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_malicious_extracted_directory_never_executes(shared: hc.Shared, tmp_path: Path) -> None:
    """The same payload in a directory of extracted members."""
    from ptychopinn.models.persist import load_model

    marker = tmp_path / "PWNED"
    d = tmp_path / "extracted"
    d.mkdir()
    members = hc.fix_manifest({**hc.members_of(shared.archive), "weights.safetensors": hc.evil_pickle(marker)})
    for name, data in members.items():
        (d / name).write_bytes(data)
    with pytest.raises(ArchiveError, match="pickle"):
        load_model(d)
    assert not marker.exists()
