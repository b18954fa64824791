"""The report's "Forecast record" section (`scalelab grow`): each grown rung's prediction and
interval, recorded before it trained, against what it measured, and the running coverage of
the intervals (of the rungs measured so far, how many landed inside theirs).

`forecast_section(summary)` reads summary.json's `forecasts` and returns trusted HTML (every
value formatted here, every string escaped), or None for a study that grew no rung.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scalelab.report.html import esc as _e
from scalelab.values import fmt_count


def inside(f: Mapping[str, Any]) -> bool | None:
    """Whether a forecast's measured value lies in its interval; None until measured."""
    m = f.get("measured")
    return None if m is None else bool(f["lo"] <= m <= f["hi"])


def coverage(forecasts: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(inside, measured) over the forecasts."""
    hits = [inside(f) for f in forecasts]
    return sum(h is True for h in hits), sum(h is not None for h in hits)


def _row(f: Mapping[str, Any], running: tuple[int, int]) -> str:
    m, hit = f.get("measured"), inside(f)
    measured = _e(f.get("outcome") or "not yet") if m is None else f"{m:.4f}"
    error = "" if m is None else f"{100 * (m / f['predicted'] - 1):+.2f}%"
    mark = "" if hit is None else ("inside" if hit else "<b>outside</b>")
    cov = f"{running[0]}/{running[1]}" if running[1] else ""
    target = (f.get("detail") or {}).get("target_before") or {}
    before = ""
    if target.get("lo") is not None:
        before = f"{target['point']:.4f} [{target['lo']:.4f}, {target['hi']:.4f}]"
    return (f"<tr><td>{int(f['step'])}</td><td>{int(f['rung'])}</td>"
            f"<td>{_e(fmt_count(f['n']))}</td><td>{f['predicted']:.4f}</td>"
            f"<td>[{f['lo']:.4f}, {f['hi']:.4f}]</td><td>{measured}</td><td>{error}</td>"
            f"<td>{mark}</td><td>{cov}</td><td>{before}</td></tr>")


def forecast_section(summary: Mapping[str, Any]) -> str | None:
    forecasts = sorted(summary.get("forecasts") or [], key=lambda f: (f["step"], f["rung"]))
    if not forecasts:
        return None
    rows, done = [], []
    for f in forecasts:
        done.append(f)
        rows.append(_row(f, coverage(done)))
    hits, measured = coverage(forecasts)
    level = forecasts[0].get("level") or 0.95
    targets = ", ".join(sorted({fmt_count(f["target"]) for f in forecasts}))
    lead = (f"<p>Each rung <code>scalelab grow</code> added toward N = {_e(targets)}, with the "
            f"law's prediction for it and the {100 * level:g}% interval of one run there (the "
            "law's bootstrap interval widened by one run's seed noise), recorded in study.db "
            "before the rung trained, against what it measured. "
            f"<b>{hits} of {measured}</b> measured losses fell inside their intervals. "
            "The last column is the law's prediction at the target (with its interval) when "
            "the step was chosen.</p>")
    head = ("<tr><th>step</th><th>rung</th><th>N</th><th>forecast</th><th>interval</th>"
            "<th>measured</th><th>error</th><th></th><th>coverage so far</th>"
            "<th>target before</th></tr>")
    return f"{lead}<table>{head}{''.join(rows)}</table>"
