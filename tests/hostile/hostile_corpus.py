"""Generators of malformed inputs (scan NPZ files, model archives, config files, CLI flag sets).

Each :class:`Case` builds its input inside a directory, names the exact error class and a message fragment
it must produce, says how to trigger it through the Python API and which ``ptychopinn`` command lines must
reject it (exit code 2, one ``ptychopinn <cmd>: error:`` line on stderr).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpers import PickleMarker
from ptychopinn.errors import ArchiveError, ConfigError, DataFormatError
from ptychopinn.training.run import TrainingDivergedError

N = 32
M = 4


@dataclass(frozen=True)
class Shared:
    """Valid inputs built once: a tiny scan (N=32) and a tiny model archive for it."""

    scan: Path
    archive: Path


@dataclass(frozen=True)
class Case:
    id: str
    category: str  # npz | archive | config | flags | hang | memory | runtime
    make: Callable[[Path, Shared], Path]
    error: type[BaseException]
    fragment: str
    api: Callable[[Path, Shared, Path], Any]  # (input, shared, output dir) -> raises
    cli: tuple[str, ...] = ()  # command kinds, see cli_argv
    cli_fragment: str | None = None  # when the CLI message differs from the API one
    argparse_error: bool = False  # the CLI rejects it in argparse (usage + one error line)
    # fills the output folder before the run (e.g. a checkpoint to resume from); it must be unchanged after
    prepare_out: Callable[[Path, Shared, Path], None] | None = None
    isolated: bool = False  # run the CLI in a child process (it changes process-wide state, e.g. DDP env)


# ------------------------------------------------------------------------------------------ valid data
def scan_arrays(m: int = M, n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "diff3d": (rng.random((m, n, n)) + 0.1).astype(np.float32),
        "probeGuess": np.ones((n, n), np.complex64),
        "xcoords": 40.0 + 2.0 * np.arange(m),
        "ycoords": 40.0 + 2.0 * np.arange(m),
    }


def write_scan(path: Path, **changes: Any) -> Path:
    """The valid scan with ``changes`` applied (a value of None drops the key)."""
    arrays = scan_arrays()
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def build_shared(directory: Path) -> Shared:
    import torch

    from ptychopinn.config import ModelConfig
    from ptychopinn.models.persist import save_model
    from ptychopinn.models.pinn import PtychoPINN

    directory.mkdir(parents=True, exist_ok=True)
    scan = write_scan(directory / "scan.npz")
    torch.manual_seed(0)
    model = PtychoPINN(ModelConfig(N=N, n_filters_scale=1), probe=np.ones((N, N), np.complex64), intensity_scale=10.0)
    archive = save_model(directory / "wts.h5.zip", model)
    return Shared(scan=scan, archive=archive)


# ------------------------------------------------------------------------------------------ zip helpers
def members_of(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def write_zip(path: Path, members: dict[str, bytes] | list[tuple[str, bytes]],
              compress: int = zipfile.ZIP_DEFLATED) -> Path:
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(path, "w", compression=compress) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": some cases want duplicates
        for name, data in items:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compress)
    return path


def fix_manifest(members: dict[str, bytes]) -> dict[str, bytes]:
    """Recompute the manifest's sizes and hashes, so that checks after the hash check are what fails."""
    manifest = json.loads(members["manifest.json"])
    if not isinstance(manifest, dict):  # a JSON list or scalar: nothing to fix, the reader must refuse it
        return members
    manifest["members"] = {
        n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for n, d in members.items() if n != "manifest.json"
    }
    return {**members, "manifest.json": json.dumps(manifest).encode()}


