"""The legacy global parameter dictionary ``cfg`` of the reference ``ptycho`` package.

It exists only in this compatibility package (the core :mod:`ptychopinn` takes explicit arguments).
ptychodus writes into it with :func:`ptycho.config.config.update_legacy_dict` and reads
``get('intensity_scale')`` after :func:`ptycho.workflows.components.load_inference_bundle` put the trained
model's values there. It starts with the legacy-key view of the default ``TrainingConfig`` (``N`` 64,
``gridsize`` 1, ...) and holds no ``'intensity_scale'`` until a model is trained or loaded, so
``get('intensity_scale')`` raises ``KeyError`` before that, as ptychodus expects.
"""

from __future__ import annotations

from typing import Any

from ptycho.config.config import TrainingConfig, dataclass_to_legacy_dict

__all__ = ["cfg", "get", "params", "set"]

cfg: dict[str, Any] = dataclass_to_legacy_dict(TrainingConfig())
"""The global legacy parameter dict (mutable; keys like ``'N'``, ``'gridsize'``, ``'object.big'``)."""


def get(key: str) -> Any:
    """``cfg[key]``; raises ``KeyError`` naming the key when it was never set."""
    try:
        return cfg[key]
    except KeyError:
        raise KeyError(f"{key!r} is not set in ptycho.params.cfg; set it with ptycho.params.set({key!r}, value), "
                       f"update_legacy_dict(cfg, config) or load a model bundle") from None


def set(key: str, value: Any) -> None:  # noqa: A001 - the reference API's name
    """Set ``cfg[key] = value``."""
    cfg[key] = value


def params() -> dict[str, Any]:
    """The global dict itself (not a copy), as the reference's ``params.params()``."""
    return cfg
