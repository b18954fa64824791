"""Why a study has no fitted law, in one line: what `scalelab show`, the end of `scalelab run`
and the report say instead of a law.

The reasons are the study's own fit's (`scalelab.laws.engine.fit_ladder`): a ladder in N alone
needs `MIN_POINTS_FOR_FIT` rungs done with a positive validation loss (diverged rungs give none);
a two-axis ladder's fit says itself what it lacks (`fit_two_axis` raises it as a UserError,
which the study keeps quiet). A ladder whose rungs are not all finished has no law yet: the law is
fitted when the last rung ends.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from scalelab.errors import UserError
from scalelab.laws.engine import MIN_POINTS_FOR_FIT
from scalelab.records import FINISHED
from scalelab.values import finite


def missing_law(summary: dict[str, Any]) -> str | None:
    """Why `summary` (summary.json's content) holds no fit, or None when it holds one."""
    if summary.get("fits"):
        return None
    rows = summary.get("rungs") or []
    status = Counter(r["status"] for r in rows)
    done = sum(status[s] for s in FINISHED)
    if done < len(rows):
        return (f"No law fitted yet: {done} of {len(rows)} rungs finished; the law is fitted "
                "when every rung has (run the same `scalelab run` command to resume)")
    why = _two_axis_reason(rows) if _two_axis(summary) else _short_ladder(rows, status)
    if why is None:  # enough rungs, but the run stopped before its fit (interrupted)
        return "No law fitted yet: run the same `scalelab run` command to fit it"
    return f"No law fitted: {why}"


def _two_axis(summary: dict[str, Any]) -> bool:
    from scalelab.spec import parse_spec

    spec = (summary.get("study") or {}).get("spec")
    return spec is not None and parse_spec(spec, "the study's spec").ladder.two_axis


def _short_ladder(rows: list[dict], status: Counter) -> str | None:
    """The N-only fit's rule: `fit_ladder` fits rungs done with a positive finite loss."""
    usable = sum(r["status"] == "done" and (finite(r.get("val_loss")) or 0) > 0 for r in rows)
    if usable >= MIN_POINTS_FOR_FIT:
        return None
    diverged = f" ({status['diverged']} diverged)" if status["diverged"] else ""
    return (f"{usable} of {len(rows)} rungs finished with a validation loss{diverged}; a law "
            f"L(N) = E + A·N^-alpha needs {MIN_POINTS_FOR_FIT} or more")


def _two_axis_reason(rows: list[dict]) -> str | None:
    """The two-axis fit's own words: it checks its rungs before fitting anything, so asking it
    again costs no fit when the answer is a reason."""
    from scalelab.laws.two_axis import fit_two_axis

    try:
        fit_two_axis(rows, bootstrap=0)
    except UserError as err:
        return str(err)
    return None
