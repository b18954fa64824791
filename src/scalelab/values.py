"""Reading numbers out of summaries, where any value may be missing, text, NaN or inf."""

from __future__ import annotations

import math
from typing import Any


def finite(v: Any) -> float | None:
    """`v` as a float when it is a finite number, else None (so tables show a dash and plots
    leave the point out). A bool is not a number here."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
