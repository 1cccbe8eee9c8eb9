"""Launch a script on 2 CPU processes with torchrun (as ``accelerate launch`` does): gloo, one thread each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def torchrun(script: Path, *args: object, processes: int = 2) -> subprocess.CompletedProcess:
    """Run ``script`` with ``args`` on ``processes`` local processes; the result, never raising."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    ]
    return subprocess.run(
        [*command, str(script), *map(str, args)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
