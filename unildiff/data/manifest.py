"""The manifest of prepared pairs: ``data/prepared/manifest.csv``, one row per lq/gt pair."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from dataclasses import dataclass
from pathlib import Path

from unildiff.errors import DataError, MissingArtifactError

MANIFEST_NAME = "manifest.csv"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    """One prepared pair.

    Attributes:
        pair_id: unique id, also the PNG file stem.
        split: ``train``, ``val`` (settings are tuned on it) or ``test``.
        task: task name of the setting (e.g. ``denoise_25``, ``low_haze``).
        degradations: ``+``-joined degradation steps applied to gt to make lq (``real`` for real pairs).
        prompt: task prompt (e.g. ``remove rain``; composites joined with ", ").
        source_id: the source photo or file the pair comes from (splits are disjoint by it).
        height: image height in pixels (lq and gt are equal).
        width: image width in pixels.
        lq_path: degraded image, relative to the prepared dir.
        gt_path: clean image, relative to the prepared dir.
        caption: the picture's description from the dataset folder (:mod:`unildiff.data.captions`), empty
            when it has none (always for the built-in photos). The ``caption`` column is written only
            when some pair has one, so a manifest without descriptions is the same file as before.
    """

    pair_id: str
    split: str
    task: str
    degradations: str
    prompt: str
    source_id: str
    height: int
    width: int
    lq_path: str
    gt_path: str
    caption: str = ""


COLUMNS = tuple(field.name for field in dataclasses.fields(ManifestRow))
#: Columns every manifest has; ``caption`` is optional (empty when absent).
REQUIRED_COLUMNS = tuple(column for column in COLUMNS if column != "caption")
_INTEGER_COLUMNS = ("height", "width")


def manifest_text(rows: list[ManifestRow]) -> str:
    """The CSV text of ``rows`` (header + one line per row)."""
    columns = COLUMNS if any(row.caption for row in rows) else REQUIRED_COLUMNS
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = dataclasses.asdict(row)
        writer.writerow({column: record[column] for column in columns})
    return buffer.getvalue()


def read_manifest(prepared_dir: str | os.PathLike) -> list[ManifestRow]:
    """Read ``<prepared_dir>/manifest.csv``.

    Raises:
        MissingArtifactError: the manifest is absent (run the ``prepare`` stage).
        DataError: a column is missing or a size is not an integer; the message names the file and row.
    """
    path = Path(prepared_dir) / MANIFEST_NAME
    if not path.is_file():
        raise MissingArtifactError(f"manifest not found: {path} (run `dvc repro prepare`)")
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} lacks column(s) {', '.join(missing)}")
        rows = []
        for line, record in enumerate(reader, start=2):
            values = {column: record[column] for column in REQUIRED_COLUMNS}
            values["caption"] = record.get("caption") or ""
            try:
                for column in _INTEGER_COLUMNS:
                    values[column] = int(values[column])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{line}: height/width must be integers") from None
            rows.append(ManifestRow(**values))
    return rows
