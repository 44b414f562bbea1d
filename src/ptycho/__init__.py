"""Compatibility surface for ptychodus and users of the reference ``ptycho`` package.

Thin adapters over :mod:`ptychopinn` that keep the reference system's names: ``ptycho.config.config``
(mutable, picklable config dataclasses), ``ptycho.params.cfg`` (the legacy global dict; it lives only
in this package), ``ptycho.raw_data.RawData``, ``ptycho.loader``, ``ptycho.probe``, ``ptycho.tf_helper``,
``ptycho.model``, ``ptycho.model_manager`` and ``ptycho.workflows.components``.

Importing ``ptycho`` (or ``ptycho.config.config``) is cheap: no torch, Lightning or matplotlib, so the
ptychodus parent process never loads a GPU framework. Submodules are resolved lazily on attribute access
(PEP 562), because older ptychodus plugins call ``ptycho.probe.set_probe_guess`` and
``ptycho.tf_helper.reassemble_position`` after importing only other submodules.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ptychopinn.runtime import prepare_cpu_runtime

# Before any submodule loads torch (ptychodus may import this package in a fresh subprocess).
prepare_cpu_runtime()

__all__ = [
    "config",
    "loader",
    "model",
    "model_manager",
    "params",
    "probe",
    "raw_data",
    "tf_helper",
    "workflows",
]

_SUBMODULES = frozenset(__all__)


def __getattr__(name: str) -> ModuleType:
    # Only reached when the attribute is not set yet, i.e. the submodule was not imported so far.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)
