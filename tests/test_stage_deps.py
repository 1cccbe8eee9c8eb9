"""Every DVC stage lists, as deps, the first-party source files its script imports (transitively).

A static AST walk from ``stages/<stage>.py`` follows every ``import`` of ``stages`` or ``unildiff`` modules
(at any depth: stages import lazily inside ``main``) and each executed package ``__init__.py`` that does
more than hold a docstring. A dep on a directory covers the files under it. Editing a file that a stage
imports must rerun that stage, so a missing dep fails here with the file and the stage named.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.smoke_repo import REPO_ROOT

FIRST_PARTY = ("stages", "unildiff")
PIPELINES = (REPO_ROOT / "dvc.yaml", REPO_ROOT / "deploy" / "dvc.yaml")
STAGE_COMMAND = re.compile(r"python -m (stages\.\w+)")


def module_file(module: str) -> Path | None:
    """The source file of first-party ``module`` (a ``.py`` file or a package ``__init__.py``), if any."""
    base = REPO_ROOT.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _is_first_party(module: str) -> bool:
    return module.split(".")[0] in FIRST_PARTY


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def direct_imports(module: str) -> set[str]:
    """First-party modules that ``module``'s source imports anywhere (module level or inside functions)."""
    path = module_file(module)
    assert path is not None, f"no source file for module {module}"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, path.name == "__init__.py")
            found.add(base)
            # `from package import module` imports a submodule; `from module import name` does not.
            found.update(
                f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}")
            )
    return {name for name in found if name and _is_first_party(name) and module_file(name)}


def _executes_code(init_file: Path) -> bool:
    """Whether a package ``__init__.py`` holds more than a docstring, ``__future__`` imports and constants."""
    body = ast.parse(init_file.read_text(encoding="utf-8")).body
    for node in body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            continue
        return True
    return False


def imported_files(entry_module: str) -> set[Path]:
    """Source files executed when ``python -m entry_module`` runs, first-party only, by a static walk."""
    seen: set[str] = set()
    pending = [entry_module]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending.extend(
            ".".join(parts[:depth]) for depth in range(1, len(parts)) if module_file(".".join(parts[:depth]))
        )
        pending.extend(direct_imports(module))
    files = set()
    for module in seen:
        path = module_file(module)
        if path is None:
            continue
        if path.name == "__init__.py" and module != entry_module and not _executes_code(path):
            continue
        files.add(path.relative_to(REPO_ROOT))
    return files


def _stages() -> list:
    found = []
    for pipeline in PIPELINES:
        if not pipeline.is_file():
            continue
        relative = pipeline.relative_to(REPO_ROOT).as_posix()
        for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
            found.append(pytest.param(relative, name, stage, id=f"{relative}:{name}"))
    return found


def _covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(dep) or Path(dep) in path.parents for dep in deps)


@pytest.mark.parametrize(("pipeline", "name", "stage"), _stages())
def test_stage_lists_every_module_it_imports(pipeline: str, name: str, stage: dict) -> None:
    match = STAGE_COMMAND.search(stage["cmd"])
    assert match, f"{pipeline}: stage {name} does not run `python -m stages.<name>`: {stage['cmd']!r}"
    missing = sorted(
        path.as_posix() for path in imported_files(match.group(1)) if not _covered(path, stage["deps"])
    )
    assert not missing, (
        f"{pipeline}: stage {name} imports these files but does not list them in deps: {missing}"
    )


def test_walk_follows_lazy_and_transitive_imports() -> None:
    files = {path.as_posix() for path in imported_files("stages.stage2")}
    # Imported inside main() by the stage, and by stage2's library modules in turn.
    assert {"stages/stage2.py", "stages/__init__.py", "unildiff/params.py"} <= files
    assert {"unildiff/training/stage2.py", "unildiff/models/decoder.py", "unildiff/utils/atomic.py"} <= files
    assert "unildiff/utils/__init__.py" not in files  # a docstring-only package __init__ runs no code


def test_a_missing_dep_is_reported() -> None:
    deps = ["stages/stage2.py", "unildiff/models"]
    assert _covered(Path("unildiff/models/daem.py"), deps)
    assert not _covered(Path("unildiff/training/stage2.py"), deps)
    assert not _covered(Path("unildiff/models_extra.py"), deps)
