"""ptychopinn.logs: run.log content, what reaches stderr at each verbosity, warnings routing and noise,
progress bars only on a terminal, and no empty output folder after a failed run."""

from __future__ import annotations

import logging
import os
import pty
import warnings

import pytest

from ptychopinn.logs import LOG_NAME, adopt_lightning_logging, cli_session, progress_enabled, stderr_level


def _emit_all() -> None:
    lg = logging.getLogger("ptychopinn.something")
    lg.debug("a debug line")
    lg.info("units detected as amplitude")
    lg.warning("a warning line")


def test_run_log_has_info_and_settings_and_stderr_only_warnings(tmp_path, capsys):
    out = tmp_path / "run"
    with cli_session("train", output_dir=out, settings={"epochs": 3}):
        _emit_all()
    text = (out / LOG_NAME).read_text()
    assert "units detected as amplitude" in text and "a warning line" in text
    assert "a debug line" not in text
    assert '"epochs": 3' in text and "versions: python" in text and "torch" in text
    assert "finished in" in text
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.strip().splitlines() == ["ptychopinn train: warning: a warning line"]


@pytest.mark.parametrize(("verbose", "quiet", "shown", "hidden"), [
    (1, False, ["units detected", "warning: a warning line"], ["a debug line"]),
    (2, False, ["a debug line", "units detected"], []),
    (0, True, [], ["a warning line", "units detected"]),
])
def test_stderr_follows_verbosity(tmp_path, capsys, verbose, quiet, shown, hidden):
    with cli_session("infer", verbose=verbose, quiet=quiet, output_dir=tmp_path / "o"):
        _emit_all()
    err = capsys.readouterr().err
    for s in shown:
        assert s in err
    for s in hidden:
        assert s not in err
    log = (tmp_path / "o" / LOG_NAME).read_text()
    assert ("a debug line" in log) == (verbose >= 2)  # -vv also puts DEBUG into run.log
    assert stderr_level(verbose, quiet) in (logging.DEBUG, logging.INFO, logging.ERROR)


def test_warnings_are_routed_and_noise_is_dropped(tmp_path, capsys):
    with cli_session("train", output_dir=tmp_path):
        warnings.warn("the scan has no probe metadata", UserWarning, stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info(
            "Tip: For seamless cloud logging ... try installing [litlogger](https://pypi.org/project/litlogger/)")
    err = capsys.readouterr().err
    assert err.strip() == "ptychopinn train: warning: the scan has no probe metadata"
    log = (tmp_path / LOG_NAME).read_text()
    assert "no probe metadata" in log and "litlogger" not in log and "LeafSpec" not in log


def test_session_restores_logging_state(tmp_path):
    root = logging.getLogger()
    before = (list(root.handlers), root.level, warnings.showwarning)
    with cli_session("x", output_dir=tmp_path):
        assert len(root.handlers) == len(before[0]) + 2
    assert (list(root.handlers), root.level, warnings.showwarning) == before


def test_failed_run_removes_the_folder_it_created_but_keeps_others(tmp_path, capsys):
    new = tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="bad input"), cli_session("train", output_dir=new):
        logging.getLogger("ptychopinn.x").info("started")
        raise ValueError("bad input")
    assert not (tmp_path / "a").exists()
    assert "bad input" not in capsys.readouterr().err  # main() prints the one-line error, not the session

    existing = tmp_path / "kept"
    existing.mkdir()
    with pytest.raises(ValueError), cli_session("train", output_dir=existing):
        raise ValueError("bad input")
    assert existing.is_dir()

    partial = tmp_path / "partial"
    with pytest.raises(RuntimeError), cli_session("train", output_dir=partial):
        (partial / "last.ckpt").write_bytes(b"x")
        raise RuntimeError("diverged")
    log = (partial / LOG_NAME).read_text()  # a run that wrote something keeps its log, with the traceback
    assert "failed after" in log and "diverged" in log and "Traceback" in log


def test_progress_only_on_a_terminal(tmp_path):
    with open(tmp_path / "f", "w") as fh:
        assert not progress_enabled(stream=fh)
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w") as tty:
            assert progress_enabled(stream=tty)
            assert not progress_enabled(quiet=True, stream=tty)
    finally:
        os.close(master)


def test_adopt_lightning_logging_only_inside_a_session(tmp_path):
    lg = logging.getLogger("lightning.pytorch")
    console = logging.StreamHandler()
    lg.addHandler(console)
    saved = lg.propagate
    lg.propagate = False
    try:
        adopt_lightning_logging()  # outside a session: a library user's logging is left alone
        assert console in lg.handlers
        with cli_session("train", output_dir=tmp_path):
            adopt_lightning_logging()
            assert console not in lg.handlers and lg.propagate
            lg.info("GPU available: False")
        assert "GPU available" in (tmp_path / LOG_NAME).read_text()
    finally:
        lg.removeHandler(console)
        lg.propagate = saved
