"""Per-image descriptions (content prompts) of a dataset folder, and the training prompt built from them.

The paper's text condition c is a content embedding "optionally including a task prompt", and its
classifier-free guidance drops the image descriptions (supplement §2.2). A dataset folder may carry a
description of each picture, found for a pair in this order:

1. a ``.txt`` file beside the gt image, or beside the lq image, with the image's stem
   (``0001.png`` -> ``0001.txt``), as diffusers' text-to-image examples read captions;
2. a ``captions.jsonl`` in the gt's folder, or in the lq's folder, one ``{"file": "0001.png", "text": ...}``
   per line (``file_name`` is accepted for ``file``, as in Hugging Face ``metadata.jsonl`` files);
3. a ``captions.jsonl`` at the dataset root whose ``file`` is the image's path relative to the root.

A pair without one has the empty description. The built-in photos carry none (nothing is generated).
"""

from __future__ import annotations

import json
from pathlib import Path

from unildiff.errors import DataError

CAPTIONS_FILE = "captions.jsonl"


def compose_prompt(task_prompt: str, caption: str) -> str:
    """The training prompt of a pair: ``"<task prompt>, <description>"``, or whichever of them exists.

    Args:
        task_prompt: The task's prompt (e.g. ``remove rain``), possibly empty.
        caption: The pair's description, possibly empty.
    """
    return ", ".join(part for part in (task_prompt.strip(), caption.strip()) if part)


def read_captions_file(path: Path) -> dict[str, str]:
    """``file -> text`` of a ``captions.jsonl``.

    Raises:
        DataError: a line that is not a JSON object with string ``file`` (or ``file_name``) and ``text``,
        or a file listed twice; the message names the file and line.
    """
    captions: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not JSON ({error.msg})") from None
        name = record.get("file", record.get("file_name")) if isinstance(record, dict) else None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(name, str) or not isinstance(text, str):
            raise DataError(f'{path}:{number}: expected {{"file": "<image name>", "text": "<description>"}}')
        if name in captions:
            raise DataError(f"{path}:{number}: {name!r} is listed twice")
        captions[name] = " ".join(text.split())
    return captions


class CaptionFinder:
    """Finds the description of pairs under one dataset root (``captions.jsonl`` files read once).

    Args:
        root: The dataset root (``data.root``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._files: dict[Path, dict[str, str]] = {}

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._files:
            path = folder / CAPTIONS_FILE
            self._files[folder] = read_captions_file(path) if path.is_file() else {}
        return self._files[folder]

    def caption(self, gt_path: Path, lq_path: Path | None) -> str:
        """The description of the pair (gt image, lq image or ``None``), or ``""`` (module docstring)."""
        images = [gt_path] + ([lq_path] if lq_path is not None else [])
        for image in images:
            text_file = image.with_suffix(".txt")
            if text_file.is_file():
                return " ".join(text_file.read_text(encoding="utf-8").split())
        for image in images:
            listing = self._listing(image.parent)
            if image.name in listing:
                return listing[image.name]
        root_listing = self._listing(self.root)
        for image in images:
            try:
                relative = image.relative_to(self.root).as_posix()
            except ValueError:
                continue
            if relative in root_listing:
                return root_listing[relative]
        return ""
