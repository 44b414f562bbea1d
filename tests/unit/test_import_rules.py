"""Layering rules: the compatibility packages use only the core's public names, and the core never imports
them (they may change with the reference system; the core must not)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _imports(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, module, imported name or None)`` of every import statement in ``path``."""
    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.extend((node.lineno, node.module, alias.name) for alias in node.names)
    return out


def _files(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["ptycho", "ptycho_torch"])
def test_compat_packages_use_only_public_core_names(package: str) -> None:
    bad = []
    for path in _files(package):
        for line, module, name in _imports(path):
            if not (module == "ptychopinn" or module.startswith("ptychopinn.")):
                continue
            private_module = any(part.startswith("_") for part in module.split("."))
            private_name = name is not None and name.startswith("_")
            if private_module or private_name:
                bad.append(f"{path.relative_to(SRC)}:{line}: {module} {name or ''}".strip())
    assert not bad, "private core names used by a compatibility package:\n" + "\n".join(bad)


# The core modules the compatibility packages may use: the public API surface. Training goes through
# ptychopinn.workflows.train_model or ptychopinn.training.run (prepare_training / TrainingRun.fit), never the
# trainer, data-module or guard internals; files through the format readers, never the io helpers.
CORE_API = (
    "ptychopinn", "ptychopinn.config", "ptychopinn.config_fields", "ptychopinn.errors", "ptychopinn.runtime",
    "ptychopinn.workflows",
    "ptychopinn.cli.common", "ptychopinn.plots", "ptychopinn.refine",
    "ptychopinn.data.scan", "ptychopinn.data.grouping", "ptychopinn.data.normalize",
    "ptychopinn.physics.*", "ptychopinn.models.pinn", "ptychopinn.models.persist", "ptychopinn.inference.*",
    "ptychopinn.io.npz", "ptychopinn.io.registry", "ptychopinn.io.reconstruction", "ptychopinn.io.product_h5",
    "ptychopinn.io.units", "ptychopinn.io.probe",
    "ptychopinn.training.run", "ptychopinn.training.module",
)


def _allowed(module: str) -> bool:
    return any(module == api or api.endswith(".*") and module.startswith(api[:-1]) for api in CORE_API)


@pytest.mark.parametrize("package", ["ptycho", "ptycho_torch"])
def test_compat_packages_import_only_the_core_api(package: str) -> None:
    bad = []
    for path in _files(package):
        for line, module, name in _imports(path):
            if module.split(".")[0] != "ptychopinn":
                continue
            # `from ptychopinn import config` imports the module ptychopinn.config
            target = f"{module}.{name}" if module == "ptychopinn" and name is not None else module
            if not _allowed(target):
                bad.append(f"{path.relative_to(SRC)}:{line}: {target}")
    assert not bad, ("a compatibility package imports a core module outside the public API (CORE_API); use "
                     "the public entry point instead:\n" + "\n".join(bad))


def test_core_api_names_existing_modules() -> None:
    for api in CORE_API:
        base = Path(*api.removesuffix(".*").split("."))
        assert (SRC / base).is_dir() or (SRC / base).with_suffix(".py").is_file(), api


def test_core_never_imports_the_compatibility_packages() -> None:
    bad = [f"{path.relative_to(SRC)}:{line}: {module}"
           for path in _files("ptychopinn") for line, module, _ in _imports(path)
           if module.split(".")[0] in ("ptycho", "ptycho_torch")]
    assert not bad, "the core imports a compatibility package:\n" + "\n".join(bad)
