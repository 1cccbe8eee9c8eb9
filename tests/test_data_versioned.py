"""The dataset at ``data.root`` is a versioned input of ``prepare``, through the real ``dvc`` commands.

A scratch repository holds the data stages of dvc.yaml and a ``custom`` dataset tracked with
``dvc add data/raw/mine`` (docs/data.md, "Train on your own data"). Changing one image must show
``prepare`` in ``dvc status`` and rerun it and ``validate``; unchanged data reruns nothing. A
``data.root`` outside the repository is refused in one line whose ``dvc import-url`` advice works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.own_data import redegrade, write_custom_pairs

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ("prepare", "validate")
FOLDER = ["-S", "data.source=folder", "-S", "data.setting=custom", "-S", "data.root=data/raw/mine"]


def _run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(cwd))
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    completed = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    if check and completed.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
        )
    return completed


def _lock_dep(repo: Path, stage: str, path: str) -> str | None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next((dep["md5"] for dep in lock["stages"][stage]["deps"] if dep["path"] == path), None)


def _tracked_md5(repo: Path, dvc_file: str) -> str:
    return yaml.safe_load((repo / dvc_file).read_text())["outs"][0]["md5"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data stages of dvc.yaml, the default params, git + DVC, and data/raw/mine added and committed."""
    repo = tmp_path_factory.mktemp("versioned") / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stages", "unildiff", "data/raw/builtin"):
        shutil.copytree(REPO_ROOT / name, repo / name, ignore=ignore)
    for name in ("params.yaml", ".dvcignore"):
        shutil.copy2(REPO_ROOT / name, repo / name)
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    stages = {name: pipeline["stages"][name] for name in DATA_STAGES}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run(["git", "config", "user.email", "test@unildiff.invalid"], repo)
    _run(["git", "config", "user.name", "test"], repo)
    _run(["dvc", "init", "-q"], repo)
    write_custom_pairs(repo / "data/raw/mine")
    _run(["dvc", "add", "-q", "data/raw/mine"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-q", "-m", "pipeline + data/raw/mine"], repo)
    return repo


def test_a_changed_image_reruns_prepare_and_unchanged_data_nothing(repo: Path) -> None:
    assert not (repo / "dvc.lock").exists()
    output = _run(["dvc", "exp", "run", *FOLDER, "validate"], repo).stdout
    assert "Running stage 'prepare'" in output and "Running stage 'validate'" in output, output
    assert json.loads((repo / "reports/validation.json").read_text())["success"] is True
    # dvc.lock identifies the dataset: the hash of data/raw/mine, the one data/raw/mine.dvc records
    first = _lock_dep(repo, "prepare", "data/raw/mine")
    assert first is not None and first == _tracked_md5(repo, "data/raw/mine.dvc")
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-q", "-m", "trained on data/raw/mine"], repo)

    # unchanged data: nothing to do
    assert json.loads(_run(["dvc", "status", "--json"], repo).stdout or "{}") == {}
    output = _run(["dvc", "repro", "validate"], repo).stdout
    assert "Running stage" not in output, output

    # one lq image changed
    manifest = (repo / "data/prepared/manifest.csv").read_text()
    before = {path: path.read_bytes() for path in (repo / "data/prepared").rglob("*.png")}
    redegrade(repo / "data/raw/mine", "img03.png", seed=99)
    status = json.loads(_run(["dvc", "status", "--json"], repo).stdout)
    assert {"changed deps": {"data/raw/mine": "modified"}} in status["prepare"], status
    assert "validate" not in status  # its deps change only once prepare has rerun
    output = _run(["dvc", "repro", "validate"], repo).stdout
    assert "Running stage 'prepare'" in output and "Running stage 'validate'" in output, output
    after = {path: path.read_bytes() for path in (repo / "data/prepared").rglob("*.png")}
    changed = [path for path in before if before[path] != after.get(path)]
    assert len(changed) == 1 and changed[0].parent.name == "lq", changed  # that pair's lq, nothing else
    assert (repo / "data/prepared/manifest.csv").read_text() == manifest
    # the new version is recorded: in dvc.lock and in data/raw/mine.dvc (dvc repro commits it)
    second = _lock_dep(repo, "prepare", "data/raw/mine")
    assert second not in (None, first) and second == _tracked_md5(repo, "data/raw/mine.dvc")
    assert json.loads(_run(["dvc", "status", "--json"], repo).stdout or "{}") == {}


def test_a_root_outside_the_repository_is_refused_with_how_to_bring_it_in(repo: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(repo, tmp_path / "repo", symlinks=True))
    outside = tmp_path / "photos"
    write_custom_pairs(outside, count=12)
    folder = ["-S", "data.source=folder", "-S", "data.setting=custom"]
    failed = _run(["dvc", "exp", "run", *folder, "-S", f"data.root={outside}", "prepare"], copy, check=False)
    assert failed.returncode != 0
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error: data.root")]
    assert len(lines) == 1, failed.stderr
    assert f"`dvc import-url {outside} data/raw/photos`" in lines[0]
    assert "set data.root=data/raw/photos" in lines[0]
    assert not (copy / "data/prepared").exists()

    _run(["git", "checkout", "--", "params.yaml"], copy)
    _run(["dvc", "import-url", "-q", str(outside), "data/raw/photos"], copy)  # the advice, as given
    output = _run(["dvc", "exp", "run", *folder, "-S", "data.root=data/raw/photos", "prepare"], copy).stdout
    assert "Running stage 'prepare'" in output
    assert _lock_dep(copy, "prepare", "data/raw/photos") == _tracked_md5(copy, "data/raw/photos.dvc")
