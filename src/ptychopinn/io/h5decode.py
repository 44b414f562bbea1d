"""Decoding of compressed and virtual HDF5 datasets in a child process, so that a decoder that crashes, loops or
allocates without bound on a corrupt chunk ends that process instead of this one.

One decoder process per Python process, started on first use (``python -m ptychopinn.io.h5decode``, about
0.2 s) and reused; it exits when its parent does. Each request names a file, a dataset path made of hard links
only (as :mod:`ptychopinn.io.h5guard` resolved it), rows of axis 0 and the bytes the read may need. The child
first checks the header of every chunk the read touches against the declared chunk size, where the filter's
header states it (bitshuffle, LZ4, Blosc, Zstd), then decodes under an address-space limit of that need plus
:data:`SLACK_BYTES`, and sends the array back through a pipe.

A child that dies, answers garbage or runs past :func:`deadline` is killed and replaced; the read becomes one
:class:`~ptychopinn.errors.DataFormatError` line.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.errors import DataFormatError

SLACK_BYTES = 256 << 20
"""Address space the child may use beyond the declared need (decoder state, HDF5 caches)."""
TIMEOUT_S = 120.0
"""Seconds a request may take, plus one second per 8 MiB of declared need (see :func:`deadline`)."""

_lock = threading.Lock()
_child: subprocess.Popen[bytes] | None = None
_owner = 0  # pid of the process that started _child (a forked copy must start its own)


def deadline(need: int) -> float:
    """Seconds allowed for a request that may need ``need`` bytes."""
    return TIMEOUT_S + need / (8 << 20)


def _start() -> subprocess.Popen[bytes]:
    global _child, _owner
    if _child is not None and _owner == os.getpid() and _child.poll() is None:
        return _child
    if not sys.executable:
        raise DataFormatError("compressed HDF5 datasets are decoded in a child Python process, but this "
                              "interpreter does not know its executable (sys.executable is empty); read the "
                              "file from a regular Python process")
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    _child = subprocess.Popen([sys.executable, "-m", "ptychopinn.io.h5decode"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True)
    _owner = os.getpid()
    return _child


def _stop() -> None:
    global _child
    child, _child = _child, None
    if child is None or _owner != os.getpid():
        return
    try:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=2)
    except (OSError, subprocess.TimeoutExpired):
        child.kill()
        child.wait()


atexit.register(_stop)


def _failure(child: subprocess.Popen[bytes], what: str, timed_out: float | None = None,
             kill: bool = False) -> DataFormatError:
    """The error for a request the child did not answer; the child is ended and forgotten."""
    global _child
    if timed_out is not None or kill:
        child.kill()
    try:
        code = child.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a killed child always ends
        child.kill()
        code = child.wait()
    if _child is child:
        _child = None
    if timed_out is not None:
        return DataFormatError(f"{what} was still decoding after {timed_out:.0f} s and was stopped; the data is "
                               "corrupt or made to hang readers: re-export or re-copy the file")
    if kill:
        return DataFormatError(f"{what}: the decoder answered an unexpected result; re-export or re-copy the file")
    cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    return DataFormatError(f"{what} crashed the decoder ({cause}); the data is corrupt or made to crash readers: "
                           "re-export or re-copy the file")


class _Session:
    """One request to the child: the lock held, and the child killed when the request does not complete
    (a signal handler or Ctrl-C in the middle would otherwise leave an answer in the pipe)."""

    def __init__(self, req: dict[str, Any], what: str):
        self.req, self.what = req, what
        self.limit = deadline(int(req["need"]))

    def __enter__(self) -> _Session:
        _lock.acquire()
        try:
            self.child = _start()
            self.end = time.monotonic() + self.limit
            assert self.child.stdin is not None
            try:
                self.child.stdin.write(json.dumps(self.req).encode() + b"\n")
                self.child.stdin.flush()
            except OSError:
                raise _failure(self.child, self.what) from None
            line = bytearray()
            one = bytearray(1)
            while not line.endswith(b"\n"):
                self.read_into(memoryview(one))
                line += one
                if len(line) > 1 << 16:
                    raise _failure(self.child, self.what, kill=True)
            self.header = json.loads(line)
        except BaseException:
            self._abandon()
            raise
        return self

    def read_into(self, view: memoryview) -> None:
        assert self.child.stdout is not None
        fd = self.child.stdout.fileno()
        pos = 0
        while pos < len(view):
            left = self.end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _failure(self.child, self.what, self.limit)
            n = os.readv(fd, [view[pos:]])
            if n == 0:
                raise _failure(self.child, self.what)
            pos += n

    def _abandon(self) -> None:
        global _child
        child = getattr(self, "child", None)
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        if _child is child:
            _child = None
        _lock.release()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            _lock.release()
        else:
            self._abandon()


def _refused(header: dict[str, Any], what: str) -> DataFormatError:
    return DataFormatError(f"{what} cannot be decoded ({header.get('error', 'unknown error')}); the data is corrupt: "
                           "re-export or re-copy the file")


def decode(filename: str, name: str, rows: tuple[int, int] | None, dtype: np.dtype, shape: tuple[int, ...],
           need: int, what: str) -> np.ndarray:
    """``dataset[rows[0]:rows[1]]`` (or the whole dataset) of the HDF5 file ``filename``, decoded in the child.

    Args:
        filename, name: the file and the hard-link path of the dataset in it.
        rows: rows of axis 0, or None for all.
        dtype, shape: the expected result.
        need: bytes the read may take (result plus decoded chunks), checked by the caller.
        what: the dataset for messages (``'<file>: dataset <name>'``).

    Raises:
        DataFormatError: the decoder refused a chunk, failed, crashed or timed out.
    """
    req = {"op": "data", "file": filename, "name": name, "rows": rows, "need": int(need)}
    with _Session(req, what) as s:
        if s.header.get("ok"):
            out = np.empty(shape, dtype=np.dtype(s.header["dtype"]))
            if list(out.shape) != list(s.header["shape"]) or out.nbytes != s.header["nbytes"]:
                raise _failure(s.child, what, kill=True)
            if out.nbytes:
                s.read_into(memoryview(out.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
    if not s.header.get("ok"):
        raise _refused(s.header, what)  # the child refused or failed cleanly and stays in service
    return out if out.dtype == dtype else out.astype(dtype)


def decode_text_values(filename: str, name: str, attr: str | None, need: int, what: str) -> Any:
    """The variable-length strings of a dataset (``attr`` None) or of attribute ``attr`` of object ``name``,
    read in the child under ``need`` bytes: a str, or an object array of them (invalid UTF-8 kept as surrogate
    escapes, for the caller to refuse)."""
    req = {"op": "text", "file": filename, "name": name, "attr": attr, "need": int(need)}
    with _Session(req, what) as s:
        if s.header.get("ok"):
            buf = bytearray(int(s.header["nbytes"]))
            s.read_into(memoryview(buf))
    if not s.header.get("ok"):
        raise _refused(s.header, what)
    values = json.loads(buf.decode("ascii"))
    return np.array(values, dtype=object).reshape(s.header["shape"]) if s.header["shape"] else values


# ------------------------------------------------------------------------------------------ chunk headers
def _bitshuffle(raw: bytes, expected: int, values: tuple[int, ...]) -> str | None:
    if len(values) < 5 or values[4] == 0:  # stored bit-shuffled only: the chunk is the data itself
        return None if len(raw) == expected else f"holds {len(raw)} bytes, expected {expected}"
    elem = max(int(values[2]), 1)
    if len(raw) < 12:
        return "is shorter than the bitshuffle header"
    total, block = struct.unpack(">QI", raw[:12])
    if total != expected:
        return f"declares {total} decoded bytes in its bitshuffle header, but the chunk holds {expected}"
    if block == 0 or block % (8 * elem) or total % elem:
        return f"declares a bitshuffle block of {block} bytes, not a multiple of 8 elements of {elem} bytes"
    elems, block_elems = total // elem, block // elem
    last = elems % block_elems - elems % block_elems % 8
    blocks = elems // block_elems + (1 if last else 0)
    pos = 12
    for _ in range(blocks):
        if pos + 4 > len(raw):
            return "ends inside its bitshuffle block table (truncated)"
        (size,) = struct.unpack(">I", raw[pos:pos + 4])
        pos += 4 + size
        if pos > len(raw) or size > 2 * block + 64:
            return f"declares a bitshuffle block of {size} compressed bytes past the end of the chunk (truncated)"
    if pos + elems % 8 * elem != len(raw):
        return f"holds {len(raw)} bytes, but its bitshuffle blocks account for {pos + elems % 8 * elem}"
    return None


def _lz4(raw: bytes, expected: int) -> str | None:
    if len(raw) < 12:
        return "is shorter than the LZ4 header"
    total, block = struct.unpack(">QI", raw[:12])
    if total != expected:
        return f"declares {total} decoded bytes in its LZ4 header, but the chunk holds {expected}"
    if block == 0:
        return "declares an LZ4 block size of 0"
    pos, left = 12, total
    while left > 0:
        if pos + 4 > len(raw):
            return "ends inside its LZ4 block table (truncated)"
        (size,) = struct.unpack(">I", raw[pos:pos + 4])
        pos += 4 + size
        if pos > len(raw) or size > min(block, left) + min(block, left) // 255 + 16:
            return f"declares an LZ4 block of {size} bytes past the end of the chunk (truncated)"
        left -= min(block, left)
    return None if pos == len(raw) else f"holds {len(raw)} bytes, but its LZ4 blocks account for {pos}"


def _blosc(raw: bytes, expected: int) -> str | None:
    if len(raw) < 16:
        return "is shorter than the Blosc header"
    nbytes, _block, cbytes = struct.unpack("<III", raw[4:16])
    if nbytes != expected:
        return f"declares {nbytes} decoded bytes in its Blosc header, but the chunk holds {expected}"
    return None if cbytes == len(raw) else f"declares {cbytes} compressed bytes but holds {len(raw)} (truncated)"


def _zstd_frame(raw: bytes, pos: int) -> tuple[int, int | None] | str:
    """``(end, declared size or None)`` of the Zstd frame at ``pos`` (its block headers walked), or a problem."""
    if raw[pos:pos + 4] != b"\x28\xb5\x2f\xfd" or pos + 5 > len(raw):
        return "does not hold a Zstd frame where one must start"
    fhd = raw[pos + 4]
    single, dict_flag, fcs_flag, checksum = (fhd >> 5) & 1, fhd & 3, fhd >> 6, (fhd >> 2) & 1
    pos += 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if pos + size > len(raw):
        return "ends inside its Zstd frame header (truncated)"
    declared = int.from_bytes(raw[pos:pos + size], "little") + (256 if size == 2 else 0) if size else None
    pos += size
    while True:
        if pos + 3 > len(raw):
            return "ends inside a Zstd block header (truncated)"
        head = int.from_bytes(raw[pos:pos + 3], "little")
        kind, length = (head >> 1) & 3, head >> 3
        if kind == 3:
            return "holds a Zstd block of the reserved type (corrupt)"
        pos += 3 + (1 if kind == 1 else length)
        if pos > len(raw):
            return "declares a Zstd block past the end of the chunk (truncated)"
        if head & 1:
            break
    pos += 4 * checksum
    return (pos, declared) if pos <= len(raw) else "ends inside its Zstd checksum (truncated)"


def _zstd(raw: bytes, expected: int) -> str | None:
    pos, total, known = 0, 0, True
    while pos < len(raw):
        frame = _zstd_frame(raw, pos)
        if isinstance(frame, str):
            return frame
        pos, declared = frame
        known = known and declared is not None
        total += declared or 0
    if pos == 0:
        return "holds no Zstd frame"
    return None if not known or total == expected else (f"declares {total} decoded bytes in its Zstd header, but "
                                                        f"the chunk holds {expected}")


def check_chunk(raw: bytes, filters: list[tuple[int, tuple[int, ...]]], mask: int, expected: int) -> str | None:
    """What is wrong with the stored chunk ``raw`` whose decoded size is ``expected`` bytes, or None.

    ``filters`` is the pipeline ``[(id, values)]`` in write order; ``mask`` has bit i set when filter i was
    skipped for this chunk. Only the last compressor is checked, and only when the filters before it keep
    the size (shuffle); fletcher32 appends a 4-byte checksum after it.
    """
    active = [(fid, vals) for i, (fid, vals) in enumerate(filters) if not mask & (1 << i)]
    if active and active[-1][0] == 3:
        raw, active = raw[:-4], active[:-1]
    if not active or any(fid != 2 for fid, _ in active[:-1]):
        return None
    fid, values = active[-1]
    if fid == 32008:
        return _bitshuffle(raw, expected, values)
    if fid == 32004:
        return _lz4(raw, expected)
    if fid == 32001:
        return _blosc(raw, expected)
    if fid == 32015:
        return _zstd(raw, expected)
    return None


def _check_chunks(dset: Any, rows: tuple[int, int] | None) -> None:
    plist = dset.id.get_create_plist()
    filters = [(int(fid), tuple(int(v) for v in vals)) for fid, _f, vals, _n in
               (plist.get_filter(i) for i in range(plist.get_nfilters()))]
    if not filters or dset.chunks is None:
        return
    chunks = tuple(int(c) for c in dset.chunks)
    shape = tuple(int(d) for d in dset.shape)
    expected = math.prod(chunks) * dset.dtype.itemsize
    lo, hi = (0, shape[0]) if rows is None else (rows[0], min(rows[1], shape[0]))
    starts = [range((lo // chunks[0]) * chunks[0], hi, chunks[0])]
    starts += [range(0, s, c) for s, c in zip(shape[1:], chunks[1:], strict=True)]
    import itertools

    for coord in itertools.product(*starts):
        info = dset.id.get_chunk_info_by_coord(coord)
        if info.byte_offset is None:
            continue  # never written: fill value
        mask, raw = dset.id.read_direct_chunk(coord)
        problem = check_chunk(raw, filters, mask, expected)
        if problem is not None:
            raise ValueError(f"chunk at {coord} {problem}")


# ------------------------------------------------------------------------------------------------ the child
def _address_space() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _answer(req: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """``(header, payload)`` for one request, run under the address-space cap the caller set."""
    import h5py

    with h5py.File(req["file"], "r") as f:
        obj = f[req["name"]]
        if req["op"] == "data":
            rows = req["rows"]
            _check_chunks(obj, None if rows is None else tuple(rows))
            arr = np.ascontiguousarray(obj[()] if rows is None else obj[rows[0]:rows[1]])
            header = {"ok": True, "dtype": arr.dtype.str, "shape": list(arr.shape), "nbytes": arr.nbytes}
            return header, (memoryview(arr).cast("B") if arr.nbytes else b"")  # type: ignore[arg-type]
        value = np.asarray(obj.attrs[req["attr"]] if req["attr"] is not None else obj[()], dtype=object)
        texts = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]
        data = json.dumps(texts if value.shape else texts[0]).encode("ascii")  # lone surrogates as \\udcxx escapes
        return {"ok": True, "shape": list(value.shape), "nbytes": len(data)}, data


def _serve() -> None:  # pragma: no cover - runs in the child process (tested through decode)
    import resource

    from ptychopinn.io.h5guard import register_filters

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; stdin EOF ends this
    register_filters()
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        req = json.loads(line)
        payload: Any = b""
        try:
            cap = _address_space() + int(req["need"]) + SLACK_BYTES
            resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
            header, payload = _answer(req)
        except MemoryError:
            header = {"ok": False,
                      "error": f"decoding needs more memory than the {req['need']} bytes its sizes declare"}
        except Exception as exc:  # noqa: BLE001 - any failure is reported to the parent as one line
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            header = {"ok": False, "error": text}
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        out.write(json.dumps(header).encode() + b"\n")
        if header["ok"]:
            out.write(payload)
        out.flush()
        payload = None  # drop the batch before waiting for the next request


if __name__ == "__main__":  # pragma: no cover - the child process
    _serve()
