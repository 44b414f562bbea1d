"""Hostile output folders: inputs placed where a command writes, links planted under output names, stale
temporaries, occupied names. Each :class:`Case` lays out its files inside a work folder ``root`` (inputs
beside ``root/out``, the output folder) and names the command line and, where one exists, the Python API call
that must refuse it (or, for ``expect='ok'``, must succeed without touching anything outside ``out``).

Used by ``test_hostile_outputs.py``; the collision cases of every command and output name are generated from
the commands' own output lists (``ptychopinn.workflows.*_outputs``), so a new output is covered at once.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptychopinn.config import ExecutionConfig, ModelConfig, RefineConfig, TrainingConfig
from ptychopinn.errors import ConfigError


@dataclass(frozen=True)
class Fixtures:
    """Valid inputs built once (never modified): a tiny scan NPZ, a training folder holding an archive,
    and a reconstruction NPZ of the scan."""

    scan: Path
    model: Path
    recon: Path


@dataclass
class Setup:
    """One laid-out case: the command line and the API call (None: the command has no API counterpart)."""

    argv: list[str]
    api: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Case:
    id: str
    command: str
    build: Callable[[Path, Fixtures], Setup]
    fragment: str  # in the one stderr line (and the API message)
    expect: str = "refused"  # 'refused' (exit 2, nothing changed) or 'ok' (exit 0, see check)
    check: Callable[[Path], None] | None = field(default=None)  # extra checks of an 'ok' case on root


# --------------------------------------------------------------------------------------------- helpers
REFINE_FAST = ["--iterations", "1", "--quiet"]
TRAIN_FAST = ["--epochs", "1", "--quiet", "--n-filters-scale", "1", "--logger", "none"]


def put(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` (folders created)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def link(dst: Path, target: str) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, dst)
    return dst


def refine_api(scan: Path | None, out: Path, *, start: Path | None = None, product: bool = False) -> Any:
    from ptychopinn.workflows import refine_reconstruction

    return refine_reconstruction(scan, output_dir=out, start=start, refine=RefineConfig(iterations=1),
                                 write_product=product)


def infer_api(model: Path, scan: Path, out: Path, *, refine: bool = True, product: bool = False) -> Any:
    from ptychopinn.workflows import reconstruct_scan

    return reconstruct_scan(model, scan, output_dir=out, refine=RefineConfig(iterations=1) if refine else None,
                            write_product=product)


def train_api(scan: Path, out: Path, *, test: Path | None = None) -> Any:
    from ptychopinn.workflows import train_model

    return train_model(scan, output_dir=out, test=test, model=ModelConfig(N=32, n_filters_scale=1),
                       training=TrainingConfig(nepochs=1, batch_size=8),
                       execution=ExecutionConfig(accelerator="cpu", logger="none", enable_progress_bar=False))


def evaluate_api(recon: Path, truth: Path, out: Path) -> Any:
    from ptychopinn.workflows import evaluate_reconstruction

    return evaluate_reconstruction(recon, truth, output_dir=out)


def log_api(out: Path) -> Callable[[], Any]:
    """The API of ``run.log``: :func:`ptychopinn.logs.cli_session` with an output folder."""
    def call() -> None:
        from ptychopinn.logs import cli_session

        with cli_session("refine", output_dir=out):
            pass
    return call


# ------------------------------------------------------------------------------- input = output, by name
def _refine_outputs(product: bool) -> tuple[str, ...]:
    from ptychopinn.workflows import refine_outputs

    return ("run.log", *refine_outputs(write_product=product))


def _infer_outputs(refine: bool, product: bool) -> tuple[str, ...]:
    from ptychopinn.workflows import reconstruct_outputs

    return ("run.log", *reconstruct_outputs(write_product=product, refine=refine))


def _evaluate_outputs() -> tuple[str, ...]:
    from ptychopinn.workflows import evaluate_outputs

    return ("run.log", *evaluate_outputs())


def _flags(product: bool) -> list[str]:
    return ["--product"] if product else []


def _refine_scan_named(name: str, product: bool) -> Callable[[Path, Fixtures], Setup]:
    def build(root: Path, fx: Fixtures) -> Setup:
        out = root / "out"
        scan = put(fx.scan, out / name)
        return Setup(["refine", str(scan), "--flat", "--output-dir", str(out), *_flags(product), *REFINE_FAST],
                     None if name == "run.log" else lambda: refine_api(scan, out, product=product))
    return build


def _infer_scan_named(name: str, refine: bool, product: bool) -> Callable[[Path, Fixtures], Setup]:
    def build(root: Path, fx: Fixtures) -> Setup:
        out = root / "out"
        scan = put(fx.scan, out / name)
        argv = ["infer", str(fx.model), str(scan), "--output-dir", str(out), "--quiet", *_flags(product),
                *(["--refine", "1"] if refine else ["--refine", "0"])]
        return Setup(argv, None if name == "run.log"
                     else lambda: infer_api(fx.model, scan, out, refine=refine, product=product))
    return build


def _evaluate_truth_named(name: str) -> Callable[[Path, Fixtures], Setup]:
    def build(root: Path, fx: Fixtures) -> Setup:
        out = root / "out"
        truth = put(fx.scan, out / name)
        return Setup(["evaluate", str(fx.recon), str(truth), "--output-dir", str(out), "--quiet"],
                     None if name == "run.log" else lambda: evaluate_api(fx.recon, truth, out))
    return build


def _train_scan_named(name: str) -> Callable[[Path, Fixtures], Setup]:
    def build(root: Path, fx: Fixtures) -> Setup:
        out = root / "out"
        scan = put(fx.scan, out / name.rstrip("/") / "scan.npz" if name.endswith("/") else out / name)
        return Setup(["train", str(scan), "--output-dir", str(out), *TRAIN_FAST],
                     None if name == "run.log" else lambda: train_api(scan, out))
    return build


COLLIDES = "would overwrite the input"


def collision_cases() -> list[Case]:
    """A scan (or truth) stored under each output name of each command, with the flags that write it."""
    cases = [Case(f"refine-scan-as-{n}{'-product' if p else ''}", "refine", _refine_scan_named(n, p), COLLIDES)
             for p in (False, True) for n in _refine_outputs(p) if p is False or n == "reconstruction.h5"]
    cases += [Case(f"infer-scan-as-{n}{'-refine' if r else ''}{'-product' if p else ''}", "infer",
                   _infer_scan_named(n, r, p), COLLIDES)
              for r, p in ((True, False), (False, True)) for n in _infer_outputs(r, p)
              if (r and n in ("network_reconstruction.npz", "misfit.png", "reconstruction.npz", "run.log"))
              or (p and n in ("reconstruction.h5", "amplitude.tif", ".ptychopinn.lock"))]
    cases += [Case(f"evaluate-truth-as-{n}", "evaluate", _evaluate_truth_named(n), COLLIDES)
              for n in _evaluate_outputs()]
    cases += [Case(f"train-scan-as-{n.rstrip('/')}", "train", _train_scan_named(n), COLLIDES)
              for n in ("run.log", "wts.h5.zip", ".ptychopinn.lock", "checkpoints/", "logs/")]
    return cases


# -------------------------------------------------------------------------- other inputs, links, hard links
def _refine_init_is_output(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    init = put(fx.recon, out / "reconstruction.npz")
    return Setup(["refine", str(fx.scan), "--init", str(init), "--output-dir", str(out), *REFINE_FAST],
                 lambda: refine_api(fx.scan, out, start=init))


def _refine_probe_is_output(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    probe = put(fx.scan, out / "phase.tif")
    return Setup(["refine", str(fx.scan), "--flat", "--probe", str(probe), "--output-dir", str(out), *REFINE_FAST])


def _refine_output_links_to_scan(root: Path, fx: Fixtures) -> Setup:
    scan = put(fx.scan, root / "scan.npz")
    out = root / "out"
    link(out / "reconstruction.npz", "../scan.npz")
    return Setup(["refine", str(scan), "--flat", "--output-dir", str(out), *REFINE_FAST],
                 lambda: refine_api(scan, out))


def _refine_output_hard_link_of_scan(root: Path, fx: Fixtures) -> Setup:
    scan = put(fx.scan, root / "scan.npz")
    out = root / "out"
    out.mkdir()
    os.link(scan, out / "amplitude.png")
    return Setup(["refine", str(scan), "--flat", "--output-dir", str(out), *REFINE_FAST],
                 lambda: refine_api(scan, out))


def _refine_scan_through_linked_folder(root: Path, fx: Fixtures) -> Setup:
    """The scan's folder is the output folder under another name (a link to it)."""
    out = root / "out"
    put(fx.scan, out / "misfit.png")
    link(root / "alias", "out")
    scan = root / "alias" / "misfit.png"
    return Setup(["refine", str(scan), "--flat", "--output-dir", str(out), *REFINE_FAST],
                 lambda: refine_api(scan, out))


