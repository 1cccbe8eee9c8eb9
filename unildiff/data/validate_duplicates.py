"""Same-picture detection between gts: leakage across splits and duplicates across source photos.

Two gts are the same picture when their decoded pixels are identical (``gt_hash``), or when their 63-bit
perceptual hashes (``gt_phash``) differ in at most ``duplicate_max_hamming`` bits *and* their 16x16 RGB
thumbnails differ by at most ``duplicate_max_thumbnail_difference`` on average (the hash alone matches
unrelated smooth crops: two built-in sky crops of different photos are 4 bits apart).

Featureless gts (mean per-channel std below ``duplicate_min_contrast``) are not compared: two blank
crops of different photos (black backgrounds, an overcast sky) are equal without being the same picture;
the flat/blown-out/crushed gt checks judge those. Only pairs that are not meant to share content are
compared: the built-in source cuts many overlapping
crops from one photo and reuses it across tasks, so two gts of the same ``source_id`` in the same split
may be equal. The rules:

- ``gt_leak``: the ids of the pairs *in another split* whose gt is the same picture (leakage: a test or
  validation image seen in training, or the reverse);
- ``gt_duplicate``: the ids of the pairs in the same split, *from another source*, whose gt is the same
  picture (one photo filed under two sources, so the split by source cannot keep it on one side).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from unildiff.data.validate_config import ContentRules

_BLOCK = 512  # rows compared at once (bounds memory at _BLOCK x pairs hash distances)


def _candidate_pairs(phashes: np.ndarray, max_hamming: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose perceptual hashes differ in at most ``max_hamming`` bits."""
    found: list[tuple[int, int]] = []
    for start in range(0, len(phashes), _BLOCK):
        block = phashes[start : start + _BLOCK]
        distances = np.bitwise_count(block[:, None] ^ phashes[None, :])
        rows, columns = np.nonzero(distances <= max_hamming)
        found += [
            (start + row, column)
            for row, column in zip(rows.tolist(), columns.tolist(), strict=True)
            if start + row < column
        ]
    return found


def same_picture_columns(
    frame: pd.DataFrame, thumbnails: list[np.ndarray | None], rules: ContentRules
) -> tuple[list[str | None], list[str | None]]:
    """The ``gt_leak`` and ``gt_duplicate`` columns (space-joined pair ids, None when there are none).

    Args:
        frame: the statistics table (``pair_id``, ``split``, ``source_id``, ``gt_hash``, ``gt_phash``,
            ``gt_contrast``).
        thumbnails: the 16x16 RGB gt thumbnails in row order (None for unreadable gts).
        rules: the thresholds.
    """
    valid = [
        index
        for index, (value, contrast) in enumerate(zip(frame["gt_hash"], frame["gt_contrast"], strict=True))
        if value is not None and contrast >= rules.duplicate_min_contrast
    ]
    phashes = np.array([int(frame["gt_phash"].iat[index]) for index in valid], dtype=np.uint64)
    candidates = {
        (valid[first], valid[second])
        for first, second in _candidate_pairs(phashes, rules.duplicate_max_hamming)
    }
    by_hash: dict[str, list[int]] = {}
    for index in valid:
        by_hash.setdefault(frame["gt_hash"].iat[index], []).append(index)
    exact = {
        (first, second)
        for members in by_hash.values()
        for first in members
        for second in members
        if first < second
    }
    split, source, pair_id = frame["split"].tolist(), frame["source_id"].tolist(), frame["pair_id"].tolist()
    leaks: dict[int, list[str]] = {}
    duplicates: dict[int, list[str]] = {}
    for first, second in sorted(candidates | exact):
        if split[first] == split[second] and source[first] == source[second]:
            continue  # overlapping crops of one photo are expected
        if (first, second) not in exact:
            difference = float(np.abs(thumbnails[first] - thumbnails[second]).mean())
            if difference > rules.duplicate_max_thumbnail_difference:
                continue
        target = leaks if split[first] != split[second] else duplicates
        target.setdefault(first, []).append(pair_id[second])
        target.setdefault(second, []).append(pair_id[first])
    rows = range(len(frame))
    return (
        [" ".join(leaks[index]) if index in leaks else None for index in rows],
        [" ".join(duplicates[index]) if index in duplicates else None for index in rows],
    )
