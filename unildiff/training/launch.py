"""Run a stage under ``accelerate launch`` when ``train.accelerate_config`` names a config file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from unildiff.errors import ConfigError
from unildiff.training.config import TrainConfig

LAUNCHED_ENV = "UNILDIFF_ACCELERATE_LAUNCHED"


def relaunch_with_accelerate(config: TrainConfig, module: str) -> bool:
    """Re-run ``python -m <module>`` through ``accelerate launch --config_file <train.accelerate_config>``.

    Args:
        config: Shared training settings; nothing happens when ``accelerate_config`` is empty.
        module: The stage module (``stages.stage1a``).

    Returns:
        ``True`` when the stage ran in the launched processes (the caller returns), ``False`` when the
        caller should train in this process (no config, or already inside ``accelerate launch``).

    Raises:
        ConfigError: The config file does not exist.
        SystemExit: The launched run failed (with its exit code).
    """
    if not config.accelerate_config or os.environ.get(LAUNCHED_ENV) or "LOCAL_RANK" in os.environ:
        return False
    path = Path(config.accelerate_config)
    if not path.is_file():
        raise ConfigError(f"train.accelerate_config: no such file {path}")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path), "-m", module]
    completed = subprocess.run(command, env={**os.environ, LAUNCHED_ENV: "1"}, check=False)
    if completed.returncode != 0:
        raise SystemExit(completed.returncode)
    return True
