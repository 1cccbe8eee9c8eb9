"""The ``sdxl`` preset of the ``prior`` stage: check a local SDXL directory and link it in; train nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from unildiff.utils.atomic import atomic_dir


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def link_sdxl_prior(source: str | Path, destination: str | Path) -> Path:
    """Check ``source`` with ``load_prior`` (names a missing component); hard-link it to ``destination``.

    Files are hard-linked where the filesystem allows (no copy of the weights) and copied otherwise;
    ``destination`` is replaced atomically.
    """
    from unildiff.models.prior import load_prior

    load_prior(source)
    with atomic_dir(destination) as temporary:
        shutil.copytree(Path(source), temporary, copy_function=_link_or_copy, dirs_exist_ok=True)
    return Path(destination)
