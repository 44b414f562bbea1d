"""Saving and loading a trained :class:`~ptychopinn.models.pinn.PtychoPINN` as a model archive.

The archive is the tensors-only zip of :mod:`ptychopinn.io.archive` (``wts.h5.zip``: JSON manifest,
JSON config, safetensors weights, optional JSON metadata; loading never unpickles). What goes in:

* ``config.json``: ``{'model': ModelConfig.to_dict(), 'training': {...}, 'intensity_scale': s0,
  'N': N, 'gridsize': g}``. ``intensity_scale`` is the data photon scale ``s0`` the model was built
  with; ``N`` and ``gridsize`` are repeated at top level of ``config.json`` for tools that read nothing
  else.
* weights: the complete ``state_dict()`` (generator, ``physics.probe``, ``physics.mask``,
  ``log_intensity_scale``, ``log_data_intensity_scale``), so the trained probe and scales come back
  exactly.
* ``metadata.json``: free-form provenance (training history, input scale, nphotons ...).

:func:`load_model` rebuilds the module from the configuration alone, then loads the weights strictly:
a fresh process needs nothing but the archive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ptychopinn.config import ModelConfig
from ptychopinn.config_fields import is_num
from ptychopinn.errors import ArchiveError, PtychoInputError
from ptychopinn.io.archive import load_archive, resolve_archive_path, save_archive
from ptychopinn.models.pinn import PtychoPINN

__all__ = ["PROBE_KEY", "LoadedModel", "load_model", "save_model", "state_mismatch"]

PROBE_KEY = "physics.probe"
"""State-dict key of the ``[N, N]`` complex64 probe."""

_MODEL_NAMES = ("diffraction_to_obj",)  # the reference system's name for the inference network
_MAX_LISTED = 4  # how many offending keys an error message names before summarising


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model rebuilt from an archive.

    Attributes:
        model: the module, in eval mode, on CPU.
        model_config: its :class:`ModelConfig`.
        training: the training settings saved with it (a plain dict, possibly empty).
        metadata: saved provenance (``{}`` when none).
        manifest: the archive's validated manifest.
        path: the archive file (or extracted-members directory) actually read.
    """

    model: PtychoPINN
    model_config: ModelConfig
    training: dict[str, Any]
    metadata: dict[str, Any]
    manifest: dict[str, Any]
    path: Path


