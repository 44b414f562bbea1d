"""Runtime choices made once for the whole package: CPU defaults that must be in place before torch is
imported, and the one mapping from an accelerator name to a torch device (:func:`resolve_device`).

PyTorch's OpenMP worker threads busy-wait between parallel regions by default. On the small, shared
machines our users and CI run on, spinning threads steal the cores that the next kernel (or another
process) needs, and convolutions then run up to ~10x slower. ``OMP_WAIT_POLICY=PASSIVE`` makes idle
workers sleep instead; the OpenMP runtime reads it once, when torch loads its OpenMP library, so it must
be set before the first ``import torch`` of the process.

Every entry point calls :func:`prepare_cpu_runtime` first: the ``ptychopinn`` command line, and the
``ptycho`` and ``ptycho_torch`` packages (ptychodus imports them in its own process, sometimes a
subprocess that has not loaded torch yet). This module imports nothing heavy (torch only inside
:func:`resolve_device`).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ptychopinn.errors import ConfigError

if TYPE_CHECKING:
    import torch

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
DEFAULT_WAIT_POLICY = "PASSIVE"


def prepare_cpu_runtime() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already chooses a policy.

    Returns True when the setting can still take effect (torch not imported yet in this process),
    False when torch is already loaded, in which case the OpenMP runtime keeps the policy it started
    with and only child processes see the new value.
    """
    os.environ.setdefault(WAIT_POLICY_ENV, DEFAULT_WAIT_POLICY)
    return "torch" not in sys.modules


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device of an accelerator name (config ``accelerator`` or a ``device`` argument).

    ``'auto'``/None -> ``cuda`` if available else ``cpu``; ``'gpu'`` -> ``cuda``; ``'cpu'``, ``'cuda'``,
    ``'cuda:1'``, ``'mps'`` as given; a :class:`torch.device` is returned unchanged. A CUDA name without a
    CUDA GPU, or an unknown name, is a :class:`~ptychopinn.errors.ConfigError`.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = "auto" if device is None else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "gpu":
        name = "cuda"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"accelerator {device!r} needs a CUDA GPU but none is available; "
                          f"use accelerator 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: expected 'auto', 'cpu', 'cuda', 'gpu', 'mps' or e.g. 'cuda:1', "
                          f"found {device!r}; pass one of those") from None


def uses_cuda(accelerator: str) -> bool:
    """Whether an accelerator name (``ExecutionConfig.accelerator``) runs on a CUDA GPU on this machine: 'gpu' or
    'cuda', or 'auto' where one is available (imports torch)."""
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
