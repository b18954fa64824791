"""Reading numbers out of summaries, where any value may be missing, text, NaN or inf, and writing
them for people: the one set of number formatters that the report, its plots, and the CLI share.

Every formatter takes any value (None, text, NaN included) and gives a dash for what is not a
finite number, so a table never shows "nan" or crashes on an old summary. Values are rounded to
their significant digits *before* a unit is chosen, so 999,700 reads "1M", never "1e+03k".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DASH = "—"
"""What a table shows for a missing value (the CLI passes "-" to keep its tables ASCII)."""

COUNT_UNITS: tuple[tuple[float, str], ...] = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))
BYTE_UNITS: tuple[tuple[float, str], ...] = ((1e12, " TB"), (1e9, " GB"), (1e6, " MB"),
                                             (1e3, " kB"))
FLOP_UNITS: tuple[tuple[float, str], ...] = ((1e18, " EFLOP"), (1e15, " PFLOP"), (1e12, " TFLOP"),
                                             (1e9, " GFLOP"), (1e6, " MFLOP"))


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


def _round_sig(f: float, digits: int) -> float:
    """f rounded to `digits` significant digits (999.7 -> 1000.0 at 3)."""
    return float(f"{f:.{digits - 1}e}")


def _sig(f: float, digits: int = 3) -> str:
    """f to `digits` significant digits, without an exponent between 1e-4 and 1e15 (1230, 0.05,
    0.000123); trailing zeros and a trailing point dropped. Outside that range: 1.2e-05, 3e+18
    written compactly as 1.2e-5 and 3e18."""
    r = _round_sig(f, digits)
    if r == 0:
        return "0"
    if 1e-4 <= abs(r) < 1e15:
        decimals = max(digits - 1 - math.floor(math.log10(abs(r))), 0)
        text = f"{r:.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mant, exp = f"{r:.{digits - 1}e}".split("e")
    mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
    return f"{mant}e{int(exp)}"


def scaled(f: float, units: Sequence[tuple[float, str]], digits: int = 3) -> str | None:
    """f in the largest of `units` (divisor, suffix; largest first) that its rounded value reaches,
    to `digits` significant digits; None when it is below the smallest. Rounding first carries
    999.7k over to 1M; a value past 1000 of the largest unit is written with an exponent."""
    r = _round_sig(f, digits)  # picks the unit only; the digits come from f itself
    for div, unit in units:
        if abs(r) >= div:
            if abs(r) / div >= 1000:
                return _sig(f, digits)
            return _sig(f / div, digits) + unit
    return None


def fmt_sig(v: Any, digits: int = 3, dash: str = DASH) -> str:
    """A number to `digits` significant digits, without an exponent where one is not needed."""
    f = finite(v)
    return dash if f is None else _sig(f, digits)


def fmt_count(v: Any, dash: str = DASH) -> str:
    """A count (parameters, tokens, rows): 12345 -> 12.3k, 447,000 -> 447k, 999,700 -> 1M,
    1.2e9 -> 1.2B; below 1000 as is (an integer stays an integer)."""
    f = finite(v)
    if f is None:
        return dash
    return scaled(f, COUNT_UNITS) or (str(int(f)) if f == int(f) else _sig(f))


def fmt_tick(v: float, _pos: Any = None) -> str:
    """The one tick label of every plot: a count's style (0.05, 3, 250, 8k, 10k, 1M), never an
    exponent where a plain number reads; empty for what a log axis cannot show."""
    f = finite(v)
    if f is None:
        return ""
    return scaled(f, COUNT_UNITS) or _sig(f)


def fmt_spec(v: Any, spec: str, suffix: str = "", dash: str = DASH) -> str:
    """A finite number in a format spec (",d" is applied to the rounded integer), or a dash."""
    f = finite(v)
    if f is None:
        return dash
    return format(round(f), spec) + suffix if spec.endswith("d") else format(f, spec) + suffix


def fmt_num(v: Any, digits: int = 4) -> str:
    """A parameter or loss to `digits` significant digits; text and NaN/inf shown as they are
    (a table of fitted values must not hide that a fit gave nan)."""
    if isinstance(v, bool):
        return str(v)
    f = finite(v)
    if f is None:
        if v is None:
            return DASH
        try:
            return str(float(v))  # nan / inf
        except (TypeError, ValueError):
            return str(v)
    return f"{f:.{digits}g}"


def fmt_lr(v: Any) -> str:
    """A learning rate: 0.03, 6.00e-4."""
    f = finite(v)
    if f is None:
        return fmt_num(v)
    return f"{f:.3g}" if f >= 0.01 else f"{f:.2e}".replace("e-0", "e-")


def fmt_bytes(v: Any, dash: str = DASH) -> str:
    """Bytes in decimal units: 812 B, 1.5 MB, 1 GB (999.7 MB rounds up to it)."""
    f = finite(v)
    if f is None:
        return dash
    return scaled(f, BYTE_UNITS) or f"{int(f)} B"


def fmt_flops(v: Any, dash: str = DASH) -> str:
    f = finite(v)
    if f is None:
        return dash
    return scaled(f, FLOP_UNITS) or f"{_sig(f)} FLOP"


def fmt_flops_rate(v: Any) -> str:
    s = fmt_flops(v)
    return s if s == DASH else s + "/s"


def fmt_rate(v: Any, dash: str = DASH) -> str:
    """A throughput: 12.3k/s."""
    f = finite(v)
    return dash if f is None else f"{fmt_count(f)}/s"


def fmt_seconds(v: Any, dash: str = DASH) -> str:
    """A duration in the unit that reads: 850 ms, 42 s, 12 min, 3.5 h."""
    f = finite(v)
    if f is None:
        return dash
    r = _round_sig(f, 3)  # picks the unit, so 0.9997 s reads 1 s, not 1e+03 ms
    if r < 1:
        return f"{_sig(f * 1e3)} ms"
    if r < 120:
        return f"{_sig(f)} s"
    if r < 7200:
        return f"{_sig(f / 60)} min"
    return f"{_sig(f / 3600)} h"


def fmt_ms(v: Any, dash: str = DASH) -> str:
    f = finite(v)
    return dash if f is None else f"{_sig(f)} ms"


def fmt_pct(v: Any, digits: int = 2, dash: str = DASH) -> str:
    """A fraction as a percentage: 0.0123 -> 1.23%."""
    f = finite(v)
    return dash if f is None else f"{f * 100:.{digits}f}%"


def fmt_signed_pct(v: Any, dash: str = DASH) -> str:
    """A signed fraction as a percentage: +1.23%, -0.50%."""
    f = finite(v)
    return dash if f is None else f"{f * 100:+.2f}%"
