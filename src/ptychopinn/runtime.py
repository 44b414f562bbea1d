"""CPU runtime defaults that must be in place before torch is imported.

PyTorch's OpenMP worker threads busy-wait between parallel regions by default. On the small, shared
machines our users and CI run on, spinning threads steal the cores that the next kernel (or another
process) needs, and convolutions then run up to ~10x slower. ``OMP_WAIT_POLICY=PASSIVE`` makes idle
workers sleep instead; the OpenMP runtime reads it once, when torch loads its OpenMP library, so it must
be set before the first ``import torch`` of the process.

Every entry point calls :func:`prepare_cpu_runtime` first: the ``ptychopinn`` command line, and the
``ptycho`` and ``ptycho_torch`` packages (ptychodus imports them in its own process, sometimes a
subprocess that has not loaded torch yet). This module imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

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