def _infer_model_is_output(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    model = put(fx.model / "wts.h5.zip", out / "complex.png")
    return Setup(["infer", str(model), str(fx.scan), "--output-dir", str(out), "--quiet", "--refine", "0"],
                 lambda: infer_api(model, fx.scan, out, refine=False))


def _infer_probe_is_output(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    probe = put(fx.scan, out / "amplitude.tif")
    return Setup(["infer", str(fx.model), str(fx.scan), "--probe", str(probe), "--output-dir", str(out), "--quiet"])


def _evaluate_recon_is_output(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    recon = put(fx.recon, out / "metrics.json")
    return Setup(["evaluate", str(recon), str(fx.scan), "--output-dir", str(out), "--quiet"],
                 lambda: evaluate_api(recon, fx.scan, out))


def _train_test_in_checkpoints(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    test = put(fx.scan, out / "checkpoints" / "test.npz")
    return Setup(["train", str(fx.scan), "--test", str(test), "--output-dir", str(out), *TRAIN_FAST],
                 lambda: train_api(fx.scan, out, test=test))


def _train_config_in_logs(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    cfg = out / "logs" / "settings.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("training:\n  nepochs: 1\n")
    return Setup(["train", str(fx.scan), "--config", str(cfg), "--output-dir", str(out), *TRAIN_FAST])


def _train_checkpoints_link_out(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    (root / "elsewhere").mkdir()
    link(out / "checkpoints", "../elsewhere")
    return Setup(["train", str(fx.scan), "--output-dir", str(out), *TRAIN_FAST], lambda: train_api(fx.scan, out))


def _stale_tmp_is_input(root: Path, fx: Fixtures) -> Setup:
    """A file named like our temporary of an output is an input: it must be neither deleted nor overwritten."""
    out = root / "out"
    scan = put(fx.scan, out / ".reconstruction.npz.k3j2.tmp")
    return Setup(["refine", str(scan), "--flat", "--output-dir", str(out), *REFINE_FAST],
                 lambda: refine_api(scan, out))


def _output_name_is_folder(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    (out / "phase.png").mkdir(parents=True)
    (out / "phase.png" / "keep.txt").write_text("mine")
    return Setup(["refine", str(fx.scan), "--flat", "--output-dir", str(out), *REFINE_FAST],
                 lambda: refine_api(fx.scan, out))


def _ptycho_torch_inference_scan_is_output(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    scan = put(fx.scan, out / "reconstruction.npz")
    return Setup(["ptycho_torch.inference", "--model_path", str(fx.model), "--test_data", str(scan), "--output_dir",
                  str(out), "--accelerator", "cpu", "--quiet"])


def _ptycho_torch_train_scan_is_output(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    scan = put(fx.scan, out / "wts.h5.zip")
    return Setup(["ptycho_torch.train", "--train_data_file", str(scan), "--output_dir", str(out), "--max_epochs", "1",
                  "--gridsize", "1", "--accelerator", "cpu", "--quiet"])


def input_cases() -> list[Case]:
    return [
        Case("refine-init-is-output", "refine", _refine_init_is_output, COLLIDES),
        Case("refine-probe-is-output", "refine", _refine_probe_is_output, COLLIDES),
        Case("refine-output-links-to-scan", "refine", _refine_output_links_to_scan, COLLIDES),
        Case("refine-output-hard-link-of-scan", "refine", _refine_output_hard_link_of_scan, COLLIDES),
        Case("refine-scan-through-linked-folder", "refine", _refine_scan_through_linked_folder, COLLIDES),
        Case("infer-model-is-output", "infer", _infer_model_is_output, COLLIDES),
        Case("infer-probe-is-output", "infer", _infer_probe_is_output, COLLIDES),
        Case("evaluate-recon-is-output", "evaluate", _evaluate_recon_is_output, COLLIDES),
        Case("train-test-in-checkpoints", "train", _train_test_in_checkpoints, COLLIDES),
        Case("train-config-in-logs", "train", _train_config_in_logs, COLLIDES),
        Case("train-checkpoints-link-out", "train", _train_checkpoints_link_out, "is a symbolic link"),
        Case("refine-input-named-like-a-temporary", "refine", _stale_tmp_is_input, COLLIDES),
        Case("refine-output-name-is-a-folder", "refine", _output_name_is_folder, "is a directory"),
        Case("ptycho_torch-inference-scan-is-output", "ptycho_torch.inference",
             _ptycho_torch_inference_scan_is_output, COLLIDES),
        Case("ptycho_torch-train-scan-is-output", "ptycho_torch.train", _ptycho_torch_train_scan_is_output, COLLIDES),
    ]


# ------------------------------------------------------------------------------------------ run.log
def _log_argv(command: str, out: Path, fx: Fixtures) -> list[str]:
    o = ["--output-dir", str(out)]
    return {
        "refine": ["refine", str(fx.scan), "--flat", *o, *REFINE_FAST],
        "infer": ["infer", str(fx.model), str(fx.scan), *o, "--quiet"],
        "train": ["train", str(fx.scan), *o, *TRAIN_FAST],
        "evaluate": ["evaluate", str(fx.recon), str(fx.scan), *o, "--quiet"],
        "simulate": ["simulate", *o, "--N", "16", "--object-size", "40", "--quiet"],
        "demo": ["demo", *o, "--quick", "--quiet"],
    }[command]


def _log_link(command: str, target: str) -> Callable[[Path, Fixtures], Setup]:
    """``out/run.log`` is a link to ``../victim.txt`` (a file outside the folder) or a dangling one."""
    def build(root: Path, fx: Fixtures) -> Setup:
        out = root / "out"
        if target == "live":
            (root / "victim.txt").write_text("someone else's file\n")
        link(out / "run.log", "../victim.txt" if target == "live" else "../created.txt")
        return Setup(_log_argv(command, out, fx), log_api(out))
    return build


def _log_special(kind: str) -> Callable[[Path, Fixtures], Setup]:
    def build(root: Path, fx: Fixtures) -> Setup:
        out = root / "out"
        out.mkdir()
        if kind == "fifo":
            os.mkfifo(out / "run.log")
        else:
            (out / "run.log").mkdir()
        return Setup(_log_argv("refine", out, fx), log_api(out))
    return build


def log_cases() -> list[Case]:
    cases = [Case(f"{cmd}-run-log-link-{t}", cmd, _log_link(cmd, t), "is a symbolic link")
             for cmd in ("refine", "infer", "train", "evaluate", "simulate", "demo") for t in ("live", "dangling")]
    cases += [Case("refine-run-log-is-a-fifo", "refine", _log_special("fifo"), "is a named pipe"),
              Case("refine-run-log-is-a-folder", "refine", _log_special("dir"), "is a directory")]
    return cases


# ------------------------------------------------------------------ accepted: links out are replaced, never followed
def _output_link_out(name: str, dangling: bool) -> Callable[[Path, Fixtures], Setup]:
    def build(root: Path, fx: Fixtures) -> Setup:
        out = root / "out"
        if not dangling:
            (root / "victim.bin").write_bytes(b"someone else's file")
        link(out / name, "../created.bin" if dangling else "../victim.bin")
        # CLI only: the API writes through the same staging folder (covered by the cases around it)
        return Setup(["refine", str(fx.scan), "--flat", "--output-dir", str(out), *REFINE_FAST])
    return build


def _replaced(name: str, dangling: bool) -> Callable[[Path], None]:
    def check(root: Path) -> None:
        target = root / "out" / name
        assert target.is_file() and not target.is_symlink(), f"{name} must be a file of its own now"
        assert not (root / "created.bin").exists()
        if not dangling:
            assert (root / "victim.bin").read_bytes() == b"someone else's file"
    return check


def _stale_temporaries(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    out.mkdir()
    (out / ".reconstruction.npz.x1y2.tmp").write_bytes(b"half a file")
    (out / ".misfit.png.abcd.tmp").write_bytes(b"half a picture")
    (out / ".ptychopinn-run.q9w8.tmp").mkdir()
    (out / ".ptychopinn-run.q9w8.tmp" / "reconstruction.npz").write_bytes(b"staged")
    (out / ".notes.txt.zz.tmp").write_bytes(b"not ours")
    return Setup(["refine", str(fx.scan), "--flat", "--output-dir", str(out), *REFINE_FAST],
                 lambda: refine_api(fx.scan, out))


def _stale_removed(root: Path) -> None:
    names = sorted(p.name for p in (root / "out").iterdir())
    assert [n for n in names if n.endswith(".tmp")] == [".notes.txt.zz.tmp"], names
    assert (root / "out" / "reconstruction.npz").stat().st_size > 1000


def _scan_inside_out_under_another_name(root: Path, fx: Fixtures) -> Setup:
    out = root / "out"
    scan = put(fx.scan, out / "my_scan.npz")
    return Setup(["refine", str(scan), "--flat", "--output-dir", str(out), *REFINE_FAST])


def _scan_kept(root: Path) -> None:
    assert (root / "out" / "my_scan.npz").stat().st_size > 1000 and (root / "out" / "reconstruction.npz").is_file()


def _huge_start(root: Path, fx: Fixtures) -> Setup:
    """A start object of 1e30 (finite in float32; its square is not)."""
    import numpy as np

    from ptychopinn.io.reconstruction import load_reconstruction

    obj, coverage, origin = load_reconstruction(fx.recon)
    init = root / "huge.npz"
    np.savez(init, obj=(obj / np.abs(obj).max() * np.float32(1e30)).astype(np.complex64), coverage=coverage,
             origin_xy=np.asarray(origin))
    out = root / "out"
    return Setup(["refine", str(fx.scan), "--init", str(init), "--output-dir", str(out), *REFINE_FAST],
                 lambda: refine_api(fx.scan, out, start=init))


def _finite_object(root: Path) -> None:
    import numpy as np

    with np.load(root / "out" / "reconstruction.npz", allow_pickle=False) as z:
        obj = z["obj"]
    amp = np.abs(obj)
    assert np.isfinite(obj).all() and amp.max() > 0 and np.median(amp) > 0, "an all-zero or non-finite object"


def accepted_cases() -> list[Case]:
    return [
        *(Case(f"refine-{name}-links-out-{'dangling' if d else 'live'}", "refine", _output_link_out(name, d), "",
               expect="ok", check=_replaced(name, d))
          for name, d in (("reconstruction.npz", True), ("amplitude.png", False), ("misfit.png", False))),
        Case("refine-removes-stale-temporaries", "refine", _stale_temporaries, "", expect="ok", check=_stale_removed),
        Case("refine-scan-inside-output-folder", "refine", _scan_inside_out_under_another_name, "", expect="ok",
             check=_scan_kept),
        Case("refine-init-of-1e30", "refine", _huge_start, "", expect="ok", check=_finite_object),
    ]


ALL_CASES: list[Case] = [*collision_cases(), *input_cases(), *log_cases(), *accepted_cases()]


# ------------------------------------------------------------------------------------------ snapshots
def snapshot(root: Path) -> dict[str, tuple[str, Any]]:
    """Every entry under ``root`` (links not followed): kind and content (bytes of files, targets of links)."""
    seen: dict[str, tuple[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                seen[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(mode):
                seen[rel] = ("dir", None)
            elif stat.S_ISREG(mode):
                seen[rel] = ("file", p.read_bytes())
            else:
                seen[rel] = ("other", stat.S_IFMT(mode))
    return seen


def expected_error() -> type[BaseException]:
    return ConfigError
