"""Suite-wide settings. Under pytest-xdist (``make test`` runs two workers on two cores) each worker
uses one thread: two single-threaded workers finish this suite's many small torch workloads sooner
than one worker whose two threads mostly wait on each other."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # also inherited by the subprocesses tests start
    import torch

    torch.set_num_threads(1)
