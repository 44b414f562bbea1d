"""Every entry point sets OMP_WAIT_POLICY=PASSIVE before torch loads, and keeps a user's own choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = ("import os, sys; {stmt}; "
         "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")


def _run(stmt: str, policy: str | None) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", PROBE.format(stmt=stmt)], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    return out[0], out[1]


@pytest.mark.parametrize("stmt", ["import ptycho", "import ptycho_torch"])
def test_package_import_sets_passive_before_torch(stmt: str) -> None:
    policy, torch_loaded = _run(stmt, None)
    assert policy == "PASSIVE"
    # Importing the entry point must not have loaded torch yet, or the setting would come too late.
    assert torch_loaded == "False"


def test_cli_main_sets_passive() -> None:
    stmt = "from ptychopinn.cli import main; main(['info', '/nonexistent/scan.npz'])"
    assert _run(stmt, None)[0] == "PASSIVE"


def test_user_choice_is_kept() -> None:
    assert _run("import ptycho_torch", "ACTIVE")[0] == "ACTIVE"


def test_report_says_when_too_late() -> None:
    import torch  # noqa: F401  (loaded in this test process already)

    from ptychopinn.runtime import prepare_cpu_runtime

    assert prepare_cpu_runtime() is False


def test_resolve_device_maps_accelerator_names() -> None:
    import torch

    from ptychopinn.errors import ConfigError
    from ptychopinn.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == auto and resolve_device("auto") == auto
    if torch.cuda.is_available():
        assert resolve_device("gpu") == torch.device("cuda")
    else:
        for name in ("gpu", "cuda", "cuda:1"):
            with pytest.raises(ConfigError, match="needs a CUDA GPU"):
                resolve_device(name)
    with pytest.raises(ConfigError, match="expected 'auto', 'cpu'"):
        resolve_device("tpu0")
