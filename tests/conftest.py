"""Shared pytest set-up: deterministic CPU threads, skips for GPU / TensorRT tests, the smoke pipeline."""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from pathlib import Path

import pytest
import torch

from tests.smoke_repo import make_smoke_repo, run

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


SMOKE_BUILD_MODULE = "test_dvc_pipeline.py"
"""The module whose tests build the session's smoke run (:func:`smoke_pipeline`) and read it."""
SMOKE_MODULES = frozenset(
    {SMOKE_BUILD_MODULE, "test_dvc_exp_run.py", "test_dvc_exp_sdxl.py", "test_demo_browser.py"}
)
"""The test modules that read the smoke run; the ones other than the build module run last."""
#: Modules whose tests share one expensive module fixture: each is one scheduling unit, so a single
#: worker builds the fixture (the reduced-width SDXL export takes minutes; two workers built it twice).
SHARED_FIXTURE_MODULES = frozenset({"test_export_sdxl.py"})
LATE_SCOPE = "after_smoke::"
"""Scheduling units that start from the smoke run: handed out last, one at a time to an idle worker."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With pytest-xdist's default ``--dist load``: the smoke build first, the tests that need it last.

    - The smoke build module is one unit, the largest, so xdist's scope scheduler hands it out first:
      one worker runs ``dvc repro`` (many minutes) while the other takes the ordinary tests, one unit each.
    - Each test that starts from the smoke run (``dvc exp run`` on a copy) is its own unit, collected
      last (:func:`pytest_collection_modifyitems`). A worker gets one only when it is down to its last test,
      so the slow ones are shared between the workers instead of queued behind a worker that waits for
      the smoke run. Both workers read the same run: :func:`smoke_pipeline` builds it once per session.

    xdist's own ``--dist loadgroup`` cannot do this under pytest 9 (it renames node ids through an
    attribute pytest no longer reads), so the grouping is done here, by module name.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SmokeAwareScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            if module == SMOKE_BUILD_MODULE:
                return "smoke_pipeline"
            if module in SHARED_FIXTURE_MODULES:
                return module
            return LATE_SCOPE + nodeid if module in SMOKE_MODULES else nodeid

        def _reschedule(self, node) -> None:
            late_next = bool(self.workqueue) and next(iter(self.workqueue)).startswith(LATE_SCOPE)
            # A worker keeps its last test until it knows the next one (fixture teardown), so "idle"
            # is one pending test; waiting for none would hang the session.
            if late_next and not node.shutting_down and self._pending_of(self.assigned_work[node]) > 1:
                return
            super()._reschedule(node)

    return SmokeAwareScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the tests that start from the smoke run last; skip ``gpu`` / ``tensorrt`` tests where absent.

    A test that reads :func:`smoke_pipeline` outside :data:`SMOKE_MODULES` is refused: it would wait for
    the smoke run wherever the scheduler placed it.
    """
    for item in items:
        if "smoke_pipeline" in getattr(item, "fixturenames", ()) and item.path.name not in SMOKE_MODULES:
            raise pytest.UsageError(f"{item.nodeid} uses smoke_pipeline: add its module to SMOKE_MODULES")
    late = [item for item in items if item.path.name in SMOKE_MODULES - {SMOKE_BUILD_MODULE}]
    items[:] = [item for item in items if item not in late] + late
    has_cuda = torch.cuda.is_available()
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            reason = "needs a CUDA device; torch.cuda.is_available() is False"
            item.add_marker(pytest.mark.skip(reason=reason))
        if "tensorrt" in item.keywords and not (has_tensorrt and has_cuda):
            reason = "TensorRT is not installed" if not has_tensorrt else "TensorRT needs a CUDA device"
            item.add_marker(pytest.mark.skip(reason=reason))


SMOKE_BUILD_TIMEOUT_S = 3600
"""How long a worker waits for another worker's smoke run before it gives up with an error."""


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository on which ``dvc repro`` ran every stage with the smoke params, committed.

    One run serves the whole session (each stage is a fresh Python process; on a 2-core CI machine the
    imports alone cost tens of seconds per stage), across xdist workers too: the first worker to ask
    builds it under a file lock, the other waits and reads the same folder. A marker beside the folder
    names the session (xdist's test-run id) that built it; a failed build is marked too, so the waiting
    worker fails at once instead of building again. Tests only read this folder; those that change a repo
    work on :func:`copy_pipeline` copies. With ``UNILDIFF_SMOKE_DIR`` set (as ``.ci/run`` does) the run
    is kept there, so the metric gate can read its ``reports/metrics.json`` afterwards.
    """
    from filelock import FileLock

    kept = os.environ.get("UNILDIFF_SMOKE_DIR")
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's temporary root, common to its workers
    repo = Path(kept).resolve() if kept else shared / "smoke" / "repo"
    repo.parent.mkdir(parents=True, exist_ok=True)
    session = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
    marker = repo.parent / f"{repo.name}.built"
    with FileLock(str(repo.parent / f"{repo.name}.lock"), timeout=SMOKE_BUILD_TIMEOUT_S):
        state = marker.read_text() if marker.is_file() else ""
        if state == f"failed {session}":
            pytest.fail("the smoke pipeline failed on another worker: see its error", pytrace=False)
        if state != f"built {session}":
            marker.unlink(missing_ok=True)
            try:
                _build_smoke_pipeline(repo)
            except BaseException:
                marker.write_text(f"failed {session}")
                raise
            marker.write_text(f"built {session}")
    return repo


def _build_smoke_pipeline(repo: Path) -> None:
    if repo.exists():
        shutil.rmtree(repo)
    make_smoke_repo(repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "smoke baseline"], repo)


def copy_pipeline(source: Path, destination: Path) -> Path:
    """A full copy of a smoke repo (workspace, git history and DVC cache) that tests may change."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        # DVC's lock files of a command running in the shared smoke run must not travel
        return {"tmp"} if Path(folder) == source / ".dvc" else set()

    shutil.copytree(source, destination, symlinks=True, ignore=ignore)
    return destination


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny model folder (``models/unildiff`` layout, tiny settings; tests/model_folder.py).

    Tests only read it; one that changes a folder saves its own.
    """
    from tests.model_folder import save_tiny_folder

    return save_tiny_folder(tmp_path_factory.mktemp("model") / "unildiff")
