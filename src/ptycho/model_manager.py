"""``save(path)``: write the model trained (or loaded) last in this process as a ``wts.h5.zip`` archive.

ptychodus 1.7.0 calls ``save(output_dir)`` with a directory and expects ``output_dir / 'wts.h5.zip'``;
older ptychodus calls ``save(file_path)`` with the user's file name. Rule: an existing directory, or a
path without a suffix that does not exist yet, is a directory (``DIR/wts.h5.zip`` is written, the
directory created if needed); anything else is the archive file itself. The archive is the core's
tensors-only format (:mod:`ptychopinn.io.archive`): it carries the weights, the trained probe and
intensity scale and the full configuration, so a fresh process can load it with
``load_inference_bundle``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["ARCHIVE_NAME", "archive_path", "save"]

ARCHIVE_NAME = "wts.h5.zip"


def archive_path(out_prefix: str | os.PathLike[str]) -> Path:
    """Where :func:`save` writes for ``out_prefix`` (see the module docstring)."""
    p = Path(out_prefix)
    if p.is_dir() or (not p.exists() and p.suffix == ""):
        return p / ARCHIVE_NAME
    return p


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model file should be readable like any output
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(out_prefix: str | os.PathLike[str]) -> Path:
    """Write the remembered model to ``out_prefix`` (directory or file) and return the archive path.

    Raises:
        RuntimeError: no model was trained or loaded in this process.
    """
    from ptycho.workflows.components import last_model

    remembered = last_model()
    target = archive_path(out_prefix)
    target.parent.mkdir(parents=True, exist_ok=True)
    if remembered.archive_bytes is not None:
        _write_atomic(target, remembered.archive_bytes)
        return target
    from ptychopinn.models.persist import save_model

    return save_model(target, remembered.model, training=remembered.training, metadata=remembered.metadata)