def patch_central(path: Path, member: str, *, size: int | None = None, flag_bits: int | None = None) -> Path:
    """Rewrite a member's central-directory entry: declared uncompressed size and/or flag bits."""
    data = bytearray(path.read_bytes())
    i = data.find(b"PK\x01\x02")
    while i != -1:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, i + 28)
        name = data[i + 46:i + 46 + name_len].decode()
        if name == member:
            if size is not None:
                struct.pack_into("<I", data, i + 24, size)
            if flag_bits is not None:
                struct.pack_into("<H", data, i + 8, flag_bits)
        i = data.find(b"PK\x01\x02", i + 46 + name_len + extra_len + comment_len)
    path.write_bytes(bytes(data))
    return path


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def evil_pickle(marker: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(PickleMarker(marker), protocol=protocol)


# ------------------------------------------------------------------------------------------ NPZ cases
def _npz(**changes: Any) -> Callable[[Path, Shared], Path]:
    def make(d: Path, _s: Shared) -> Path:
        return write_scan(d / "scan.npz", **changes)
    return make


def _raw_npz(members: Callable[[], dict[str, bytes]]) -> Callable[[Path, Shared], Path]:
    def make(d: Path, _s: Shared) -> Path:
        return write_zip(d / "scan.npz", members(), compress=zipfile.ZIP_STORED)
    return make


def _huge_header(shape: tuple[int, ...], key: str = "diff3d") -> Callable[[], dict[str, bytes]]:
    def members() -> dict[str, bytes]:
        out = {f"{k}.npy": npy_bytes(v) for k, v in scan_arrays().items()}
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
        out[f"{key}.npy"] = buf.getvalue() + bytes(64)
        return out
    return members


def _bytes_file(content: bytes | Callable[[Shared], bytes], name: str = "scan.npz") -> Callable[[Path, Shared], Path]:
    def make(d: Path, s: Shared) -> Path:
        p = d / name
        p.write_bytes(content(s) if callable(content) else content)
        return p
    return make


def _truncated_npz(d: Path, _s: Shared) -> Path:
    full = write_scan(d / "full.npz").read_bytes()
    (d / "full.npz").unlink()
    p = d / "scan.npz"
    p.write_bytes(full[: len(full) // 2])
    return p


def _corrupt_deflate(d: Path, _s: Shared) -> Path:
    p = d / "scan.npz"
    np.savez_compressed(p, **scan_arrays())
    data = bytearray(p.read_bytes())
    data[2000:2400] = bytes(400)
    p.write_bytes(bytes(data))
    return p


def _single_npy(d: Path, _s: Shared) -> Path:
    p = d / "scan.npz"
    with open(p, "wb") as fh:
        np.save(fh, scan_arrays()["diff3d"])
    return p


def _dir_scan(d: Path, _s: Shared) -> Path:
    p = d / "scan.npz"
    p.mkdir()
    return p


def _load_npz(p: Path, _s: Shared, _o: Path) -> Any:
    from ptychopinn.io.npz import load_npz

    return load_npz(p)


D = scan_arrays()["diff3d"]
NPZ_CLI = ("info", "train", "infer_scan")


def _npz_case(id_: str, make: Callable[[Path, Shared], Path], fragment: str, error: type = DataFormatError,
              cli: tuple[str, ...] = NPZ_CLI, cli_fragment: str | None = None) -> Case:
    return Case(id_, "npz", make, error, fragment, _load_npz, cli, cli_fragment)


NPZ_CASES = [
    _npz_case("npz-missing-diffraction", _npz(diff3d=None), "missing required keys"),
    _npz_case("npz-renamed-diffraction", _npz(diff3d=None, diffraction_patterns=D), "missing required keys"),
    _npz_case("npz-missing-probe", _npz(probeGuess=None), "missing required keys"),
    _npz_case("npz-missing-xcoords", _npz(xcoords=None), "missing required keys"),
    _npz_case("npz-renamed-ycoords", _npz(ycoords=None, y_coords=np.zeros(M)), "missing required keys"),
    _npz_case("npz-no-keys", _raw_npz(dict), "missing required keys"),
    _npz_case("npz-diffraction-rank2", _npz(diff3d=D[0]), "must be (M, N, N)"),
    _npz_case("npz-diffraction-rank5", _npz(diff3d=D[..., None, None]), "must be (M, N, N)"),
    _npz_case("npz-diffraction-complex", _npz(diff3d=D.astype(np.complex64)), "must be real"),
    _npz_case("npz-diffraction-str", _npz(diff3d=np.full(D.shape, "a")), "numeric"),
    _npz_case("npz-diffraction-bool", _npz(diff3d=D > 0.5), "numeric"),
    _npz_case("npz-diffraction-object", _raw_npz(lambda: {
        **{f"{k}.npy": npy_bytes(v) for k, v in scan_arrays().items()},
        "diff3d.npy": npy_bytes(np.array([D[0], "x"], dtype=object))}), "pickled object array"),
    _npz_case("npz-probe-object", _raw_npz(lambda: {
        **{f"{k}.npy": npy_bytes(v) for k, v in scan_arrays().items()},
        "probeGuess.npy": npy_bytes(np.array([{"a": 1}], dtype=object))}), "pickled object array"),
    _npz_case("npz-xcoords-object", _raw_npz(lambda: {
        **{f"{k}.npy": npy_bytes(v) for k, v in scan_arrays().items()},
        "xcoords.npy": npy_bytes(np.array([1, "a", None, 2.0], dtype=object))}), "pickled object array"),
    _npz_case("npz-xcoords-complex", _npz(xcoords=np.ones(M, np.complex128)), "must be real numbers"),
    _npz_case("npz-xcoords-str", _npz(xcoords=np.array(["a"] * M)), "must be real numbers"),
    _npz_case("npz-xcoords-2d", _npz(xcoords=np.ones((M, 2))), "must be 1-D"),
    _npz_case("npz-probe-rank1", _npz(probeGuess=np.ones(N, np.complex64)), "'probeGuess' must be (N, N)"),
    _npz_case("npz-probe-modes", _npz(probeGuess=np.ones((3, N, N), np.complex64)), "incoherent modes"),
    _npz_case("npz-probe-str", _npz(probeGuess=np.full((N, N), "p")), "complex array"),
    _npz_case("npz-probe-size-mismatch", _npz(probeGuess=np.ones((16, 16), np.complex64)),
              "probe is (16, 16) but patterns are (32, 32)"),
    _npz_case("npz-empty", _npz(diff3d=np.zeros((0, N, N), np.float32), xcoords=np.zeros(0), ycoords=np.zeros(0)),
              "empty scan"),
    _npz_case("npz-empty-patterns", _npz(diff3d=np.zeros((M, 0, 0), np.float32)), "N >= 8"),
    _npz_case("npz-nan-pattern", _npz(diff3d=np.where(np.arange(N) == 3, np.nan, D).astype(np.float32)),
              "NaN/Inf"),
    _npz_case("npz-inf-pattern", _npz(diff3d=np.where(np.arange(N) == 5, np.inf, D).astype(np.float32)),
              "NaN/Inf"),
    _npz_case("npz-nan-xcoords", _npz(xcoords=np.array([np.nan, 1.0, 2.0, 3.0])), "NaN/Inf"),
    _npz_case("npz-inf-probe", _npz(probeGuess=np.full((N, N), np.inf, np.complex64)), "NaN/Inf"),
    _npz_case("npz-negative-pattern", _npz(diff3d=-D), "negative values"),
    _npz_case("npz-all-zero", _npz(diff3d=np.zeros_like(D)), "all-zero scan"),
    _npz_case("npz-odd-size", _npz(diff3d=D[:, :31, :31], probeGuess=np.ones((31, 31), np.complex64)),
              "even pattern size"),
    _npz_case("npz-non-square", _npz(diff3d=D[:, :, :24]), "expected N x N patterns"),
    _npz_case("npz-tiny-patterns", _npz(diff3d=D[:, :4, :4], probeGuess=np.ones((4, 4), np.complex64)), "N >= 8"),
    _npz_case("npz-more-patterns-than-positions", _npz(xcoords=np.arange(M + 1.0), ycoords=np.arange(M + 1.0)),
              "patterns but xcoords/ycoords have"),
    _npz_case("npz-x-y-length-mismatch", _npz(ycoords=np.arange(M + 1.0)), "xcoords has 4 entries but ycoords has 5"),
    _npz_case("npz-only-xcoords-start", _npz(xcoords_start=np.zeros(M)), "only one of xcoords_start/ycoords_start"),
    _npz_case("npz-start-wrong-length", _npz(xcoords_start=np.zeros(2), ycoords_start=np.zeros(2)),
              "xcoords_start/ycoords_start have 2/2 entries"),
    _npz_case("npz-both-names-differ", _npz(diffraction=D[:2]), "different shapes"),
    _npz_case("npz-Y-real", _npz(Y=np.ones((M, N, N), np.float32)), "'Y' (ground-truth patches) must be complex"),
    _npz_case("npz-object-1d", _npz(objectGuess=np.ones(5, np.complex64)), "'objectGuess' must be (H, W)"),
    _npz_case("npz-object-too-small", _npz(objectGuess=np.ones((10, 10), np.complex64)),
              "probe centres inside the object"),
    _npz_case("npz-scan-index-fractional", _npz(scan_index=np.array([0.5, 1, 2, 3])), "whole numbers"),
    _npz_case("npz-huge-declared-shape", _raw_npz(_huge_header((10**12, N, N))), "declares shape"),
    _npz_case("npz-huge-declared-probe", _raw_npz(_huge_header((2**31, 2**31), key="probeGuess")),
              "declares shape"),
    _npz_case("npz-truncated", _truncated_npz, "not a readable NPZ"),
    _npz_case("npz-corrupt-member", _corrupt_deflate, "not a readable NPZ"),
    _npz_case("npz-not-zip", _bytes_file(b"diffraction,probe\n1,2\n"), "not a readable NPZ"),
    _npz_case("npz-zero-bytes", _bytes_file(b""), "not a readable NPZ"),
    _npz_case("npz-single-npy", _single_npy, "single .npy array"),
    _npz_case("npz-is-directory", _dir_scan, "is a directory", cli=("train", "infer_scan")),
    _npz_case("npz-missing-file", lambda d, s: d / "absent.npz", "NPZ file not found", error=FileNotFoundError,
              cli=("train", "infer_scan")),
]


# ------------------------------------------------------------------------------------------ archive cases
def _archive(mutate: Callable[[dict[str, bytes]], dict[str, bytes] | list[tuple[str, bytes]]],
             compress: int = zipfile.ZIP_DEFLATED) -> Callable[[Path, Shared], Path]:
    def make(d: Path, s: Shared) -> Path:
        return write_zip(d / "wts.h5.zip", mutate(members_of(s.archive)), compress=compress)
    return make


def _drop(name: str) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    return lambda m: {k: v for k, v in m.items() if k != name}


def _add(name: str, data: bytes) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    return lambda m: {**m, name: data}


def _manifest(**changes: Any) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def mutate(m: dict[str, bytes]) -> dict[str, bytes]:
        man = json.loads(m["manifest.json"])
        man.update(changes)
        return {**m, "manifest.json": json.dumps(man).encode()}
    return mutate


def _config(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def mutate(m: dict[str, bytes]) -> dict[str, bytes]:
        cfg = json.loads(m["config.json"])
        edit(cfg)
        return fix_manifest({**m, "config.json": json.dumps(cfg).encode()})
    return mutate


def _set_model(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda cfg: cfg["model"].__setitem__(key, value)


def _truncated_archive(fraction: float | None = None, cut_tail: int = 0) -> Callable[[Path, Shared], Path]:
    def make(d: Path, s: Shared) -> Path:
        data = s.archive.read_bytes()
        p = d / "wts.h5.zip"
        p.write_bytes(data[: int(len(data) * fraction)] if fraction else data[:-cut_tail])
        return p
    return make


def _declared_bomb(d: Path, s: Shared) -> Path:
    p = write_zip(d / "wts.h5.zip", members_of(s.archive))
    return patch_central(p, "weights.safetensors", size=3 * 1024**3)  # 3 GiB > the 2 GiB default limit


def _lying_bomb(d: Path, s: Shared) -> Path:
    members = fix_manifest({**members_of(s.archive), "notes.txt": b" " * (8 * 1024**2)})
    p = write_zip(d / "wts.h5.zip", members)
    return patch_central(p, "notes.txt", size=100)  # declares 100 bytes, inflates to 8 MiB


def _honest_big(d: Path, s: Shared) -> Path:
    return write_zip(d / "wts.h5.zip", fix_manifest({**members_of(s.archive), "notes.txt": bytes(2 * 1024**2)}))


def _encrypted(d: Path, s: Shared) -> Path:
    return patch_central(write_zip(d / "wts.h5.zip", members_of(s.archive)), "config.json", flag_bits=0x1)


def _load_archive(**limits: int) -> Callable[[Path, Shared, Path], Any]:
    def call(p: Path, _s: Shared, _o: Path) -> Any:
        from ptychopinn.io.archive import load_archive

        return load_archive(p, **limits)
    return call


def _load_model(p: Path, _s: Shared, _o: Path) -> Any:
    from ptychopinn.models.persist import load_model

    return load_model(p)


ARCH_CLI = ("info", "infer_model")
PICKLE = pickle.dumps({"weights": [1, 2, 3]}, protocol=4)


def _arch_case(id_: str, make: Callable[[Path, Shared], Path], fragment: str, error: type = ArchiveError,
               api: Callable[[Path, Shared, Path], Any] | None = None, cli: tuple[str, ...] = ARCH_CLI) -> Case:
    return Case(id_, "archive", make, error, fragment, api or _load_archive(), cli)


ARCHIVE_CASES = [
    _arch_case("arch-not-zip", _bytes_file(b"this is not a model\n", "wts.h5.zip"), "is not a zip archive"),
    _arch_case("arch-zero-bytes", _bytes_file(b"", "wts.h5.zip"), "is not a zip archive"),
    _arch_case("arch-npz-instead", _bytes_file(lambda s: s.scan.read_bytes(), "wts.h5.zip"),
               "unexpected member 'diff3d.npy'", cli=("info",)),
    Case("arch-npz-instead-infer", "archive", _bytes_file(lambda s: s.scan.read_bytes(), "wts.h5.zip"),
         ArchiveError, "unexpected member 'diff3d.npy'", _load_archive(), ("infer_model",),
         cli_fragment="expected a model archive (wts.h5.zip) or a training output directory"),
    _arch_case("arch-truncated-half", _truncated_archive(0.5), "corrupt or truncated"),
    _arch_case("arch-truncated-tail", _truncated_archive(cut_tail=10), "corrupt or truncated"),
    _arch_case("arch-missing-manifest", _archive(_drop("manifest.json")), "has no member 'manifest.json'"),
    _arch_case("arch-missing-config", _archive(_drop("config.json")), "has no member 'config.json'"),
    _arch_case("arch-missing-weights", _archive(_drop("weights.safetensors")), "has no member 'weights.safetensors'"),
    _arch_case("arch-dotdot-member", _archive(_add("../evil.json", b"{}")), "unsafe member name"),
    _arch_case("arch-nested-dotdot", _archive(_add("a/../../evil.txt", b"x")), "unsafe member name"),
    _arch_case("arch-absolute-member", _archive(_add("/etc/evil.json", b"{}")), "unsafe member name"),
    _arch_case("arch-backslash-member", _archive(_add("..\\evil.json", b"{}")), "unsafe member name"),
    _arch_case("arch-duplicate-member", _archive(lambda m: [*m.items(), ("config.json", b"{}")]),
               "duplicate member names"),
    _arch_case("arch-unexpected-member", _archive(_add("run.sh", b"rm -rf /")), "unexpected member 'run.sh'"),
    _arch_case("arch-bomb-declared-3GiB", _declared_bomb, "possible zip bomb"),
    # zipfile stops inflating at the declared size, so the lie surfaces as a CRC failure, never as 8 MiB read
    _arch_case("arch-bomb-lying-header", _lying_bomb, "Bad CRC-32 for file 'notes.txt'", cli=("infer_model",)),
    _arch_case("arch-bomb-small-member-limit", _honest_big, "more than max_member_bytes",
               api=_load_archive(max_member_bytes=1024**2), cli=()),
    _arch_case("arch-bomb-small-total-limit", _honest_big, "more than max_total_bytes",
               api=_load_archive(max_total_bytes=1024**2), cli=()),
    _arch_case("arch-encrypted-member", _encrypted, "is encrypted"),
    _arch_case("arch-pickle-weights", _archive(lambda m: fix_manifest({**m, "weights.safetensors": PICKLE})),
               "contains a pickle", cli=("infer_model",)),
    _arch_case("arch-pickle-config", _archive(lambda m: fix_manifest({**m, "config.json": PICKLE})),
               "contains a pickle"),
    _arch_case("arch-pickle-manifest", _archive(_add("manifest.json", PICKLE)), "contains a pickle"),
    _arch_case("arch-pickle-extra-json", _archive(_add("extra.json", PICKLE)), "contains a pickle",
               cli=("infer_model",)),
    _arch_case("arch-pt-member", _archive(_add("x.pt", PICKLE)), "member 'x.pt' contains a pickle"),
    _arch_case("arch-pkl-member", _archive(_add("model.pkl", b"not even a pickle")), "contains a pickle"),
    _arch_case("arch-manifest-future-version", _archive(_manifest(format_version=99)), "newer ptychopinn"),
    _arch_case("arch-manifest-version-str", _archive(_manifest(format_version="1")), "'format_version'"),
    _arch_case("arch-manifest-version-zero", _archive(_manifest(format_version=0)), "'format_version'"),
    _arch_case("arch-manifest-wrong-format", _archive(_manifest(format="zip")), "'format'"),
    _arch_case("arch-manifest-members-list", _archive(_manifest(members=["config.json"])), "'members'"),
    _arch_case("arch-manifest-model-names-int", _archive(_manifest(model_names=3)), "'model_names'"),
    _arch_case("arch-manifest-backend-tf", _archive(_manifest(backend="tensorflow")), "backend 'tensorflow'"),
    _arch_case("arch-manifest-not-json", _archive(_add("manifest.json", b"{not json")), "not valid JSON"),
    _arch_case("arch-manifest-array", _archive(_add("manifest.json", b"[1, 2]")), "must hold a JSON object"),
    _arch_case("arch-hash-mismatch", _archive(_add("config.json", b'{"model": {}}')), "fails its sha256 check"),
    _arch_case("arch-weights-garbage", _archive(lambda m: fix_manifest({**m, "weights.safetensors": b"\x10" * 64})),
               "invalid safetensors", cli=("infer_model",)),
    _arch_case("arch-weights-shape-mismatch", _archive(_config(_set_model("n_filters_scale", 2))),
               "weights do not match the configuration", api=_load_model, cli=("infer_model",)),
    _arch_case("arch-config-bad-N", _archive(_config(_set_model("N", 33))),
               "saved model configuration is invalid", api=_load_model, cli=("infer_model",)),
    _arch_case("arch-config-no-model", _archive(_config(lambda c: c.pop("model"))), "has no 'model' section",
               api=_load_model, cli=("infer_model",)),
    _arch_case("arch-config-negative-scale", _archive(_config(lambda c: c.__setitem__("intensity_scale", -1.0))),
               "'intensity_scale' must be a finite number > 0", api=_load_model, cli=("infer_model",)),
    _arch_case("arch-reference-tensorflow", _archive(lambda m: {
        "manifest.dill": PICKLE, "diffraction_to_obj/model.keras": b"PK\x03\x04keras", "params.dill": PICKLE}),
        "reference PtychoPINN TensorFlow backend"),
    _arch_case("arch-reference-torch", _archive(lambda m: {"model.pth": PICKLE, "params.dill": PICKLE}),
               "reference PtychoPINN PyTorch backend"),
    _arch_case("arch-missing-file", lambda d, s: d / "absent" / "wts.h5.zip", "model archive not found",
               error=FileNotFoundError, cli=("infer_model",)),
]


# ------------------------------------------------------------------------------------------ config cases
def _cfg_file(content: Any, name: str = "cfg.json") -> Callable[[Path, Shared], Path]:
    def make(d: Path, _s: Shared) -> Path:
        p = d / name
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        return p
    return make


def _run_config(p: Path, _s: Shared, _o: Path) -> Any:
    from ptychopinn.config import RunConfig
    from ptychopinn.config_files import load_config_file

    return RunConfig.from_dict(load_config_file(p))


def _cfg_case(id_: str, content: Any, fragment: str, name: str = "cfg.json",
              make: Callable[[Path, Shared], Path] | None = None) -> Case:
    return Case(id_, "config", make or _cfg_file(content, name), ConfigError, fragment, _run_config, ("train_config",))


CONFIG_CASES = [
    _cfg_case("cfg-unknown-model-key", {"model": {"n_filter_scale": 2}}, "n_filter_scale"),
    _cfg_case("cfg-unknown-training-key", {"training": {"epochs": 3}}, "unknown key(s) ['epochs']"),
    _cfg_case("cfg-unknown-section", {"modle": {"N": 32}}, "'modle'"),
    _cfg_case("cfg-N-not-multiple-of-8", {"model": {"N": 36}}, "multiple of 8"),
    _cfg_case("cfg-N-too-large", {"model": {"N": 4096}}, "config field 'N'"),
    _cfg_case("cfg-gridsize-zero", {"model": {"gridsize": 0}}, "config field 'gridsize'"),
    _cfg_case("cfg-gridsize-string", {"model": {"gridsize": "two"}}, "config field 'gridsize'"),
    _cfg_case("cfg-gridsize-float", {"model": {"gridsize": 2.5}}, "config field 'gridsize'"),
    _cfg_case("cfg-n-filters-zero", {"model": {"n_filters_scale": 0}}, "config field 'n_filters_scale'"),
    _cfg_case("cfg-probe-scale-negative", {"model": {"probe_scale": -1}}, "config field 'probe_scale'"),
    _cfg_case("cfg-nphotons-negative", {"training": {"nphotons": -1e6}}, "config field 'nphotons'"),
    _cfg_case("cfg-nphotons-string", {"training": {"nphotons": "1e9"}}, "config field 'nphotons'"),
    _cfg_case("cfg-batch-size-zero", {"training": {"batch_size": 0}}, "config field 'batch_size'"),
    _cfg_case("cfg-learning-rate-negative", {"training": {"learning_rate": -0.1}}, "config field 'learning_rate'"),
    _cfg_case("cfg-val-fraction-high", {"training": {"val_fraction": 0.95}}, "config field 'val_fraction'"),
    _cfg_case("cfg-scheduler-bogus", {"training": {"scheduler": "bogus"}}, "config field 'scheduler'"),
    _cfg_case("cfg-logger-bogus", {"execution": {"logger": "wandb"}}, "config field 'logger'"),
    _cfg_case("cfg-devices-zero", {"execution": {"devices": 0}}, "config field 'devices'"),
    _cfg_case("cfg-model-section-list", {"model": [1, 2]}, "'model'"),
    _cfg_case("cfg-training-section-string", {"training": "fast"}, "'training'"),
    _cfg_case("cfg-top-level-list", [1, 2], "expected a mapping"),
    _cfg_case("cfg-not-json", "{model: N=32", "cannot parse config file"),
    _cfg_case("cfg-bad-yaml", "model: [unclosed\n", "cannot parse config file", name="cfg.yaml"),
    _cfg_case("cfg-yaml-bad-value", "model:\n  gridsize: -3\n", "config field 'gridsize'", name="cfg.yaml"),
    _cfg_case("cfg-missing-file", None, "config file not found", make=lambda d, s: d / "absent.json"),
    _cfg_case("cfg-is-directory", None, "is a directory", make=lambda d, s: _mkdir(d / "cfg.json")),
]


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


# ------------------------------------------------------------------------------------------ flag cases
def _train_api(**kw: Any) -> Callable[[Path, Shared, Path], Any]:
    def call(_p: Path, s: Shared, out: Path) -> Any:
        from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
        from ptychopinn.workflows import train_model

        execution = ExecutionConfig(**kw.pop("execution", {}), enable_progress_bar=False)
        return train_model(s.scan, output_dir=out, model=ModelConfig(N=N, n_filters_scale=1),
                           training=TrainingConfig(nepochs=1), execution=execution, **kw)
    return call


def _training_config(**kw: Any) -> Any:
    from ptychopinn.config import TrainingConfig

    return TrainingConfig(**kw)


def _inference_config(**kw: Any) -> Any:
    from ptychopinn.config import InferenceConfig

    return InferenceConfig(**kw)


def _model_config(**kw: Any) -> Any:
    from ptychopinn.config import ModelConfig

    return ModelConfig(**kw)


def _units_api(_p: Path, s: Shared, _o: Path) -> Any:
    from ptychopinn.io.npz import load_npz

    return load_npz(s.scan, units="bogus")


def _test_scan_n16(d: Path, _s: Shared) -> Path:
    a = scan_arrays(n=16)
    np.savez(d / "test.npz", **a)
    return d / "test.npz"


def _train_with_test(p: Path, s: Shared, out: Path) -> Any:
    from ptychopinn.workflows import train_model

    return train_model(s.scan, test=p, output_dir=out)


FLAG_CASES = [
    Case("flag-resume-without-checkpoint", "flags", lambda d, s: d, ConfigError, "expects a checkpoint",
         _train_api(resume=True), ("train_resume",)),
    Case("flag-logger-tensorboard-absent", "flags", lambda d, s: d, ConfigError, "tensorboard",
         _train_api(execution={"logger": "tensorboard"}), ("train_tensorboard",)),
    Case("flag-units-bogus", "flags", lambda d, s: d, ConfigError, "units must be one of", _units_api,
         ("train_units_bogus", "infer_units_bogus"), cli_fragment="invalid choice: 'bogus'", argparse_error=True),
    Case("flag-epochs-zero", "flags", lambda d, s: d, ConfigError, "config field 'nepochs'",
         lambda p, s, o: _training_config(nepochs=0), ("train_epochs_zero",),
         cli_fragment="expected a positive integer", argparse_error=True),
    Case("flag-test-scan-other-N", "flags", _test_scan_n16, DataFormatError, "test scan has 16x16 patterns",
         _train_with_test, ("train_test",)),
    Case("flag-test-scan-missing", "flags", lambda d, s: d / "absent.npz", FileNotFoundError, "NPZ file not found",
         _train_with_test, ("train_test",)),
    Case("flag-nphotons-negative", "flags", lambda d, s: d, ConfigError, "config field 'nphotons'",
         lambda p, s, o: _training_config(nphotons=-5.0), ("train_nphotons_negative",)),
    Case("flag-val-fraction-too-high", "flags", lambda d, s: d, ConfigError, "config field 'val_fraction'",
         lambda p, s, o: _training_config(val_fraction=2.0), ("train_val_fraction",)),
    Case("flag-stitch-taper-negative", "flags", lambda d, s: d, ConfigError, "config field 'stitch_taper'",
         lambda p, s, o: _inference_config(stitch_taper=-1.0), ("infer_taper",)),
    Case("flag-gridsize-zero", "flags", lambda d, s: d, ConfigError, "config field 'gridsize'",
         lambda p, s, o: _model_config(gridsize=0), ("train_gridsize_zero",),
         cli_fragment="expected a positive integer", argparse_error=True),
]

# ------------------------------------------------------------------------------------------ generated classes
# Variants of each class of hostile input: numbers beyond every type, text that is not UTF-8, nesting deep
# enough to exhaust a recursive parser, YAML aliases (exponential expansion), pipes and devices (which block
# or never end), declared sizes that would exhaust memory, NaN/retyped weights, settings that make training
# fail deep inside Lightning or torch, and checkpoints of another architecture or that would run code.
BIG = int("9" * 400)
OVERFLOW_FIELDS = (("training", "batch_size"), ("training", "warmup_epochs"), ("training", "nphotons"),
                   ("training", "learning_rate"), ("training", "seed"), ("training", "n_groups"),
                   ("model", "gridsize"), ("model", "probe_scale"), ("model", "n_filters_scale"),
                   ("execution", "devices"), ("execution", "num_workers"), ("execution", "rendezvous_timeout"))


def _raw_cfg(content: bytes | Callable[[Path], Path], name: str = "cfg.json") -> Callable[[Path, Shared], Path]:
    def make(d: Path, _s: Shared) -> Path:
        p = d / name
        if callable(content):
            return content(p)
        p.write_bytes(content)
        return p
    return make


def _fifo(p: Path) -> Path:
    import os

    os.mkfifo(p)
    return p


def _link_to(target: str) -> Callable[[Path], Path]:
    def make(p: Path) -> Path:
        p.symlink_to(target)
        return p
    return make


def _alias_bomb(levels: int, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nmodel:\n  gridsize: *a{levels - 1}\n"


GEN_CONFIG_CASES = [
    *[_cfg_case(f"cfg-overflow-{sec}-{key}{'-negative' if sign < 0 else ''}", {sec: {key: sign * BIG}},
                f"config field '{key}'")
      for sec, key in OVERFLOW_FIELDS for sign in (1, -1) if sign == 1 or key in ("batch_size", "learning_rate")],
    _cfg_case("cfg-overflow-float-literal", None, "config field 'nphotons'",
              make=_raw_cfg(b'{"training": {"nphotons": 1e999}}')),
    _cfg_case("cfg-overflow-yaml", f"training:\n  batch_size: {BIG}\n", "config field 'batch_size'", name="cfg.yaml"),
    _cfg_case("cfg-overflow-5000-digits", None, "cannot parse config file",
              make=_raw_cfg(b'{"training": {"seed": 1' + b"0" * 5000 + b"}}")),
    *[_cfg_case(f"cfg-not-utf8-{tag}", None, "is not UTF-8 text", make=_raw_cfg(data, name))
      for tag, data, name in (
          ("latin1", '{"model": {"generator": "caf\u00e9"}}'.encode("latin-1"), "cfg.json"),
          ("utf16", '{"model": {}}'.encode("utf-16"), "cfg.json"),
          ("cp1252", '{"model": {"generator": "\u201cunet\u201d"}}'.encode("cp1252"), "cfg.json"),
          ("binary", bytes(range(128, 256)), "cfg.json"),
          ("truncated", '{"model": {"generator": "\u00e9'.encode()[:-1], "cfg.json"),
          ("yaml-latin1", "model:\n  generator: caf\u00e9\n".encode("latin-1"), "cfg.yaml"),
          ("yaml-utf32", "model: {}\n".encode("utf-32"), "cfg.yaml"))],
    *[_cfg_case(f"cfg-deep-{tag}", None, "nests values", make=_raw_cfg(data.encode(), name))
      for tag, data, name in (
          ("json-lists-20", '{"model": ' + "[" * 20 + "]" * 20 + "}", "cfg.json"),
          ("json-lists-100k", "[" * 100_000 + "]" * 100_000, "cfg.json"),
          ("json-dicts-50", '{"a": ' * 50 + "1" + "}" * 50, "cfg.json"),
          ("json-mixed-1k", '{"model": ' + '[{"a": ' * 500 + "1" + "}]" * 500 + "}", "cfg.json"),
          ("yaml-flow-30", "model: " + "[" * 30 + "]" * 30 + "\n", "cfg.yaml"),
          ("yaml-flow-5k", "[" * 5000 + "]" * 5000 + "\n", "cfg.yaml"))],
    *[_cfg_case(f"cfg-yaml-alias-{tag}", text, "YAML alias", name="cfg.yaml")
      for tag, text in (("bomb-3", _alias_bomb(3)), ("bomb-9", _alias_bomb(9)), ("bomb-30", _alias_bomb(30, 2)),
                        ("single", "x: &x 3\nmodel:\n  gridsize: *x\n"),
                        ("merge-key", "base: &b {gridsize: 2}\nmodel:\n  <<: *b\n"))],
    _cfg_case("cfg-oversized-json", None, "larger than", make=_raw_cfg(b'{"model": {}}' + b" " * (2 * 1024**2))),
    _cfg_case("cfg-oversized-yaml", None, "larger than",
              make=_raw_cfg(b"model: {}\n" + b"# padding\n" * 250_000, "cfg.yaml")),
    _cfg_case("cfg-yaml-python-object", "model: !!python/object/apply:os.system ['true']\n", "cannot parse config file",
              name="cfg.yaml"),
    _cfg_case("cfg-yaml-python-name", "model: !!python/name:os.system\n", "cannot parse config file",
              name="cfg.yaml"),
    _cfg_case("cfg-yaml-int-keys", "model:\n  1: 2\n  a: 3\n", "unknown key(s) [1, 'a']", name="cfg.yaml"),
    _cfg_case("cfg-yaml-null-section", "~: 1\nmodel: {}\n", "unknown", name="cfg.yaml"),
]

HANG_CASES = [
    *[Case(f"hang-config-{tag}", "hang", _raw_cfg(make, name), ConfigError, "expected a regular file", _run_config,
           ("train_config",)) for tag, make, name in (
        ("fifo", _fifo, "cfg.json"), ("fifo-yaml", _fifo, "cfg.yaml"), ("dev-zero", _link_to("/dev/zero"), "cfg.json"),
        ("dev-null", _link_to("/dev/null"), "cfg.yaml"))],
    *[Case(f"hang-archive-{tag}", "hang", make, ArchiveError, "expected a regular file", _load_archive(),
           ("infer_model",)) for tag, make in (
        ("fifo", _raw_cfg(_fifo, "wts.h5.zip")),
        ("dev-zero", lambda d, s: Path("/dev/zero")),
        ("link-dev-zero", _raw_cfg(_link_to("/dev/zero"), "wts.h5.zip")),
        ("dir-with-fifo", lambda d, s: _fifo(_mkdir(d / "run") / "wts.h5.zip").parent),
        ("dir-link-dev-urandom", lambda d, s: _link_to("/dev/urandom")(_mkdir(d / "run") / "wts.h5.zip").parent))],
]


def _deep_json(depth: int) -> bytes:
    return ('{"a": ' + "[" * depth + "]" * depth + "}").encode()


def _weights(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def mutate(m: dict[str, bytes]) -> dict[str, bytes]:
        from safetensors.torch import load, save

        tensors = dict(load(m["weights.safetensors"]))
        edit(tensors)
        return fix_manifest({**m, "weights.safetensors": save(tensors)})
    return mutate


def _fill(key: str | int, value: float) -> Callable[[dict[str, Any]], None]:
    def edit(t: dict[str, Any]) -> None:
        name = key if isinstance(key, str) else [k for k, v in t.items() if v.is_floating_point()][key]
        t[name] = t[name].clone()
        t[name].view(-1)[0] = value
    return edit


def _retype(key: int, dtype: str) -> Callable[[dict[str, Any]], None]:
    def edit(t: dict[str, Any]) -> None:
        import torch

        name = [k for k, v in t.items() if v.is_floating_point()][key]
        t[name] = t[name].to(getattr(torch, dtype))
    return edit


GEN_ARCHIVE_CASES = [
    *[_arch_case(f"arch-deep-json-{member}-{depth}", _archive(lambda m, member=member, depth=depth: fix_manifest(
        {**m, member: _deep_json(depth)})), "nests values", api=_load_archive(),
        cli=("info", "infer_model") if member == "config.json" else ("infer_model",))
      for member in ("config.json", "metadata.json") for depth in (40, 100_000)],
    *[_arch_case(f"arch-deep-json-manifest-{depth}", _archive(_add("manifest.json", _deep_json(depth))), "nests values")
      for depth in (40, 100_000)],
    *[_arch_case(f"arch-weights-{tag}-{which}", _archive(_weights(_fill(key, value))), "NaN or infinite",
                 api=_load_model, cli=("infer_model",))
      for tag, value in (("nan", float("nan")), ("inf", float("inf")), ("neg-inf", float("-inf")))
      for which, key in (("first", 0), ("last", -1))],
    _arch_case("arch-weights-nan-probe", _archive(_weights(lambda t: t.__setitem__(
        "physics.probe", t["physics.probe"] * float("nan")))), "NaN or infinite", api=_load_model,
        cli=("infer_model",)),
    *[_arch_case(f"arch-weights-{dtype}-{which}", _archive(_weights(_retype(key, dtype))), "dtype mismatch",
                 api=_load_model, cli=("infer_model",))
      for dtype in ("int32", "int64", "float64", "float16") for which, key in (("first", 0),)],
    _arch_case("arch-weights-uint8-last", _archive(_weights(_retype(-1, "uint8"))), "dtype mismatch",
               api=_load_model, cli=("infer_model",)),
]



def _simulate_api(**kw: Any) -> Callable[[Path, Shared, Path], Any]:
    def call(_p: Path, _s: Shared, _o: Path) -> Any:
        from ptychopinn.config import SimulationConfig
        from ptychopinn.simulate import simulate_scan

        return simulate_scan(SimulationConfig(**kw), progress=False)
    return call


def _infer_api(p: Path, s: Shared, out: Path) -> Any:
    from ptychopinn.workflows import reconstruct_scan

    return reconstruct_scan(s.archive, p, output_dir=out, progress=False)


def _train_scan_api(p: Path, s: Shared, out: Path) -> Any:
    from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
    from ptychopinn.workflows import train_model

    return train_model(p, output_dir=out, model=ModelConfig(N=N, n_filters_scale=1), training=TrainingConfig(nepochs=1),
                       execution=ExecutionConfig(enable_progress_bar=False))


def _train_resume_api(p: Path, s: Shared, out: Path) -> Any:
    from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
    from ptychopinn.workflows import train_model

    return train_model(s.scan, output_dir=out, model=ModelConfig(N=N, n_filters_scale=1),
                       training=TrainingConfig(nepochs=2), execution=ExecutionConfig(enable_progress_bar=False),
                       resume=True)


def _state_of(**model: Any) -> dict[str, Any]:
    import torch

    from ptychopinn.config import ModelConfig
    from ptychopinn.models.pinn import PtychoPINN

    torch.manual_seed(0)
    net = PtychoPINN(ModelConfig(N=N, **model), probe=np.ones((N, N), np.complex64), intensity_scale=10.0)
    return {f"model.{k}": v for k, v in net.state_dict().items()}


def _checkpoint(content: Callable[[Path], Any]) -> Callable[[Path, Shared, Path], None]:
    """Writes ``out/checkpoints/last.ckpt``: torch.save of ``content(marker)``, or raw bytes."""
    def prepare(_p: Path, _s: Shared, out: Path) -> None:
        import torch

        ckpt = out / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        data = content(out.parent / "PWNED")
        if isinstance(data, bytes):
            ckpt.write_bytes(data)
        else:
            torch.save(data, ckpt)
    return prepare


def _resume_case(tag: str, content: Callable[[Path], Any]) -> Case:
    return Case(f"runtime-resume-{tag}", "runtime", lambda d, s: d, ConfigError, "cannot resume from",
                _train_resume_api, ("train_resume_w1",), prepare_out=_checkpoint(content))


def _far_scan(x: float, y: float) -> Callable[[Path, Shared], Path]:
    return _npz(xcoords=np.array([40.0, 42.0, 44.0, x]), ycoords=np.array([40.0, 42.0, 44.0, y]))


def _train_lr_api(lr: float) -> Callable[[Path, Shared, Path], Any]:
    def call(_p: Path, s: Shared, out: Path) -> Any:
        from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
        from ptychopinn.workflows import train_model

        return train_model(s.scan, output_dir=out, model=ModelConfig(N=N, n_filters_scale=1),
                           training=TrainingConfig(nepochs=1, learning_rate=lr),
                           execution=ExecutionConfig(enable_progress_bar=False, logger="csv"))
    return call


def _train_rendezvous_api(p: Path, s: Shared, out: Path) -> Any:
    from ptychopinn.config import ExecutionConfig

    # the API side checks the setting only: a DDP attempt changes process-wide state (run by the CLI, isolated)
    return ExecutionConfig(num_nodes=2, rendezvous_timeout=-1)


RUNTIME_CASES = [
    *[Case(f"runtime-accelerator-{acc}", "runtime", lambda d, s: d, ConfigError, f"accelerator '{acc}'",
           _train_api(execution={"accelerator": acc}), (f"train_accelerator_{acc}",))
      for acc in ("gpu", "cuda", "mps")],
    *[Case(f"runtime-learning-rate-{lr:g}", "runtime", lambda d, s: d, TrainingDivergedError, "training diverged",
           _train_lr_api(lr), (f"train_lr_{lr:g}",)) for lr in (1e30, 1e12)],
    Case("runtime-all-zero-probe", "runtime", _npz(probeGuess=np.zeros((N, N), np.complex64)), DataFormatError,
         "non-zero amplitude", _train_scan_api, ("train",)),
    _resume_case("other-width", lambda m: {"state_dict": _state_of(n_filters_scale=2), "epoch": 0}),
    _resume_case("other-generator",
                 lambda m: {"state_dict": _state_of(n_filters_scale=1, generator="cnn"), "epoch": 0}),
    _resume_case("no-state-dict", lambda m: {"epoch": 0}),
    _resume_case("empty-file", lambda m: b""),
    _resume_case("garbage", lambda m: b"PK\x03\x04" + bytes(100)),
    _resume_case("pickle-payload", lambda m: evil_pickle(m, 2)),
    _resume_case("torch-pickle-payload", lambda m: {"state_dict": {}, "x": PickleMarker(m)}),
    Case("runtime-rendezvous-timeout", "runtime", _cfg_file({"execution": {"num_nodes": 2, "rendezvous_timeout": 1}}),
         ConfigError, "rendezvous_timeout", _train_rendezvous_api, ("train_config",), isolated=True),
]


MEMORY_LIMIT = "2G"  # PTYCHOPINN_MAX_MEMORY while the memory cases run in-process (independent of the machine)

MEMORY_CASES = [
    *[Case(f"memory-canvas-{tag}", "memory", _far_scan(x, y), DataFormatError, "the stitching canvas", _infer_api,
           ("infer_scan",)) for tag, x, y in (("both-1e5", 1e5, 1e5), ("both-1e6", 1e6, 1e6), ("x-1e9", 1e9, 40.0),
                                                ("y-1e9", 40.0, 1e9), ("negative-1e8", -1e8, -1e8))],
    *[Case(f"memory-simulate-object-{size}", "memory", lambda d, s: d, ConfigError, fragment,
           _simulate_api(object_size=size), (f"simulate_size_{size}",))
      for size, fragment in ((8_000, "needs about"), (14_000, "needs about"), (10**7, "positions"))],
    Case("memory-simulate-n512-object-20000", "memory", lambda d, s: d, ConfigError, "needs about",
         _simulate_api(N=512, object_size=20_000), ("simulate_n512",)),
    *[Case(f"memory-archive-declared-{size >> 20}MiB", "memory", lambda d, s, size=size: patch_central(
        write_zip(d / "wts.h5.zip", members_of(s.archive)), "weights.safetensors", size=size), ArchiveError,
        "needs about", _load_archive(max_member_bytes=2**40, max_total_bytes=2**41), ("infer_model",))
      for size in (3 * 2**29, 2**31 - 2**26)],  # under the 2 GiB member limit, over the memory limit
]

ALL_CASES = (NPZ_CASES + ARCHIVE_CASES + CONFIG_CASES + FLAG_CASES + GEN_CONFIG_CASES + HANG_CASES + GEN_ARCHIVE_CASES
             + RUNTIME_CASES + MEMORY_CASES)


def _cli(command: str, *extra: str) -> Callable[[Path, Shared, Path], tuple[str, list[str]]]:
    def argv(p: Path, s: Shared, out: Path) -> tuple[str, list[str]]:
        base = {"train": ["train", str(s.scan), "--output-dir", str(out), "--epochs", "1", "--quiet",
                          "--n-filters-scale", "1"],
                "simulate": ["simulate", "--output-dir", str(out), "--quiet"]}[command]
        return command, [*base, *extra]
    return argv


EXTRA_KINDS: dict[str, Callable[[Path, Shared, Path], tuple[str, list[str]]]] = {
    **{f"train_accelerator_{acc}": _cli("train", "--accelerator", acc) for acc in ("gpu", "cuda", "mps")},
    **{f"train_lr_{lr:g}": _cli("train", "--learning-rate", f"{lr:g}") for lr in (1e30, 1e12)},
    "train_resume_w1": _cli("train", "--resume", "--epochs", "2"),
    **{f"simulate_size_{size}": _cli("simulate", "--object-size", str(size)) for size in (8_000, 14_000, 10**7)},
    "simulate_n512": _cli("simulate", "--N", "512", "--object-size", "20000"),
}

def cli_argv(kind: str, p: Path, s: Shared, out: Path) -> tuple[str, list[str]]:
    if kind in EXTRA_KINDS:
        return EXTRA_KINDS[kind](p, s, out)
    """``(command, argv)`` for one command kind applied to input ``p``."""
    o = ["--output-dir", str(out)]
    fast = ["--epochs", "1", "--quiet"]
    table: dict[str, tuple[str, list[str]]] = {
        "info": ("info", ["info", str(p)]),
        "train": ("train", ["train", str(p), *o, *fast]),
        "infer_scan": ("infer", ["infer", str(s.archive), str(p), *o, "--quiet"]),
        "infer_model": ("infer", ["infer", str(p), str(s.scan), *o, "--quiet"]),
        "train_config": ("train", ["train", str(s.scan), "--config", str(p), *o, *fast]),
        "train_resume": ("train", ["train", str(s.scan), *o, *fast, "--resume", "--n-filters-scale", "1"]),
        "train_tensorboard": ("train", ["train", str(s.scan), *o, *fast, "--logger", "tensorboard"]),
        "train_units_bogus": ("train", ["train", str(s.scan), *o, *fast, "--units", "bogus"]),
        "infer_units_bogus": ("infer", ["infer", str(s.archive), str(s.scan), *o, "--units", "bogus"]),
        "train_epochs_zero": ("train", ["train", str(s.scan), *o, "--epochs", "0"]),
        "train_nphotons_negative": ("train", ["train", str(s.scan), *o, *fast, "--nphotons", "-5"]),
        "train_val_fraction": ("train", ["train", str(s.scan), *o, *fast, "--val-fraction", "2"]),
        "infer_taper": ("infer", ["infer", str(s.archive), str(s.scan), *o, "--stitch-taper", "-1"]),
        "train_gridsize_zero": ("train", ["train", str(s.scan), *o, *fast, "--gridsize", "0"]),
        "train_test": ("train", ["train", str(s.scan), "--test", str(p), *o, *fast]),
    }
    return table[kind]


def categories() -> dict[str, int]:
    out: dict[str, int] = {}
    for c in ALL_CASES:
        out[c.category] = out.get(c.category, 0) + 1
    return out
