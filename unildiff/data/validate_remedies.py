"""What to change when a ``validate`` check fails: the params key of its threshold, and data or threshold.

Every check of :mod:`unildiff.data.validate_suite` carries one :class:`Remedy`; the one-line failure
message and the HTML report quote it, so a user reads which knob sets the limit and whether the data or
the limit is what should change. docs/data.md ("Train on your own data") has the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

_CONTENT = "validate.content."


@dataclass(frozen=True)
class Remedy:
    """The params keys that set a check's threshold and what to fix when it fails.

    Attributes:
        keys: params keys (``validate.min_pairs_per_task``, ``validate.content.gt_min_channel_std``); empty
            when the rule has no threshold (a structural fact such as "the file decodes").
        fix: ``fix the data: ...`` or ``fix the threshold if ..., else the data: ...``, in words.
    """

    keys: tuple[str, ...]
    fix: str

    def text(self) -> str:
        """``threshold <keys>; <fix>`` (or ``no threshold; <fix>``), as the failure message quotes it."""
        keys = f"threshold {', '.join(self.keys)}" if self.keys else "no threshold"
        return f"{keys}; {self.fix}"


def _content(*names: str) -> tuple[str, ...]:
    return tuple(_CONTENT + name for name in names)


RERUN_PREPARE = Remedy((), "fix the data: the prepared dir was edited or is stale, rerun `dvc repro prepare`")
TASK_NOT_IN_SETTING = Remedy(
    ("data.setting",), "fix the data, or data.setting if the dataset was made for another setting"
)
SOURCE_IN_TWO_SPLITS = Remedy((), "fix the data: keep every source photo in one split")
UNREADABLE = Remedy((), "fix the data: replace the file that does not decode")
SIZE_MISMATCH = Remedy(
    (), "fix the data: the decoded size differs from the manifest, rerun `dvc repro prepare`"
)
GT_FLAT = Remedy(_content("gt_min_channel_std"), "fix the data: drop or replace the flat gt")
GT_WHITE = Remedy(
    _content("gt_max_white_fraction"),
    "fix the data (an overexposed gt), or the threshold if white backgrounds are your domain",
)
GT_BLACK = Remedy(
    _content("gt_max_black_fraction"),
    "fix the data (a crushed gt), or the threshold if black backgrounds are your domain",
)
LQ_IS_GT = Remedy((), "fix the data: the lq file is a copy of its gt")
LESS_DEGRADED = Remedy(
    _content("noise_tolerance_db", "recipe_margin_db", "real_max_psnr_db"),
    "fix the data: the lq is weaker than the task's degradation (a wrong file, task folder or noise "
    "level; real pairs: lq nearly equal to gt)",
)
MORE_DEGRADED = Remedy(
    _content("noise_tolerance_db", "recipe_margin_db"),
    "fix the data: the lq is stronger than the task's degradation (a wrong file, task folder or noise level)",
)
MISALIGNED = Remedy(
    _content("alignment_min_correlation", "alignment_margin"),
    "fix the data: lq and gt are different pictures or shifted (a mis-named pair)",
)
SAME_PICTURE = Remedy(
    _content("duplicate_max_hamming", "duplicate_max_thumbnail_difference"),
    "fix the data: keep each picture in one split and under one source (the pairs named are the copies)",
)
NOISE_DRIFT = Remedy(
    _content("distribution_margin_db", "distribution_z"),
    "fix the data: the group's noise level is not the task's",
)
RECIPE_PSNR_DRIFT = Remedy(
    _content("distribution_margin_db", "distribution_z"),
    "fix the data: the group's degradation is not distributed as the task's recipe",
)
RECIPE_BRIGHTNESS_DRIFT = Remedy(
    _content("brightness_margin", "distribution_z"),
    "fix the data: the group's lq brightness is not what the task's recipe gives",
)
REAL_PSNR_DRIFT = Remedy(
    _content("distribution_margin_db", "distribution_z"),
    "fix the data (val/test pairs degraded unlike the train pairs), or the threshold if the test set is "
    "meant to be harder or easier",
)
REAL_BRIGHTNESS_DRIFT = Remedy(
    _content("brightness_margin", "distribution_z"),
    "fix the data (val/test lq brightness unlike the train pairs'), or the threshold if that is intended",
)
GT_BRIGHTNESS_RANGE = Remedy(
    _content("gt_brightness_range"),
    "fix the threshold if your photos are this dark or bright by nature, else the data",
)
SHORT_SIDE_RANGE = Remedy(
    _content("short_side_range"),
    "fix the data (images too small to crop or too large to decode), or the threshold if intended",
)
TOO_FEW_PAIRS = Remedy(
    ("validate.min_pairs_per_task",),
    "fix the data (add pairs of that task and split; data.val_fraction sets how many training sources "
    "become val), or lower the threshold for a trial run",
)
