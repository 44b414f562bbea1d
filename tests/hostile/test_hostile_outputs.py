"""Output folders under attack: an input stored under an output name, links planted under output names (run.log
among them), stale temporaries, a second run in the same folder, a run refused or interrupted half-way, an
unwritable folder. Through the CLI: exit 2 and exactly one stderr line, every file under the work folder
unchanged (inputs byte for byte, the output folder as it was, nothing created beside it); through the API
(where there is one): :class:`ConfigError` with the same message, nothing changed."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import outputs_corpus as oc  # noqa: E402

from helpers import time_limit  # noqa: E402
from ptychopinn.cli import main  # noqa: E402
from ptychopinn.errors import ConfigError, DataFormatError  # noqa: E402

CASE_SECONDS = 60  # a case still running after this hangs (a pipe opened for writing, a lock waited for)


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory, tiny_scan_path: Path, tiny_archive: Path) -> oc.Fixtures:
    recon = oc.refine_api(tiny_scan_path, tmp_path_factory.mktemp("outputs_fx") / "recon").npz
    return oc.Fixtures(scan=tiny_scan_path, model=tiny_archive, recon=recon)



def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """``(exit code, stderr lines)`` of one command line run in this process."""
    capsys.readouterr()
    with time_limit(CASE_SECONDS):
        if argv[0].startswith("ptycho_torch."):
            import importlib

            rc = importlib.import_module(argv[0]).main(argv[1:])
        else:
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse
                rc = int(exc.code or 0)
    return int(rc), capsys.readouterr().err.strip().splitlines()


def prefix(command: str) -> str:
    return f"{command}: error:" if command.startswith("ptycho_torch.") else f"ptychopinn {command}: error:"


def assert_refused(rc: int, lines: list[str], command: str, fragment: str) -> None:
    assert rc == 2, lines
    assert len(lines) == 1 and lines[0].startswith(prefix(command)), lines
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in lines[0]


def outside(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snap.items() if k != "out" and not k.startswith("out/")}


def test_corpus_size() -> None:
    assert len(oc.ALL_CASES) >= 60
    assert len({c.id for c in oc.ALL_CASES}) == len(oc.ALL_CASES)


def _check_after(case: oc.Case, root: Path, before: dict[str, Any]) -> None:
    after = oc.snapshot(root)
    if case.expect == "refused":
        changed = sorted({k for k in before.keys() | after.keys() if before.get(k) != after.get(k)})
        assert not changed, changed
    else:
        assert outside(after) == outside(before)
        assert case.check is not None
        case.check(root)


@pytest.mark.parametrize("case", oc.ALL_CASES, ids=lambda c: c.id)
def test_output_case(case: oc.Case, fx: oc.Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory either
    root = tmp_path / "cli"
    root.mkdir()
    setup = case.build(root, fx)
    before = oc.snapshot(root)
    rc, lines = run_cli(setup.argv, capsys)
    if case.expect == "refused":
        assert_refused(rc, lines, case.command, case.fragment)
    else:
        assert rc == 0, lines
    _check_after(case, root, before)

    root = tmp_path / "api"
    root.mkdir()
    setup = case.build(root, fx)
    if setup.api is not None:
        before = oc.snapshot(root)
        if case.expect == "refused":
            with pytest.raises(ConfigError) as info, time_limit(CASE_SECONDS):
                setup.api()
            assert type(info.value) is oc.expected_error() and case.fragment in str(info.value)
            assert "\n" not in str(info.value)
        else:
            setup.api()
        _check_after(case, root, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api", "cli"]


# ------------------------------------------------------------------------- outputs appear only on success
def _older_result(out: Path) -> dict[str, Any]:
    out.mkdir(parents=True)
    (out / "reconstruction.npz").write_bytes(b"an older result")
    (out / "amplitude.png").write_bytes(b"an older picture")
    return oc.snapshot(out)


@pytest.mark.parametrize("failure", [KeyboardInterrupt, DataFormatError])
def test_infer_refinement_refused_or_interrupted_leaves_the_folder_as_it_was(
        failure: type[BaseException], fx: oc.Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The network's image used to be written before the refinement, and stayed when it failed."""
    import ptychopinn.refine as refine

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise failure("refinement stopped")

    monkeypatch.setattr(refine, "refine_scan", fail)
    out = tmp_path / "out"
    kept = _older_result(out)
    rc, lines = run_cli(["infer", str(fx.model), str(fx.scan), "--output-dir", str(out), "--quiet"], capsys)
    assert rc == (130 if failure is KeyboardInterrupt else 2), lines
    assert len(lines) == 1 and "refinement stopped" in lines[0]
    assert {k: v for k, v in oc.snapshot(out).items() if k != "run.log"} == kept
    with pytest.raises(failure):
        oc.infer_api(fx.model, fx.scan, out)
    assert {k: v for k, v in oc.snapshot(out).items() if k != "run.log"} == kept


