"""The one reader of ``params.yaml``: YAML 1.2, as DVC writes it, into typed frozen dataclasses.

``dvc exp run -S section.key=value`` rewrites ``params.yaml`` with ruamel.yaml, a YAML 1.2 library. In
YAML 1.2 only ``true`` and ``false`` are booleans, so DVC writes the string ``"no"`` back unquoted as
``no``. A YAML 1.1 reader (PyYAML) then sees the boolean False. This module reads with ruamel.yaml's
YAML 1.2 safe loader, the same dialect DVC writes, and checks every value against the type of its
dataclass field: a bool where a str, int or float is expected is an error that names the param.

Stage scripts and the CLI call :func:`load_section` (or :func:`read_params` once, then
:func:`load_section` per section); the library only ever receives the dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from unildiff.errors import ConfigError

ConfigT = TypeVar("ConfigT")

#: The params file of the DVC pipeline, relative to the repository root (DVC's default name).
PARAMS_FILE = Path("params.yaml")


def parse_yaml(text: str, source: str | Path) -> Any:
    """Parse YAML 1.2 ``text`` (ruamel.yaml's safe loader: plain dicts, lists and scalars).

    Args:
        text: The YAML document.
        source: Where ``text`` came from, for the error message.

    Raises:
        ConfigError: ``text`` is not valid YAML (one line: the file and ruamel's first reason).
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    loader = YAML(typ="safe", pure=True)
    loader.version = (1, 2)
    try:
        return loader.load(text)
    except YAMLError as error:
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), "invalid YAML")
        raise ConfigError(f"{source} is not valid YAML: {reason}") from None


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the whole params file as a dict of sections (YAML 1.2).

    Args:
        path: The params file.

    Raises:
        ConfigError: The file is missing, is not valid YAML or does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    params = parse_yaml(path.read_text(encoding="utf-8"), path)
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(params).__name__}")
    return params


def load_section(
    section: str,
    cls: type[ConfigT],
    params: dict[str, Any] | None = None,
    path: str | Path = PARAMS_FILE,
) -> ConfigT:
    """Build ``cls`` from the params section ``section`` (a dotted path such as ``bench.onnxruntime``).

    Args:
        section: Section name; dots descend into nested mappings.
        cls: A dataclass whose fields are the section's keys.
        params: Already-read params (from :func:`read_params`); read from ``path`` when ``None``.
        path: The params file read when ``params`` is ``None``.

    Raises:
        ConfigError: The section is missing, or a key is unknown, missing or of the wrong type.
    """
    values: Any = params if params is not None else read_params(path)
    for part in section.split("."):
        if not isinstance(values, dict) or part not in values:
            raise ConfigError(f"{path} has no section {section!r}")
        values = values[part]
    return build(cls, values, section)


def build(cls: type[ConfigT], values: Any, name: str) -> ConfigT:
    """Build dataclass ``cls`` from a mapping, converting and checking each value against its field type.

    Args:
        cls: The dataclass.
        values: The mapping read from YAML.
        name: The param path of ``values`` (``train``, ``gate.rules[0]``), used in error messages.

    Raises:
        ConfigError: ``values`` is not a mapping, or a key is unknown, missing or of the wrong type.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{name} must be a mapping, got {values!r}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"unknown param {name}.{unknown[0]} (valid: {', '.join(sorted(fields))})")
    missing = [
        key
        for key, field in fields.items()
        if key not in values
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"param {name}.{missing[0]} is required")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _convert(hints[key], value, f"{name}.{key}") for key, value in values.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any, name: str) -> Any:
    """``value`` as type ``hint``; only int -> float and str -> Path are converted, the rest is checked."""
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
        arguments = [argument for argument in typing.get_args(hint) if argument is not Ellipsis]
        item_hint = arguments[0] if len(arguments) == 1 else Any
        items = [_convert(item_hint, item, f"{name}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a path (str), got {value!r}")
        return Path(value)
    if hint in (int, float, str, bool):
        return _check_scalar(hint, value, name)
    return value


def _check_scalar(hint: type, value: Any, name: str) -> Any:
    # bool is a subclass of int in Python: a YAML boolean is never accepted as a number.
    if hint is not bool and isinstance(value, bool):
        raise ConfigError(f"{name} must be {hint.__name__}, got the boolean {value!r}")
    if hint is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, hint):
        raise ConfigError(f"{name} must be {hint.__name__}, got {value!r}")
    return value