def save_model(path: str | Path, model: PtychoPINN, *, training: dict[str, Any] | None = None,
               metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to a model archive atomically and return the archive path.

    Args:
        path: an existing directory (writes ``DIR/wts.h5.zip``) or the archive file path.
        model: the trained module (any device; tensors are stored on CPU).
        training: JSON-able training settings, e.g. ``TrainingConfig.to_dict()``.
        metadata: JSON-able provenance, e.g. ``{'history': ..., 'input_scale': a, 'nphotons': n}``.
    """
    if not isinstance(model, PtychoPINN):
        raise ArchiveError(f"save_model: expected a PtychoPINN module, found {type(model).__name__}; "
                           f"pass the trained model (e.g. lightning_module.model)")
    cfg = model.config
    config = {
        "model": cfg.to_dict(),
        "training": dict(training or {}),
        # The constructor takes the data scale s0; the trained scale comes back from the state dict.
        "intensity_scale": float(model.data_intensity_scale.detach().cpu()),
        "N": cfg.N,
        "gridsize": cfg.gridsize,
    }
    return save_archive(path, config=config, tensors=model.state_dict(), metadata=metadata,
                        model_names=_MODEL_NAMES)


def _bad_config(where: Path, detail: str) -> ArchiveError:
    return ArchiveError(f"{where}: config.json {detail}; the archive is corrupt or was not written by "
                        f"ptychopinn.save_model; re-save the model")


def _list(keys: list[str]) -> str:
    head = ", ".join(keys[:_MAX_LISTED])
    return head + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def state_mismatch(expected: Mapping[str, torch.Tensor], tensors: Mapping[str, Any]) -> str | None:
    """One-line description of how the state dict ``tensors`` differs from ``expected`` in names, shapes and
    dtypes (None if it fits); entries of ``tensors`` that are not tensors count as mismatched."""
    tensors = {k: v if isinstance(v, torch.Tensor) else torch.empty(0, dtype=torch.uint8)
               for k, v in tensors.items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    kinds = [f"{k} {tensors[k].dtype} vs {v.dtype}".replace("torch.", "") for k, v in expected.items()
             if k in tensors and tuple(tensors[k].shape) == tuple(v.shape) and tensors[k].dtype != v.dtype]
    parts = []
    if wrong:
        parts.append(f"shape mismatch (saved vs expected) {_list(wrong)}")
    if missing:
        parts.append(f"missing {_list(missing)}")
    if unexpected:
        parts.append(f"unexpected {_list(unexpected)}")
    if kinds:
        # a silent cast would hide an edited archive (integer or float64 weights where float32 were saved)
        parts.append(f"dtype mismatch (saved vs expected) {_list(kinds)}")
    return "; ".join(parts) or None


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild a :class:`PtychoPINN` from an archive (file, output directory holding ``wts.h5.zip``,
    or a directory of extracted members).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ArchiveError: unsafe/corrupt archive, a configuration that fails validation, weights that do
            not match the configuration (shapes, dtypes, missing or unexpected tensors) or that hold NaN/Inf.
    """
    where = resolve_archive_path(path)
    archive = load_archive(where)
    cfg = archive.config
    if not isinstance(cfg.get("model"), dict):
        raise _bad_config(where, f"has no 'model' section (found keys {sorted(cfg)})")
    try:
        model_config = ModelConfig.from_dict(cfg["model"])
    except PtychoInputError as exc:
        raise ArchiveError(f"{where}: the saved model configuration is invalid ({exc}); "
                           f"re-save the model with this version of ptychopinn") from None
    training = cfg.get("training", {})
    if not isinstance(training, dict):
        raise _bad_config(where, f"'training' must be an object, found {type(training).__name__}")
    s0 = cfg.get("intensity_scale")
    if not is_num(s0) or s0 <= 0:
        raise _bad_config(where, f"'intensity_scale' must be a finite number > 0, found {s0!r}")
    tensors = dict(archive.tensors)
    bad = [k for k, t in tensors.items() if (t.is_floating_point() or t.is_complex()) and not bool(t.isfinite().all())]
    if bad:
        raise ArchiveError(f"{where}: weights hold NaN or infinite values in {_list(sorted(bad))}; expected finite "
                           f"weights; the model is unusable (saved after training diverged, or edited); retrain it")
    probe = tensors.get(PROBE_KEY)
    n = model_config.N
    if probe is None or not probe.is_complex() or tuple(probe.shape) != (n, n):
        found = "nothing" if probe is None else f"shape {tuple(probe.shape)} dtype {probe.dtype}"
        raise ArchiveError(f"{where}: weights do not match the configuration: expected tensor {PROBE_KEY!r} "
                           f"of shape ({n}, {n}) complex for N={n}, found {found}; re-save the model")
    try:
        model = PtychoPINN(model_config, probe=probe, intensity_scale=float(s0))
    except PtychoInputError as exc:
        raise ArchiveError(f"{where}: cannot rebuild the model from the archive ({exc}); "
                           f"re-save the model") from None
    problem = state_mismatch(model.state_dict(), tensors)
    if problem is not None:
        raise ArchiveError(f"{where}: weights do not match the configuration: {problem}; the archive "
                           f"was edited or saved from a different architecture; re-save the model")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # anything the checks above did not foresee, still as one line
        first = str(exc).strip().splitlines()
        raise ArchiveError(f"{where}: weights do not match the configuration: "
                           f"{' '.join(s.strip() for s in first)[:300]}; re-save the model") from None
    model.eval()
    return LoadedModel(model=model, model_config=model_config, training=dict(training),
                       metadata=dict(archive.metadata), manifest=archive.manifest, path=where)
