"""Flat run configs: TOML override files and ``key=value`` overrides.

Flower's run config is flat, with dotted kebab-case keys (``lora.rank``); these
helpers read the files and command-line overrides that feed it, before
:class:`common.settings.RunSettings` validates the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A run configuration that cannot be run."""


def flat_toml(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested TOML tables into Flower's dotted run-config keys."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat_toml(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's tables, as they nest."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)


def read_toml_config(path: str) -> dict[str, Any]:
    """A TOML override file (as ``flwr run --run-config file.toml`` takes) as a flat dict."""
    return flat_toml(read_toml(path))


def parse_value(text: str) -> object:
    """A command-line override value: int, float, ``true``/``false``, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``["key=value", ...]`` as a flat run config.

    Raises
    ------
    ConfigError
        For an entry without ``=``.
    """
    out: dict[str, object] = {}
    for kv in pairs:
        if "=" not in kv:
            raise ConfigError(f"override '{kv}' is not key=value")
        key, value = kv.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def describe(err: ValidationError) -> str:
    """One message naming every rejected key of a settings validation error."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown config key '{key}'")
        else:
            lines.append(f"config key '{key}' = {e.get('input')!r}: {e['msg']}".rstrip())
    return "invalid run config: " + "; ".join(lines)


def flatten(settings: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Return the flat, dotted kebab-case view of ``settings``.

    Lists become comma-separated strings, as Flower's run config holds scalars.
    """
    out: dict[str, Any] = {}
    for name, field in type(settings).model_fields.items():
        key = prefix + (field.alias or name)
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            out.update(flatten(value, key + "."))
        elif isinstance(value, tuple):
            out[key] = ",".join(value)
        else:
            out[key] = value
    return out
