"""Reference-named access to the model parameters: ``ptycho.model.params()``.

Older ptychodus plugins read the trained intensity scale as ``ptycho.model.params()['intensity_scale']``
after loading a model; :func:`ptycho.workflows.components.load_inference_bundle` and training put it into
the global dict returned here. The network itself lives in :mod:`ptychopinn.models.pinn`.
"""

from __future__ import annotations

from typing import Any

from ptycho import params as _params

__all__ = ["params"]


def params() -> dict[str, Any]:
    """The global legacy parameter dict ``ptycho.params.cfg`` (the object itself, not a copy)."""
    return _params.cfg
