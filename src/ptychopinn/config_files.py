"""Reading a training config file (JSON or YAML) into a plain dict, safely: the file is untrusted input.

The dict is validated afterwards by the config dataclasses (:class:`ptychopinn.config.RunConfig`'s sections);
this module only guards the reading: regular files only, a size cap, UTF-8, no YAML aliases, bounded nesting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptychopinn.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "load_config_file"]

MAX_CONFIG_BYTES = 1024**2
"""Largest config file read (a real one is a few kilobytes)."""
MAX_CONFIG_DEPTH = 16
"""Deepest nesting of mappings/lists accepted in a config file (real ones have 2 levels)."""


def _yaml_loader() -> type:
    """``yaml.SafeLoader`` that refuses aliases: an alias can repeat a node exponentially many times (a few
    hundred bytes of YAML become gigabytes of objects), and config files never need them."""
    import yaml

    class _NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ConfigError(f"YAML alias ('*') at line {mark.line + 1}, column {mark.column + 1}: "
                                  "expected plain values (aliases are refused: they can expand a small file "
                                  "into gigabytes); write the values out")
            return super().compose_node(parent, index)

    return _NoAliasLoader


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (not yet validated).

    The file holds a mapping with optional sections ``model``, ``training``, ``execution``,
    ``inference``. Raises :class:`ConfigError` for a missing file, anything but a regular file, more than
    :data:`MAX_CONFIG_BYTES`, text that is not UTF-8, unparsable content, YAML aliases, or nesting deeper
    than :data:`MAX_CONFIG_DEPTH`.
    """
    from ptychopinn.limits import nesting_depth, open_regular

    p = Path(path)
    try:
        with open_regular(p, "config file", ConfigError) as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}; pass an existing .json or .yaml file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}; check the path and its "
                          "permissions") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is larger than {MAX_CONFIG_BYTES} bytes; expected a small JSON or "
                          "YAML file of settings; pass the right file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start}); expected a JSON or YAML text file; save it as UTF-8") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
        else:
            data = json.loads(text)
    except ConfigError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {p} nests values too deeply to parse; expected sections of plain "
                          "settings (model/training/execution/inference); flatten it") from None
    except Exception as exc:  # noqa: BLE001 - any parser error becomes one clear message
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot parse config file {p}: {first}; fix the syntax") from None
    if nesting_depth(data, MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"config file {p} nests values more than {MAX_CONFIG_DEPTH} levels deep; expected "
                          "sections of plain settings (model/training/execution/inference); flatten it")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping at top level, got {type(data).__name__}")
    return data
