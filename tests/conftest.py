"""Shared pytest set-up: deterministic CPU threads, skips for GPU / TensorRT tests, the smoke pipeline."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.smoke_repo import make_smoke_repo, run

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA and ``tensorrt`` tests without TensorRT, saying why."""
    has_cuda = torch.cuda.is_available()
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            reason = "needs a CUDA device; torch.cuda.is_available() is False"
            item.add_marker(pytest.mark.skip(reason=reason))
        if "tensorrt" in item.keywords and not (has_tensorrt and has_cuda):
            reason = "TensorRT is not installed" if not has_tensorrt else "TensorRT needs a CUDA device"
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository on which ``dvc repro`` ran every stage with the smoke params, committed.

    One run serves the whole session (each stage is a fresh Python process; on a 2-core CI machine the
    imports alone cost tens of seconds per stage). Tests that change the repo work on
    :func:`copy_pipeline` copies. With ``UNILDIFF_SMOKE_DIR`` set (as ``.ci/run`` does) the run is kept
    there, so the metric gate can read its ``reports/metrics.json`` afterwards.
    """
    kept = os.environ.get("UNILDIFF_SMOKE_DIR")
    repo = Path(kept).resolve() if kept else tmp_path_factory.mktemp("smoke") / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    make_smoke_repo(repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "smoke baseline"], repo)
    return repo


def copy_pipeline(source: Path, destination: Path) -> Path:
    """A full copy of a smoke repo (workspace, git history and DVC cache) that tests may change."""
    shutil.copytree(source, destination, symlinks=True)
    return destination
