"""Registry of generator networks, looked up by the name in ``ModelConfig.generator``.

A generator is an ``nn.Module`` built from a :class:`~ptychopinn.config.ModelConfig` whose
``forward(x)`` maps normalised diffraction amplitudes ``x`` ``[B, C, N, N]`` float32 to complex
object patches ``[B, C, N, N]`` complex64 (C = gridsize**2, N = config.N). Every generator trains
through the same physics (:class:`ptychopinn.models.pinn.PtychoPINN`).

The table below is filled once, when the module defining a generator is imported
(``ptychopinn.models`` imports the built-in ``cnn``); it is a constant lookup table, not runtime
state that changes while the program runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError

GeneratorFactory = Callable[[ModelConfig], nn.Module]
F = TypeVar("F", bound=GeneratorFactory)

_GENERATORS: dict[str, GeneratorFactory] = {}


def _identity(obj: object) -> str:
    # Module and qualified name rather than object identity, so that re-importing a module
    # (importlib.reload, test collection) re-registers the same generator without an error.
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def register_generator(name: str) -> Callable[[F], F]:
    """Decorator registering a generator class or factory ``(config: ModelConfig) -> nn.Module``.

    Registering a *different* object under a name that is already taken raises ``ValueError``
    (a programming error, not a user input error).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"generator name must be a non-empty string, got {name!r}")

    def decorate(factory: F) -> F:
        existing = _GENERATORS.get(name)
        if existing is not None and _identity(existing) != _identity(factory):
            raise ValueError(f"generator name {name!r} is already registered by {_identity(existing)}")
        _GENERATORS[name] = factory
        return factory

    return decorate


def available_generators() -> list[str]:
    """Sorted names of the registered generators (always includes ``'cnn'``)."""
    return sorted(_GENERATORS)


def build_generator(name: str, config: ModelConfig) -> nn.Module:
    """Build the generator registered as ``name`` for ``config``.

    Unknown names raise :class:`ConfigError` listing the registered names.
    """
    factory = _GENERATORS.get(name)
    if factory is None:
        raise ConfigError(f"config field 'generator': expected one of {available_generators()}, got {name!r}; "
                          "pick a registered generator name")
    return factory(config)
