"""Run the checks of :mod:`unildiff.data.validate_suite` with Great Expectations and read the results.

Each check becomes one :class:`ExpectationOutcome`: its reason, the GX expectation and arguments, and
its offending rows quoted with their evidence (``pair_id=train-derain-00003 (gt_std_min=0)``); a failed
distribution check quotes its group with the observed and allowed values and lists the group's pairs
farthest from its median, so the report can show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from unildiff.data.validate_suite import Check

# arguments left out of one-line messages: long, or restated by the example (group, allowed ranges)
_LONG_ARGUMENTS = (
    "value_set",
    "quantile_ranges",
    "row_condition",
    "condition_parser",
    "ignore_row_if",
    "or_equal",
    "allow_relative_error",
)


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one check.

    Attributes:
        reason: what the check guards against, in words.
        expectation: the GX expectation type (``expect_column_values_to_be_between``).
        arguments: its arguments, ``key=value`` joined.
        success: whether it passed.
        unexpected_count: offending rows (pairs or groups).
        examples: up to ``max_examples`` offending rows with their evidence, as text.
        pair_ids: the pairs to show in the report (offending pairs, or a failed group's most extreme).
        short_arguments: ``arguments`` without the long ones, for one-line messages.
        group: ``task=..., split=...`` of a distribution check; empty for per-pair and count checks.
        remedy: ``threshold <params keys>; fix the data ...`` (:meth:`Remedy.text`): what to change.
    """

    reason: str
    expectation: str
    arguments: str
    success: bool
    unexpected_count: int
    examples: tuple[str, ...]
    pair_ids: tuple[str, ...] = ()
    short_arguments: str = ""
    group: str = ""
    remedy: str = ""


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_number(item) for item in value) + "]"
    return str(value)


def _pair_examples(
    check: Check, rows: list[dict], frame: pd.DataFrame, limit: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Up to ``limit`` offending pair ids, each with its evidence columns."""
    indexed = frame.drop_duplicates("pair_id").set_index("pair_id")
    identifiers = list(dict.fromkeys(str(row.get("pair_id")) for row in rows if isinstance(row, dict)))[
        :limit
    ]
    examples = []
    for identifier in identifiers:
        evidence = ", ".join(
            f"{column}={_number(indexed.at[identifier, column])}" for column in check.evidence
        )
        examples.append(f"pair_id={identifier}" + (f" ({evidence})" if evidence else ""))
    return tuple(examples), tuple(identifiers)


def _group_examples(
    check: Check, arguments: dict, result: dict, frame: pd.DataFrame, limit: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The failed group with its observed and allowed values, and its pairs farthest from its median."""
    ranges = arguments.get("quantile_ranges") or {}
    allowed = ranges.get("value_ranges") or [arguments.get("min_value"), arguments.get("max_value")]
    observed = result.get("observed_value")
    if isinstance(observed, dict):
        observed = observed.get("values")
    example = f"{check.group}: observed {_number(observed)}, allowed {_number(allowed)}"
    members = frame.query(check.condition) if check.condition else frame.iloc[0:0]
    values = members[check.column].astype(float) if check.column else pd.Series(dtype=float)
    distance = (values - values.median()).abs().sort_values(ascending=False)
    return (example,), tuple(str(members.at[index, "pair_id"]) for index in distance.index[:limit])


def run_checks(
    context: Any,
    name: str,
    frame: pd.DataFrame,
    checks: list[Check],
    index_columns: list[str],
    max_examples: int,
) -> list[ExpectationOutcome]:
    """Validate ``frame`` with ``checks`` as one GX suite on one pandas batch; one outcome per check."""
    import great_expectations as gx

    asset = context.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name=name)
    batch = asset.add_batch_definition_whole_dataframe(f"{name}_all").get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = context.suites.add(
        gx.ExpectationSuite(name=f"{name}_suite", expectations=[check.expectation for check in checks])
    )
    result = batch.validate(
        suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_columns}
    )
    by_id = {item.expectation_config.id: item for item in result.results}
    outcomes = []
    for check, expectation in zip(checks, suite.expectations, strict=True):
        item = by_id[expectation.id]
        arguments = {key: value for key, value in item.expectation_config.kwargs.items() if key != "batch_id"}
        details = item.result or {}
        if check.group is not None:
            examples, pair_ids = ((), ())
            if not item.success:
                examples, pair_ids = _group_examples(check, arguments, details, frame, max_examples)
        elif "pair_id" in index_columns:
            examples, pair_ids = _pair_examples(
                check, details.get("unexpected_index_list") or [], frame, max_examples
            )
        else:
            rows = details.get("unexpected_index_list") or []
            examples = tuple(
                ", ".join(
                    f"{key}={value}"
                    for key, value in row.items()
                    if key in index_columns + list(check.evidence)
                )
                for row in rows[:max_examples]
            )
            pair_ids = ()
        outcomes.append(
            ExpectationOutcome(
                reason=check.reason,
                expectation=item.expectation_config.type,
                arguments=", ".join(f"{key}={value!r}" for key, value in arguments.items()),
                short_arguments=", ".join(
                    f"{key}={value!r}" for key, value in arguments.items() if key not in _LONG_ARGUMENTS
                ),
                success=bool(item.success),
                unexpected_count=int(details.get("unexpected_count") or (0 if item.success else 1)),
                examples=examples,
                pair_ids=pair_ids,
                group=check.group or "",
                remedy=check.remedy.text(),
            )
        )
    return outcomes
