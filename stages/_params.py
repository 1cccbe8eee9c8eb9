"""Load typed config dataclasses from ``params.yaml``. Only stage scripts use this module."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from unildiff.errors import ConfigError, UniLDiffError

ConfigT = TypeVar("ConfigT")
PARAMS_FILE = Path("params.yaml")


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the whole params file as a dict."""
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    with path.open() as stream:
        params = yaml.safe_load(stream) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return params


def build(cls: type[ConfigT], values: Any, name: str) -> ConfigT:
    """Build dataclass ``cls`` from a mapping; a bad key raises ConfigError naming ``name.key``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{name} must be a mapping, got {type(values).__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown param {name}.{unknown[0]} (valid: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _convert(hints[key], value, f"{name}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{name}: {error}") from None


def _convert(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, name)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, name) if len(options) == 1 else value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item_hint = args[0] if args else Any
        items = [_convert(item_hint, item, f"{name}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{name} must be {hint.__name__}, got {value!r}")
    if hint is Path:
        return Path(value)
    return value


def load_section(section: str, cls: type[ConfigT], params: dict[str, Any] | None = None) -> ConfigT:
    """Build ``cls`` from ``params.yaml``'s ``section`` (a dotted path such as ``model.daem`` works)."""
    values: Any = params if params is not None else read_params()
    for part in section.split("."):
        if not isinstance(values, dict) or part not in values:
            raise ConfigError(f"params.yaml has no section {section!r}")
        values = values[part]
    return build(cls, values, section)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a UniLDiffError becomes one ``error:`` line and exit code 1."""
    try:
        main()
    except UniLDiffError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
