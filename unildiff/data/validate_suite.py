"""The Great Expectations checks of ``validate``: per pair, per (task, split) distribution, per count.

Every check pairs one GX expectation with a reason in words and the columns that show why a pair
failed, so a failure reads ``gt is flat: pair_id=train-derain-00003 (gt_std_min=0.0)``.

Distribution checks (GX column-aggregate expectations, a ``row_condition`` per group):

- per (task, split), the mean and 10/50/90 % quantiles of ``psnr_db`` and the mean of ``lq_brightness``
  against a reference: for pure noise the analytic PSNR of the same gts (paired: the mean of
  ``psnr_excess_db`` must be 0 within ``margin + z · s / sqrt(n)``, s = 4.34 · sqrt(2 / values per image)
  the dB spread of one image's PSNR); for other recipes ``distribution_reference_draws`` fresh draws of
  the recipe on the group's gts; for real val/test groups the train group of the task (real train
  groups have no reference). An unpaired bound is ``reference ± (margin + z · spread · sqrt(1/n + 1/m))``
  (``spread`` the reference std, ``n``/``m`` the sizes), 1.7x wider for quantiles (the standard error of
  a 10 % quantile of a normal sample is 1.7x that of its mean);
- per split, the 10/50/90 % quantiles of ``gt_brightness`` and ``short_side`` within
  ``gt_brightness_range`` and ``short_side_range``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from unildiff.data import validate_remedies as remedies
from unildiff.data.manifest import SPLITS
from unildiff.data.validate_config import ContentRules
from unildiff.data.validate_recipe import REAL
from unildiff.data.validate_remedies import Remedy

QUANTILES = (0.1, 0.5, 0.9)
_QUANTILE_FACTOR = 1.7


@dataclass(frozen=True)
class Check:
    """One expectation with its reason, its remedy and the evidence columns quoted for each offending pair.

    Attributes:
        reason: what is wrong, in words (``gt is flat``).
        expectation: the GX expectation.
        remedy: the params keys of its threshold and whether to fix the data or the threshold.
        evidence: columns quoted beside each offending pair id.
        group: ``task=..., split=...`` (or ``split=...``) of a distribution check, None per pair.
        condition: the pandas query selecting the group's rows.
        column: the checked column of a distribution check (its most extreme pairs are shown).
    """

    reason: str
    expectation: Any
    remedy: Remedy
    evidence: tuple[str, ...] = ()
    group: str | None = None
    condition: str | None = None
    column: str | None = None


def pair_checks(task_names: list[str], rules: ContentRules) -> list[Check]:
    """Structure and content checks, one row per pair (see docs/data.md, "Validation")."""
    import great_expectations as gx

    expect = gx.expectations

    def in_set(column: str, values: list) -> Any:
        return expect.ExpectColumnValuesToBeInSet(column=column, value_set=values)

    def between(column: str, **bounds: float) -> Any:
        return expect.ExpectColumnValuesToBeBetween(column=column, **bounds)

    def equal(column_a: str, column_b: str) -> Any:
        return expect.ExpectColumnPairValuesToBeEqual(column_A=column_a, column_B=column_b)

    def at_least(column_a: str, column_b: str) -> Any:
        return expect.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=column_a, column_B=column_b, or_equal=True, ignore_row_if="either_value_is_missing"
        )

    checks = [
        Check(
            "pair id is not unique",
            expect.ExpectColumnValuesToBeUnique(column="pair_id"),
            remedies.RERUN_PREPARE,
        ),
        Check(
            "split is not one of " + "/".join(SPLITS),
            in_set("split", list(SPLITS)),
            remedies.RERUN_PREPARE,
            ("split",),
        ),
        Check(
            "task is not in the setting", in_set("task", task_names), remedies.TASK_NOT_IN_SETTING, ("task",)
        ),
        Check(
            "prompt is missing", expect.ExpectColumnValuesToNotBeNull(column="prompt"), remedies.RERUN_PREPARE
        ),
        Check(
            "source photo is in more than one split",
            in_set("source_in_both_splits", [False]),
            remedies.SOURCE_IN_TWO_SPLITS,
            ("source_id",),
        ),
    ]
    for side in ("lq", "gt"):
        checks += [
            Check(
                f"{side} cannot be decoded",
                in_set(f"{side}_readable", [True]),
                remedies.UNREADABLE,
                (f"{side}_path",),
            ),
            Check(
                f"{side} height differs from the manifest",
                equal("height", f"{side}_height"),
                remedies.SIZE_MISMATCH,
                ("height", f"{side}_height"),
            ),
            Check(
                f"{side} width differs from the manifest",
                equal("width", f"{side}_width"),
                remedies.SIZE_MISMATCH,
                ("width", f"{side}_width"),
            ),
        ]
    checks += [
        Check(
            "degradations column is not the task's recipe",
            in_set("recipe_matches", [True]),
            remedies.RERUN_PREPARE,
            ("task", "degradations"),
        ),
        Check(
            "gt is flat",
            between("gt_std_min", min_value=rules.gt_min_channel_std),
            remedies.GT_FLAT,
            ("gt_std_min",),
        ),
        Check(
            "gt is blown out (white)",
            between("gt_white_fraction", max_value=rules.gt_max_white_fraction),
            remedies.GT_WHITE,
            ("gt_white_fraction",),
        ),
        Check(
            "gt is crushed (black)",
            between("gt_black_fraction", max_value=rules.gt_max_black_fraction),
            remedies.GT_BLACK,
            ("gt_black_fraction",),
        ),
        Check("lq is identical to gt", in_set("lq_identical", [False]), remedies.LQ_IS_GT),
        Check(
            "lq is less degraded than its recipe allows",
            at_least("psnr_high_db", "psnr_db"),
            remedies.LESS_DEGRADED,
            ("psnr_db", "psnr_high_db", "psnr_rule"),
        ),
        Check(
            "lq is more degraded than its recipe allows",
            at_least("psnr_db", "psnr_low_db"),
            remedies.MORE_DEGRADED,
            ("psnr_db", "psnr_low_db", "psnr_rule"),
        ),
        Check(
            "lq does not line up with its gt (mis-paired?)",
            at_least("alignment", "alignment_floor"),
            remedies.MISALIGNED,
            ("alignment", "alignment_floor"),
        ),
        Check(
            "gt is the same picture as a gt of another split (leakage)",
            expect.ExpectColumnValuesToBeNull(column="gt_leak"),
            remedies.SAME_PICTURE,
            ("gt_leak",),
        ),
        Check(
            "gt is the same picture as a gt of another source",
            expect.ExpectColumnValuesToBeNull(column="gt_duplicate"),
            remedies.SAME_PICTURE,
            ("gt_duplicate",),
        ),
    ]
    return checks


def _finite(values: pd.Series) -> np.ndarray:
    array = values.to_numpy(dtype=np.float64)
    return array[np.isfinite(array)]


def _spread(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _around(values: np.ndarray, width: float) -> list[list[float]]:
    """``[q - width, q + width]`` for each of the 10/50/90 % quantiles of ``values``."""
    return [[round(float(q) - width, 4), round(float(q) + width, 4)] for q in np.quantile(values, QUANTILES)]


Selector = tuple[str, Any]  # (pandas query, the same condition as a GX row condition)


def _selector(**equalities: str) -> Selector:
    """Rows whose columns equal the given values, as a pandas query and as a GX row condition."""
    from great_expectations.expectations.row_conditions import Column

    query = " and ".join(f'{name} == "{value}"' for name, value in equalities.items())
    conditions = [Column(name) == value for name, value in equalities.items()]
    condition = conditions[0]
    for other in conditions[1:]:
        condition = condition & other
    return query, condition


def _mean(
    reason: str, column: str, low: float, high: float, remedy: Remedy, label: str, selector: Selector
) -> Check:
    import great_expectations as gx

    expectation = gx.expectations.ExpectColumnMeanToBeBetween(
        column=column, min_value=round(low, 4), max_value=round(high, 4), row_condition=selector[1]
    )
    return Check(reason, expectation, remedy, (column,), label, selector[0], column)


def _quantiles(
    reason: str, column: str, ranges: list[list[float]], remedy: Remedy, label: str, selector: Selector
) -> Check:
    import great_expectations as gx

    # allow_relative_error="linear": pandas interpolates linearly, as numpy.quantile does for the reference
    expectation = gx.expectations.ExpectColumnQuantileValuesToBeBetween(
        column=column, quantile_ranges={"quantiles": list(QUANTILES), "value_ranges": ranges},
        allow_relative_error="linear", row_condition=selector[1],
    )  # fmt: skip
    return Check(reason, expectation, remedy, (column,), label, selector[0], column)


def _against(
    column: str, observed: int, reference: np.ndarray, margin: float, source: str, remedy: Remedy,
    group: tuple[str, Selector], rules: ContentRules, with_quantiles: bool = True,
) -> list[Check]:  # fmt: skip
    """Mean (and quantiles) of ``column`` within the bounds of an independent reference sample.

    Args:
        column: the checked column.
        observed: how many finite values the group has.
        reference: the reference sample.
        margin: added to every bound (in the column's unit).
        source: the reference, in words ("its recipe", "the train split").
        remedy: the keys of the bounds and what to fix.
        group: the group's label and selector.
        rules: the thresholds.
        with_quantiles: also check the 10/50/90 % quantiles.
    """
    if observed == 0 or len(reference) == 0:
        return []
    scale = rules.distribution_z * _spread(reference) * math.sqrt(1.0 / observed + 1.0 / len(reference))
    low, high = float(reference.mean()) - margin - scale, float(reference.mean()) + margin + scale
    checks = [_mean(f"mean {column} drifted from {source}", column, low, high, remedy, *group)]
    if with_quantiles:
        ranges = _around(reference, margin + _QUANTILE_FACTOR * scale)
        reason = f"{column} quantiles drifted from {source}"
        checks.append(_quantiles(reason, column, ranges, remedy, *group))
    return checks


def _noise_checks(group: pd.DataFrame, rules: ContentRules, label: str, selector: Selector) -> list[Check]:
    """Pure noise: PSNR paired with its analytic value on the same gt (only the noise sample scatters)."""
    expected = _finite(group["noise_expected_db"])
    if len(expected) == 0:
        return []
    values = 3 * int((group["height"] * group["width"]).min())
    residual = 10.0 / math.log(10.0) * math.sqrt(2.0 / max(values, 1))  # dB std of one image's PSNR
    width = rules.distribution_margin_db + rules.distribution_z * residual / math.sqrt(len(expected))
    reason = "mean psnr_db drifted from its recipe (psnr_excess_db = psnr_db - analytic PSNR)"
    ranges = _around(expected, rules.distribution_margin_db + rules.distribution_z * residual)
    return [
        _mean(reason, "psnr_excess_db", -width, width, remedies.NOISE_DRIFT, label, selector),
        _quantiles(
            "psnr_db quantiles drifted from its recipe",
            "psnr_db",
            ranges,
            remedies.NOISE_DRIFT,
            label,
            selector,
        ),
    ]


def distribution_checks(
    frame: pd.DataFrame, references: dict[tuple[str, str], np.ndarray], rules: ContentRules
) -> list[Check]:
    """Column-aggregate checks per (task, split) and per split (see the module docstring).

    Args:
        frame: the statistics table.
        references: ``(task, split) -> (draws, 2)`` PSNR and lq brightness of fresh recipe draws.
        rules: the thresholds.
    """
    checks: list[Check] = []
    psnr_margin, brightness_margin = rules.distribution_margin_db, rules.brightness_margin
    for (task, split), members in frame.groupby(["task", "split"], sort=False):
        group = (f"task={task}, split={split}", _selector(task=str(task), split=str(split)))
        psnr, brightness = len(_finite(members["psnr_db"])), len(_finite(members["lq_brightness"]))
        if bool(members["noise_expected_db"].notna().any()):
            checks += _noise_checks(members, rules, *group)
        elif (task, split) in references:
            draws = references[(task, split)]
            recipe = "its recipe"
            checks += _against(
                "psnr_db", psnr, draws[:, 0], psnr_margin, recipe, remedies.RECIPE_PSNR_DRIFT, group, rules
            )
            checks += _against(
                "lq_brightness", brightness, draws[:, 1], brightness_margin, recipe,
                remedies.RECIPE_BRIGHTNESS_DRIFT, group, rules, False,
            )  # fmt: skip
        elif bool((members["degradations"] == REAL).all()) and split != "train":
            train = frame[(frame["task"] == task) & (frame["split"] == "train")]
            source = "the train split"
            checks += _against(
                "psnr_db",
                psnr,
                _finite(train["psnr_db"]),
                psnr_margin,
                source,
                remedies.REAL_PSNR_DRIFT,
                group,
                rules,
            )
            reference = _finite(train["lq_brightness"])
            checks += _against(
                "lq_brightness", brightness, reference, brightness_margin, source,
                remedies.REAL_BRIGHTNESS_DRIFT, group, rules, False,
            )  # fmt: skip
    for split in dict.fromkeys(frame["split"]):
        label, selector = f"split={split}", _selector(split=str(split))
        for column, (low, high), remedy in (
            ("gt_brightness", rules.gt_brightness_range, remedies.GT_BRIGHTNESS_RANGE),
            ("short_side", rules.short_side_range, remedies.SHORT_SIDE_RANGE),
        ):
            reason = f"{column} quantiles outside [{low:g}, {high:g}]"
            ranges = [[low, high]] * len(QUANTILES)
            checks.append(_quantiles(reason, column, ranges, remedy, label, selector))
    return checks
