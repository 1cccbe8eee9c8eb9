"""Presets: named sets of params.yaml overrides (``presets/<name>.yaml``) applied through ``dvc exp run -S``.

A preset file has the layout of ``params.yaml`` and lists only the keys it changes. It never replaces
``params.yaml``: each key becomes one ``-S section.key=value`` of ``dvc exp run``, so DVC writes every
value into ``params.yaml`` itself and tracks it as a param of the stages that read it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from unildiff.errors import ConfigError
from unildiff.params import read_params

PRESETS_DIR = Path(__file__).resolve().parent
#: Strings Hydra (which parses DVC's ``-S`` values) keeps as they are without quotes.
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
#: Unquoted words Hydra would read as something other than a string.
_HYDRA_WORDS = re.compile(r"(?i)(true|false|null|nan|inf)")
_QUOTE_OR_END = re.compile(r'(\\*)("|$)')


def preset_names() -> list[str]:
    """The presets that ship in ``presets/`` (one ``<name>.yaml`` each)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The overrides of preset ``name``, nested like ``params.yaml``.

    Raises:
        ConfigError: No ``presets/<name>.yaml`` exists, or it is not a mapping of sections.
    """
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r} (available: {', '.join(preset_names())})")
    return read_params(path)


def flatten(overrides: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``[("section.key", value), ...]`` for every leaf of ``overrides``, in file order."""
    leaves: list[tuple[str, Any]] = []
    for key, value in overrides.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            leaves.extend(flatten(value, dotted))
        else:
            leaves.append((dotted, value))
    return leaves


def render_value(value: Any) -> str:
    """``value`` as a ``-S`` value that DVC (through Hydra's override grammar) reads back as the same value.

    Raises:
        ConfigError: ``value`` is of a kind a preset cannot hold (a float that is not finite, a mapping
            inside a list).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"preset value {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and not _HYDRA_WORDS.fullmatch(value):
            return value
        # Hydra's quoted strings: a quote is escaped, and so are the backslashes before a quote or the end.
        return '"' + _QUOTE_OR_END.sub(lambda match: match[1] * 2 + ('\\"' if match[2] else ""), value) + '"'
    if isinstance(value, list):
        return "[" + ",".join(render_value(item) for item in value) + "]"
    raise ConfigError(f"preset value {value!r} must be a number, a string, a bool or a list of them")


def set_params(name: str, extra: dict[str, Any] | None = None) -> list[str]:
    """The ``section.key=value`` overrides of ``extra`` (dotted keys), then those of preset ``name``."""
    leaves = list((extra or {}).items()) + flatten(load_preset(name))
    return [f"{key}={render_value(value)}" for key, value in leaves]


def exp_run_command(
    name: str, extra: dict[str, Any] | None = None, dvc_args: list[str] | None = None
) -> list[str]:
    """``dvc exp run -S ... [dvc_args]``: the command that runs the pipeline with preset ``name``."""
    command = ["dvc", "exp", "run"]
    for assignment in set_params(name, extra):
        command += ["-S", assignment]
    return command + list(dvc_args or [])