@pytest.mark.parametrize("command", ["refine", "evaluate"])
def test_a_write_failing_half_way_leaves_no_partial_output(command: str, fx: oc.Fixtures, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import ptychopinn.plots as plots

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    # the last pictures each command writes: by then its main file is written (staged)
    monkeypatch.setattr(plots, "save_loss_curves" if command == "refine" else "save_frc_figure", disk_full)
    out = tmp_path / "out"
    kept = _older_result(out)
    argv = (["refine", str(fx.scan), "--flat", "--output-dir", str(out), *oc.REFINE_FAST] if command == "refine"
            else ["evaluate", str(fx.recon), str(fx.scan), "--output-dir", str(out), "--quiet"])
    rc, lines = run_cli(argv, capsys)
    assert rc == 2 and len(lines) == 1 and "No space left" in lines[0], lines
    assert {k: v for k, v in oc.snapshot(out).items() if k != "run.log"} == kept


# ------------------------------------------------------------------------------------ one run per folder
@pytest.mark.parametrize("command", ["refine", "infer", "evaluate", "train", "simulate", "demo"])
def test_a_folder_in_use_by_another_run_is_refused(command: str, fx: oc.Fixtures, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from ptychopinn.io.outputs import folder_lock

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with folder_lock(out, "ptychopinn refine"):  # a run in progress (flock: a second open file is refused)
        kept = oc.snapshot(tmp_path)
        rc, lines = run_cli(oc._log_argv(command, out, fx), capsys)
        assert_refused(rc, lines, command, "is in use by another run (ptychopinn refine: pid")
        assert oc.snapshot(tmp_path) == kept
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------------------------- nothing written
def test_print_config_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "newdir"
    capsys.readouterr()
    assert main(["train", "--print-config", "--output-dir", str(out)]) == 0
    assert "model:" in capsys.readouterr().out
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["ptycho_torch.train", "ptycho_torch.inference"])
def test_ptycho_torch_unwritable_output_folder_is_one_line(command: str, fx: oc.Fixtures, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder this user may not create (as root, chmod does not stop writes: the refusal is simulated)."""
    out = tmp_path / "locked" / "out"
    out.parent.mkdir()
    if os.geteuid() == 0:
        real_mkdir = Path.mkdir

        def refuse(self: Path, *args: Any, **kwargs: Any) -> None:
            if str(self).startswith(str(out.parent)):
                raise PermissionError(13, "Permission denied", str(self))
            real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)
    else:
        out.parent.chmod(0o500)
    try:
        argv = (["ptycho_torch.train", "--train_data_file", str(fx.scan), "--output_dir", str(out), "--max_epochs",
                 "1", "--gridsize", "1", "--accelerator", "cpu", "--quiet"] if command.endswith("train") else
                ["ptycho_torch.inference", "--model_path", str(fx.model), "--test_data", str(fx.scan),
                 "--output_dir", str(out), "--accelerator", "cpu", "--quiet"])
        rc, lines = run_cli(argv, capsys)
    finally:
        out.parent.chmod(0o700)
    assert_refused(rc, lines, command, "Permission denied")
    assert not out.exists()


def test_exclusive_options_are_one_line(fx: oc.Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = run_cli(["refine", str(fx.scan), "--flat", "--init", str(fx.recon), "--output-dir",
                         str(tmp_path / "o")], capsys)
    assert_refused(rc, lines, "refine", "--init and --flat exclude each other")
    rc, lines = run_cli(["refine", str(fx.scan), "--output-dir", str(tmp_path / "o")], capsys)
    assert_refused(rc, lines, "refine", "one of the arguments --init --flat is required")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------- refine canvas
def test_refine_refuses_a_canvas_over_the_memory_limit(fx: oc.Fixtures, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two points 30,000 px apart: a 30000 x 30000 canvas, refused before it is allocated (as infer does)."""
    from ptychopinn.data.scan import ScanData
    from ptychopinn.io.npz import load_npz, save_npz
    from ptychopinn.refine import refine_scan

    scan = load_npz(fx.scan)
    positions = np.array(scan.positions, copy=True)
    positions[0] += 30_000.0
    far = ScanData(diffraction=scan.diffraction, positions=positions, probe=scan.probe)
    path = save_npz(tmp_path / "far.npz", far)
    monkeypatch.setenv("PTYCHOPINN_MAX_MEMORY", "1G")
    with pytest.raises(DataFormatError, match="refinement canvas of 300"):
        refine_scan(far)
    rc, lines = run_cli(["refine", str(path), "--flat", "--output-dir", str(tmp_path / "o"), "--quiet"], capsys)
    assert_refused(rc, lines, "refine", "more than the limit of 1.0 GiB")
    assert not (tmp_path / "o").exists()
