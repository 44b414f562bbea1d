"""Tests for the safe model archive (src/ptychopinn/io/archive.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

import ptychopinn
from helpers import PickleMarker, write_reference_tf_bundle
from ptychopinn.errors import ArchiveError, PtychoInputError
from ptychopinn.io import archive as A
from ptychopinn.io import archive_container as AC
from ptychopinn.io.archive import (
    ARCHIVE_NAME,
    FORMAT_VERSION,
    Archive,
    load_archive,
    read_manifest,
    resolve_archive_path,
    save_archive,
)

CONFIG = {"N": 64, "gridsize": 2, "model_type": "pinn", "nested": {"a": [1, 2.5, None, True]}, "s": "x"}
METADATA = {"history": {"loss": [3.0, 2.0, 1.5]}, "data_stats": {"mean": 0.25}}


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "generator.conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "probe": torch.randn(8, 8, dtype=torch.complex64, generator=g),
        "probe64": torch.randn(5, 2, dtype=torch.complex128, generator=g),
        "counts": torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4),
        "log_scale": torch.tensor(1.25),
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
    }


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_archive(tmp_path / ARCHIVE_NAME, config=CONFIG, tensors=_tensors(), metadata=METADATA)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write_zip(path: Path, members: list[tuple[str, bytes]] | dict[str, bytes]) -> Path:
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in items:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def _rebuild(src: Path, dst: Path, *, manifest_edit: Any = None, **replace: bytes | None) -> Path:
    """Copy an archive with members replaced (None removes) and the manifest hashes recomputed, so the
    only defect is the one under test. ``replace`` keys use '_' for '.', e.g. config_json."""
    members = _members(src)
    for key, data in replace.items():
        name = key.replace("_", ".")
        if data is None:
            members.pop(name, None)
        else:
            members[name] = data
    manifest = json.loads(members[A.MANIFEST_MEMBER])
    manifest["members"] = {
        n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for n, d in members.items()
        if n != A.MANIFEST_MEMBER
    }
    if manifest_edit is not None:
        manifest_edit(manifest)
    if A.MANIFEST_MEMBER in members:
        members[A.MANIFEST_MEMBER] = json.dumps(manifest).encode()
    return _write_zip(dst, members)


def _evil(tmp_path: Path) -> tuple[bytes, Path]:
    marker = tmp_path / "PWNED"
    return pickle.dumps(PickleMarker(marker), protocol=4), marker


# ------------------------------------------------------------------------------------------- round trip


def test_round_trip_is_exact(saved: Path) -> None:
    arch = load_archive(saved)
    assert isinstance(arch, Archive)
    assert arch.config == CONFIG
    assert arch.metadata == METADATA
    expected = _tensors()
    assert set(arch.tensors) == set(expected)
    for name, t in expected.items():
        got = arch.tensors[name]
        assert got.dtype == t.dtype, name
        assert got.shape == t.shape, name
        assert torch.equal(got, t), name
    m = arch.manifest
    assert m["format"] == "ptychopinn-archive"
    assert m["format_version"] == FORMAT_VERSION == 1
    assert m["backend"] == "pytorch"
    assert m["library_version"] == ptychopinn.__version__
    assert m["model_names"] == ["diffraction_to_obj"]
    assert m["created_at"].endswith("Z") and m["created_at"][:2] == "20"
    assert set(m["members"]) == {"config.json", "weights.safetensors", "metadata.json"}
    # complex64 is native to safetensors; only complex128 goes through the real view.
    assert m["complex_tensors"] == ["probe64"]


def test_members_are_plain_json_and_safetensors(saved: Path) -> None:
    members = _members(saved)
    assert set(members) == {"manifest.json", "config.json", "weights.safetensors", "metadata.json"}
    assert json.loads(members["config.json"]) == CONFIG
    from safetensors.torch import load

    assert load(members["weights.safetensors"])["probe64"].shape == (5, 2, 2)
    for name, entry in json.loads(members["manifest.json"])["members"].items():
        assert entry == {"size": len(members[name]), "sha256": hashlib.sha256(members[name]).hexdigest()}


def test_save_handles_views_shared_storage_grad_and_returns_path(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    w = torch.randn(3, requires_grad=True)
    tensors = {
        "base": base,
        "tied": base,
        "view_t": base.t(),
        "row": base[1],
        "w": w,
        "conj": base.cfloat().conj(),
    }
    out = save_archive(tmp_path, config={}, tensors=tensors, model_names=["a", "b"])
    assert out == tmp_path / ARCHIVE_NAME
    arch = load_archive(tmp_path)
    assert torch.equal(arch.tensors["view_t"], base.t())
    assert torch.equal(arch.tensors["row"], base[1])
    assert torch.equal(arch.tensors["tied"], base)
    assert torch.equal(arch.tensors["w"], w.detach())
    assert torch.equal(arch.tensors["conj"], base.cfloat().conj())
    assert arch.metadata == {}
    assert arch.manifest["model_names"] == ["a", "b"]
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o644)


def test_save_creates_parent_and_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "model.zip"
    save_archive(target, config={"v": 1}, tensors={"x": torch.ones(1)})
    save_archive(target, config={"v": 2}, tensors={"x": torch.zeros(1)})
    assert load_archive(target).config == {"v": 2}
    assert sorted(os.listdir(target.parent)) == ["model.zip"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"config": {"bad": {1, 2}}}, "config must be JSON-serialisable"),
        ({"config": {"nan": float("nan")}}, "config must be JSON-serialisable"),
        ({"config": [1]}, "config must be a dict"),
        ({"metadata": {"x": object()}}, "metadata must be JSON-serialisable"),
        ({"model_names": "diffraction_to_obj"}, "model_names must be a non-empty sequence"),
        ({"model_names": []}, "model_names must be a non-empty sequence"),
        ({"tensors": {"x": [1.0]}}, "must be a dense torch.Tensor"),
        ({"tensors": {"__metadata__": torch.ones(1)}}, "tensor names must be"),
        ({"tensors": {"s": torch.ones(2).to_sparse()}}, "must be a dense torch.Tensor"),
    ],
)
def test_save_rejects_bad_input(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"config": {}, "tensors": {"x": torch.ones(1)}, **kwargs}
    with pytest.raises(ArchiveError, match=match):
        save_archive(tmp_path / "a.zip", **args)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- atomic write


def test_failed_replace_keeps_previous_archive_and_leaves_no_temp(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = saved.read_bytes()

    def boom(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(A.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_archive(saved, config={"new": True}, tensors={"x": torch.ones(3)})
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def test_crash_mid_zip_write_keeps_previous_archive(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = saved.read_bytes()
    real_writestr = zipfile.ZipFile.writestr
    calls = {"n": 0}

    def flaky(self: zipfile.ZipFile, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # even a BaseException must clean up
        real_writestr(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", flaky)
    with pytest.raises(KeyboardInterrupt):
        save_archive(saved.parent, config={"new": True}, tensors={"x": torch.ones(3)})
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]
    assert load_archive(saved).config == CONFIG


# ------------------------------------------------------------------------------------------- locating


def test_resolve_archive_path_forms(saved: Path, tmp_path: Path) -> None:
    assert resolve_archive_path(saved) == saved
    assert resolve_archive_path(str(saved.parent)) == saved
    assert resolve_archive_path(saved.parent / "wts.h5") == saved  # reference loaders drop '.zip'
    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(saved) as zf:
        zf.extractall(extracted)
    assert resolve_archive_path(extracted) == extracted
    arch = load_archive(extracted)
    assert arch.config == CONFIG and arch.metadata == METADATA
    assert torch.equal(arch.tensors["probe"], _tensors()["probe"])
    assert read_manifest(extracted)["config"] == CONFIG


def test_resolve_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        resolve_archive_path(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_archive(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"looked for wts\.h5\.zip or the extracted members"):
        resolve_archive_path(tmp_path / "empty")


def test_extracted_dir_with_symlink_is_refused(saved: Path, tmp_path: Path) -> None:
    extracted = tmp_path / "x"
    with zipfile.ZipFile(saved) as zf:
        zf.extractall(extracted)
    (extracted / "link.txt").symlink_to("/etc/hostname")
    with pytest.raises(ArchiveError, match="unsafe member 'link.txt'"):
        load_archive(extracted)


def test_extracted_reference_tf_directory(tmp_path: Path) -> None:
    d = write_reference_tf_bundle(tmp_path / "tf_model")
    with pytest.raises(ArchiveError, match="reference PtychoPINN TensorFlow backend"):
        resolve_archive_path(d)


# ------------------------------------------------------------------------------------------- read_manifest


def test_read_manifest_reads_only_manifest_and_config(saved: Path, tmp_path: Path) -> None:
    # Weights replaced by garbage that no longer matches the manifest: only load_archive notices.
    members = _members(saved)
    members["weights.safetensors"] = b"\x00" * 64
    broken = _write_zip(tmp_path / "broken.zip", members)
    info = read_manifest(broken)
    assert info["config"] == CONFIG
    assert info["backend"] == "pytorch" and "members" in info
    with pytest.raises(ArchiveError, match="fails its sha256 check"):
        load_archive(broken)


# ------------------------------------------------------------------------------------------- errors


def test_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / ARCHIVE_NAME
    p.write_text("hello")
    with pytest.raises(ArchiveError, match="is not a zip archive"):
        load_archive(p)


def test_truncated_zip(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="is corrupt or truncated"):
        load_archive(saved)


def test_crc_error_is_corrupt(saved: Path) -> None:
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("weights.safetensors")
        assert info.compress_type == zipfile.ZIP_STORED
    data = bytearray(saved.read_bytes())
    name_len, extra_len = (
        int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    last = info.header_offset + 30 + name_len + extra_len + info.compress_size - 1
    data[last] ^= 0xFF  # a bit flip in tensor data: only the zip CRC catches it
    saved.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"is corrupt or truncated .*CRC"):
        load_archive(saved)


def test_archive_errors_are_value_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.zip"
    p.write_text("x")
    with pytest.raises(ValueError):
        load_archive(p)
    assert issubclass(ArchiveError, PtychoInputError)


@pytest.mark.parametrize("name", ["/abs.json", "../evil.json", "a/../../b.json", "C:/x.json", "a\\b.json"])
def test_unsafe_member_names(saved: Path, tmp_path: Path, name: str) -> None:
    members = [*_members(saved).items(), (name, b"{}")]
    bad = _write_zip(tmp_path / "bad.zip", members)
    with pytest.raises(ArchiveError, match="unsafe member name"):
        load_archive(bad)


def test_duplicate_member_names(saved: Path, tmp_path: Path) -> None:
    members = list(_members(saved).items())
    with pytest.warns(UserWarning, match="Duplicate name"):
        bad = _write_zip(tmp_path / "dup.zip", [*members, ("config.json", b"{}")])
    with pytest.raises(ArchiveError, match="duplicate member names"):
        load_archive(bad)


def test_encrypted_member_refused(saved: Path, tmp_path: Path) -> None:
    data = bytearray(saved.read_bytes())
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= 0x01  # general-purpose flag bit 0: encrypted
    p = tmp_path / "enc.zip"
    p.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="is encrypted"):
        load_archive(p)


def test_zip_bomb_declared_size_refused_before_reading(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = _rebuild(saved, tmp_path / "bomb.zip", notes_txt=b"\x00" * (4 << 20))
    assert bomb.stat().st_size < 100_000  # highly compressed

    def no_read(*_: Any, **__: Any) -> None:
        raise AssertionError("a member was decompressed before the size check")

    monkeypatch.setattr(AC, "_read_bounded", no_read)
    with pytest.raises(ArchiveError, match=r"declares 4194304 bytes.*max_member_bytes.*zip bomb"):
        load_archive(bomb, max_member_bytes=1 << 20)
    with pytest.raises(ArchiveError, match=r"max_total_bytes.*zip bomb"):
        load_archive(bomb, max_total_bytes=2 << 20)


def test_lying_size_header_is_refused(saved: Path, tmp_path: Path) -> None:
    bomb = _rebuild(saved, tmp_path / "liar.zip", notes_txt=b"\x00" * (1 << 20))
    data = bytearray(bomb.read_bytes())
    with zipfile.ZipFile(bomb) as zf:
        info = zf.getinfo("notes.txt")
    small = (100).to_bytes(4, "little")
    data[info.header_offset + 22 : info.header_offset + 26] = small  # local header: uncompressed size
    central = data.find(b"PK\x01\x02")
    while central != -1:
        n = int.from_bytes(data[central + 28 : central + 30], "little")
        if data[central + 46 : central + 46 + n] == b"notes.txt":
            data[central + 24 : central + 28] = small  # central directory: uncompressed size
        central = data.find(b"PK\x01\x02", central + 4)
    liar = tmp_path / "liar2.zip"
    liar.write_bytes(bytes(data))
    with zipfile.ZipFile(liar) as zf:
        assert zf.getinfo("notes.txt").file_size == 100
    # zipfile stops at the declared size, so the lie surfaces as a CRC failure, never unbounded output.
    with pytest.raises(ArchiveError, match="is corrupt or truncated"):
        load_archive(liar, max_member_bytes=10_000)


def test_read_bounded_stops_a_stream_longer_than_declared(tmp_path: Path) -> None:
    stream = io.BytesIO(b"\x00" * (3 << 20))
    with pytest.raises(ArchiveError, match="decompresses to more than its declared 10 bytes"):
        AC._read_bounded(stream, name="m.json", declared=10, limit=1 << 30, where=tmp_path)
    assert stream.tell() <= 1 << 20  # stopped after the first chunk
    assert AC._read_bounded(io.BytesIO(b"abc"), name="m", declared=3, limit=3, where=tmp_path) == b"abc"


def test_reference_tensorflow_archive(tmp_path: Path) -> None:
    payload, marker = _evil(tmp_path)
    members = {
        "manifest.dill": payload,
        "diffraction_to_obj/model.keras": b"PK\x03\x04",
        "diffraction_to_obj/params.dill": payload,
        "diffraction_to_obj/custom_objects.dill": payload,
        "diffraction_to_obj/model.h5": b"\x89HDF",
    }
    ref = _write_zip(tmp_path / ARCHIVE_NAME, members)
    msg = r"reference PtychoPINN TensorFlow backend \(dill/Keras\); ptychopinn reads only PyTorch.*retrain"
    with pytest.raises(ArchiveError, match=msg):
        load_archive(ref)
    with pytest.raises(ArchiveError, match="TensorFlow backend"):
        read_manifest(tmp_path)
    assert not marker.exists()


def test_reference_pytorch_archive(tmp_path: Path) -> None:
    payload, marker = _evil(tmp_path)
    members = {
        "manifest.dill": payload,
        "diffraction_to_obj/model.pth": payload,
        "diffraction_to_obj/params.dill": payload,
        "autoencoder/model.pth": payload,
        "torch_scaling_metadata.pt": payload,
    }
    ref = _write_zip(tmp_path / ARCHIVE_NAME, members)
    with pytest.raises(ArchiveError, match=r"reference PtychoPINN PyTorch backend \(dill/torch pickles\)"):
        load_archive(ref)
    assert not marker.exists()


@pytest.mark.parametrize("missing", ["manifest.json", "config.json", "weights.safetensors"])
def test_missing_required_member(saved: Path, tmp_path: Path, missing: str) -> None:
    members = {n: d for n, d in _members(saved).items() if n != missing}
    bad = _write_zip(tmp_path / "m.zip", members)
    with pytest.raises(ArchiveError, match=rf"has no member '{missing}'; found \[.*'metadata.json'"):
        load_archive(bad)


def _set(key: str, value: Any) -> Any:
    def edit(m: dict[str, Any]) -> None:
        if value is _DELETE:
            del m[key]
        else:
            m[key] = value

    return edit


_DELETE = object()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_set("format", "other"), r"field 'format' must be 'ptychopinn-archive'; found 'other'"),
        (_set("format", _DELETE), r"field 'format' must be"),
        (_set("format_version", "1"), r"field 'format_version' must be an integer; found '1'"),
        (_set("format_version", True), r"field 'format_version' must be an integer"),
        (_set("format_version", 2), r"was written by a newer ptychopinn \(format 2\); .*upgrade ptychopinn"),
        (_set("format_version", 0), r"field 'format_version' must be an integer in 1\.\.1; it is invalid"),
        (_set("backend", 5), r"field 'backend' must be a string; found 5"),
        (_set("backend", "tensorflow"), r"backend 'tensorflow'; this package reads only PyTorch archives"),
        (_set("model_names", [1]), r"field 'model_names' must be a non-empty list of strings"),
        (_set("model_names", "diffraction_to_obj"), r"field 'model_names' must be"),
        (_set("library_version", None), r"field 'library_version' must be a string"),
        (_set("created_at", 3), r"field 'created_at' must be a string"),
        (_set("members", []), r"field 'members' must be an object"),
        (_set("members", {"config.json": {"size": 1, "sha256": "XYZ"}}), r"field 'members' must be"),
        (_set("complex_tensors", "probe"), r"field 'complex_tensors' must be a list of strings"),
    ],
)
def test_manifest_field_errors(saved: Path, tmp_path: Path, edit: Any, match: str) -> None:
    bad = _rebuild(saved, tmp_path / "bad.zip", manifest_edit=edit)
    with pytest.raises(ArchiveError, match=match):
        load_archive(bad)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{not json", "manifest.json in .* is not valid JSON"),
        (b"[1, 2]", "must hold a JSON object; found list"),
    ],
)
def test_manifest_not_json_object(saved: Path, tmp_path: Path, content: bytes, match: str) -> None:
    members = _members(saved)
    members["manifest.json"] = content
    with pytest.raises(ArchiveError, match=match):
        load_archive(_write_zip(tmp_path / "b.zip", members))


def test_manifest_lists_missing_member(saved: Path, tmp_path: Path) -> None:
    def edit(m: dict[str, Any]) -> None:
        m["members"]["extra.json"] = {"size": 2, "sha256": "0" * 64}

    bad = _rebuild(saved, tmp_path / "b.zip", manifest_edit=edit)
    with pytest.raises(ArchiveError, match="lists member 'extra.json', which is missing"):
        load_archive(bad)


def test_sha256_mismatch(saved: Path, tmp_path: Path) -> None:
    members = _members(saved)
    members["config.json"] = json.dumps({**CONFIG, "N": 128}).encode()  # manifest left as it was
    with pytest.raises(ArchiveError, match=r"corrupt or truncated \(member 'config.json' fails its sha256"):
        load_archive(_write_zip(tmp_path / "b.zip", members))


def test_unlisted_returned_member_refused(saved: Path, tmp_path: Path) -> None:
    def edit(m: dict[str, Any]) -> None:
        del m["members"]["metadata.json"]

    with pytest.raises(ArchiveError, match="member 'metadata.json' is not listed in manifest.json"):
        load_archive(_rebuild(saved, tmp_path / "b.zip", manifest_edit=edit))


@pytest.mark.parametrize(
    "member", ["config_json", "metadata_json", "weights_safetensors", "notes_txt", "x_png"]
)
def test_pickle_payload_refused_and_never_executed(
    saved: Path, tmp_path: Path, member: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload, marker = _evil(tmp_path)
    bad = _rebuild(saved, tmp_path / "evil.zip", **{member: payload})  # manifest hashes match the pickle
    with pytest.raises(ArchiveError, match="contains a pickle; refusing to load"):
        load_archive(bad)
    assert not marker.exists()
    assert pickle.loads(payload) is not None  # the payload is live: unpickling creates the marker
    assert marker.exists()


@pytest.mark.parametrize("name", ["evil.pkl", "model.pt", "sub/state.PTH", "x.dill", "last.ckpt"])
def test_pickle_named_member_refused(saved: Path, tmp_path: Path, name: str) -> None:
    bad = _write_zip(tmp_path / "b.zip", [*_members(saved).items(), (name, b"harmless")])
    with pytest.raises(ArchiveError, match=f"member '{name}' contains a pickle; refusing to load"):
        load_archive(bad)


@pytest.mark.parametrize("name", ["run.sh", "lib.so", "weights.npy", "README"])
def test_unknown_member_refused(saved: Path, tmp_path: Path, name: str) -> None:
    bad = _write_zip(tmp_path / "b.zip", [*_members(saved).items(), (name, b"data")])
    with pytest.raises(ArchiveError, match=f"unexpected member '{name}'"):
        load_archive(bad)


def test_tolerated_extras_are_ignored(saved: Path, tmp_path: Path) -> None:
    extras = [("README.txt", b"hello"), ("plots/loss.png", b"\x89PNG"), ("plots/", b"")]
    ok = _write_zip(tmp_path / "ok.zip", [*_members(saved).items(), *extras])
    arch = load_archive(ok)
    assert arch.config == CONFIG


@pytest.mark.parametrize(
    "weights", [b"\x00" * 3, b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}  ", b"garbage" * 9]
)
def test_invalid_safetensors_header(saved: Path, tmp_path: Path, weights: bytes) -> None:
    bad = _rebuild(saved, tmp_path / "b.zip", weights_safetensors=weights)
    with pytest.raises(ArchiveError, match="weights.safetensors has an invalid safetensors header"):
        load_archive(bad)


def test_complex_marker_on_wrong_tensor_is_corrupt(saved: Path, tmp_path: Path) -> None:
    bad = _rebuild(saved, tmp_path / "b.zip", manifest_edit=_set("complex_tensors", ["counts"]))
    with pytest.raises(ArchiveError, match="marks 'counts' complex"):
        load_archive(bad)


def test_metadata_must_be_object(saved: Path, tmp_path: Path) -> None:
    bad = _rebuild(saved, tmp_path / "b.zip", metadata_json=b"[1]")
    with pytest.raises(ArchiveError, match="metadata.json in .* must hold a JSON object"):
        load_archive(bad)


def test_loading_never_unpickles(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_: Any, **__: Any) -> None:
        raise AssertionError("unpickling attempted")

    for mod, attr in [(pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(mod, attr, forbidden)
    assert load_archive(saved).config == CONFIG
    assert read_manifest(saved)["config"] == CONFIG
