"""``python -m presets NAME [--sdxl-path DIR] [--print] [-- DVC_EXP_RUN_ARGS...]``.

Runs ``dvc exp run`` with one ``-S section.key=value`` per key of ``presets/NAME.yaml`` (and
``-S prior.sdxl_path=DIR``), after printing the command. ``--print`` only prints it. Arguments after
``--`` go to ``dvc exp run`` as they are: a name (``-n paper``), ``--queue``, or targets (``evaluate``).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from presets import exp_run_command, load_preset, preset_names
from unildiff.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, print the ``dvc exp run`` command, run it unless ``--print``; return its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    dvc_args: list[str] = []
    if "--" in arguments:
        dvc_args = arguments[arguments.index("--") + 1 :]
        arguments = arguments[: arguments.index("--")]
    parser = argparse.ArgumentParser(prog="python -m presets", description=__doc__.splitlines()[0])
    parser.add_argument("name", help=f"preset: {', '.join(preset_names())}")
    parser.add_argument("--sdxl-path", default="", help="local diffusers SDXL directory (prior.sdxl_path)")
    parser.add_argument("--print", action="store_true", help="print the dvc command and stop")
    options = parser.parse_args(arguments)
    try:
        preset = load_preset(options.name)
        extra = {}
        if preset.get("prior", {}).get("preset") == "sdxl":
            if not options.sdxl_path:
                raise ConfigError(f"preset {options.name} needs --sdxl-path (a diffusers SDXL directory)")
            extra["prior.sdxl_path"] = options.sdxl_path
        elif options.sdxl_path:
            raise ConfigError(f"preset {options.name} does not use --sdxl-path")
        command = exp_run_command(options.name, extra, dvc_args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(shlex.join(command), flush=True)
    if options.print:
        return 0
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
