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


SMOKE_MODULES = frozenset({"test_dvc_pipeline.py", "test_dvc_exp_run.py", "test_dvc_exp_sdxl.py"})
"""The test modules that read the session's smoke run (:func:`smoke_pipeline`); one worker runs them all."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With pytest-xdist's default ``--dist load``: one work unit for the smoke modules, one per other test.

    The smoke ``dvc repro`` is a session fixture, i.e. one per worker; sending every test that reads it to
    one worker runs it once. xdist's own ``--dist loadgroup`` cannot do this under pytest 9 (it renames
    node ids through an attribute pytest no longer reads), so the grouping is done here, by module name.
    The scheduler hands the largest unit out first, so the smoke unit starts at once on one worker while
    the other takes the rest.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SmokeGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            return "smoke_pipeline" if module in SMOKE_MODULES else nodeid

    return SmokeGroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA and ``tensorrt`` tests without TensorRT, saying why.

    A test that reads :func:`smoke_pipeline` outside :data:`SMOKE_MODULES` is refused: under xdist it
    would start a second smoke run on another worker, in the same ``UNILDIFF_SMOKE_DIR``.
    """
    for item in items:
        if "smoke_pipeline" in getattr(item, "fixturenames", ()) and item.path.name not in SMOKE_MODULES:
            raise pytest.UsageError(f"{item.nodeid} uses smoke_pipeline: add its module to SMOKE_MODULES")
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
