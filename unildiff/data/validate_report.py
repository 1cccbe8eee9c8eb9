"""The readable side of ``validate``: the one-line failure message and the self-contained HTML page.

The page lists the failed checks first; each names its pairs and shows LQ | GT thumbnails (inline
base64 PNGs, nearest-neighbour so noise and streaks stay visible), then every check, the PSNR/alignment
envelope of each task and the pair counts.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from unildiff.data.manifest import SPLITS

if TYPE_CHECKING:
    from unildiff.data.validate import ValidationReport

_STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #999;padding:3px 8px;vertical-align:top}"
    ".fail{background:#fdd}.ok{background:#dfd}"
    ".pair{display:inline-block;margin:4px 10px 8px 0;font-size:12px}"
    ".pair img{image-rendering:pixelated;border:1px solid #555;margin-right:2px}"
    ".failure{border-left:4px solid #c00;padding-left:10px;margin-bottom:1.2em}"
)


def failure_message(report: ValidationReport, html_hint: str = "") -> str:
    """One line naming every failed check, its offending pairs (or groups), their evidence, the params
    key of its threshold and whether to fix the data or the threshold."""
    failures = report.failures
    parts = [
        f"{outcome.reason} [{outcome.expectation}({outcome.short_arguments})]: {outcome.unexpected_count} "
        f"offending row(s), e.g. {'; '.join(outcome.examples) or 'see the report'}"
        + (f" -> {outcome.remedy}" if outcome.remedy else "")
        for outcome in failures
    ]
    hint = f" (thumbnails: {html_hint})" if html_hint else ""
    return (
        f"data validation failed, {len(failures)} of {len(report.outcomes)} checks: "
        + " | ".join(parts)
        + hint
    )


def _pair_figure(pair_id: str, thumbnails: dict[str, tuple[str | None, str | None]]) -> str:
    images = []
    for label, data in zip(("LQ", "GT"), thumbnails.get(pair_id, (None, None)), strict=True):
        images.append(
            f"<img alt='{label} {html.escape(pair_id)}' title='{label}' src='data:image/png;base64,{data}'>"
            if data else f"<span>[{label} unreadable]</span>"
        )  # fmt: skip
    return f"<div class='pair'>{''.join(images)}<br>{html.escape(pair_id)} (LQ | GT)</div>"


def report_html(report: ValidationReport) -> str:
    """A self-contained HTML page: verdict, failures with thumbnails, every check, envelopes, counts."""
    escape = html.escape
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>UniLDiff data validation</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Data validation: {'PASSED' if report.success else 'FAILED'}</h1>",
        f"<p>{report.pairs} pairs, {len(report.outcomes)} checks, {len(report.failures)} failed.</p>",
    ]
    if report.failures:
        lines.append("<h2>Failures</h2>")
    for outcome in report.failures:
        lines.append(
            f"<div class='failure'><b>{escape(outcome.reason)}</b>: "
            f"{outcome.unexpected_count} offending row(s)"
            f"<br><code>{escape(outcome.expectation)}({escape(outcome.arguments)})</code>"
            f"<br>{escape(outcome.remedy)}"
            f"<ul>{''.join(f'<li>{escape(example)}</li>' for example in outcome.examples)}</ul>"
            + "".join(_pair_figure(pair_id, report.thumbnails) for pair_id in outcome.pair_ids)
            + "</div>"
        )
    lines.append(
        "<h2>Checks</h2><table><tr><th>reason</th><th>expectation</th><th>arguments</th><th>result</th>"
        "<th>unexpected</th><th>examples</th><th>threshold and fix</th></tr>"
    )
    for outcome in report.outcomes:
        css = "ok" if outcome.success else "fail"
        lines.append(
            f"<tr class='{css}'><td>{escape(outcome.reason)}</td><td>{escape(outcome.expectation)}</td>"
            f"<td>{escape(outcome.arguments)}</td><td>{'pass' if outcome.success else 'FAIL'}</td>"
            f"<td>{outcome.unexpected_count}</td><td>{escape('; '.join(outcome.examples))}</td>"
            f"<td>{escape(outcome.remedy)}</td></tr>"
        )
    lines.append(
        "</table><h2>What each task's recipe allows</h2><table><tr><th>task</th><th>rule</th>"
        "<th>PSNR range (dB)</th><th>alignment floor</th><th>reference gts</th></tr>"
    )
    for envelope in report.envelopes:
        low = "per pair" if envelope.noise_sigma is not None else _bound(envelope.psnr_low_db)
        high = "per pair" if envelope.noise_sigma is not None else _bound(envelope.psnr_high_db)
        floor = "not checked" if envelope.alignment_floor is None else f"{envelope.alignment_floor:.3f}"
        lines.append(
            f"<tr><td>{escape(envelope.task)}</td><td>{escape(envelope.rule)}</td><td>{low} – {high}</td>"
            f"<td>{floor}</td><td>{escape(' '.join(envelope.references))}</td></tr>"
        )
    header = "".join(f"<th>{split}</th>" for split in SPLITS)
    lines.append(f"</table><h2>Pairs per task</h2><table><tr><th>task</th>{header}</tr>")
    for task, counts in report.per_task.items():
        cells = "".join(f"<td>{counts.get(split, 0)}</td>" for split in SPLITS)
        lines.append(f"<tr><td>{escape(task)}</td>{cells}</tr>")
    lines.append("</table></body></html>")
    return "\n".join(lines) + "\n"


def _bound(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
