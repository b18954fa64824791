"""Flagged latencies reach the answer and the report: `recommend` names a flagged candidate, the
report marks the number and shows the base medians its speedups divide (one computation)."""

from __future__ import annotations

import re
from html import unescape

import pytest

from scalelab import latency
from scalelab.latency import UNSTABLE_MARK
from scalelab.report.compression import compression_section
from scalelab.select import recommend


def _rung(i: int, loss: float, lat: float, nbytes: int, unstable: tuple[str, ...] = ()) -> dict:
    return {"rung": i, "status": "done", "val_loss": loss, "checkpoint_bytes": nbytes,
            "n_nonembed": 1000 * (i + 1), "latency_ms": {"1": lat, "32": 10 * lat},
            "latency_unstable": list(unstable)}


def _variant(name: str, loss: float, lat: float, nbytes: int,
             unstable: tuple[str, ...] = ()) -> dict:
    return {"name": name, "of_rung": 1, "method": "int8", "n_params": 1, "n_nonembed": 2000,
            "bytes": nbytes, "val_loss": loss, "latency_ms": {"1": lat, "32": 10 * lat},
            "latency_unstable": list(unstable)}


SUMMARY = {
    "rungs": [_rung(0, 3.0, 1.0, 100), _rung(1, 2.0, 4.0, 1600, unstable=("1",))],
    "variants": [_variant("r1-int8", 2.05, 1.5, 450, unstable=("1", "32")),
                 _variant("r1-fp16", 2.5, 2.0, 800)],
}


def test_recommend_names_a_flagged_choice():
    r = recommend(SUMMARY, max_latency_ms=2.0)
    assert r["choice"]["name"] == "r1-int8" and r["choice"]["latency_flagged"] is True
    assert r["unstable"] == ["r1", "r1-int8"]
    assert "r1-int8's latency at batch 1 is flagged UNSTABLE" in r["reason"]
    assert "flagged unstable for: r1" in r["reason"]


def test_recommend_steady_choice_lists_the_flagged_others():
    r = recommend(SUMMARY, max_latency_ms=1.2)
    assert r["choice"]["name"] == "r0" and r["choice"]["latency_flagged"] is False
    assert "r0's latency" not in r["reason"]
    assert "flagged unstable for: r1, r1-int8" in r["reason"]


def test_recommend_flags_the_closest_too_and_reads_store_rows():
    # A store row's latency entries carry the flag themselves (no `latency_unstable` list).
    row = _variant("r1-int8", 2.05, 1.5, 450)
    row.pop("latency_unstable")
    row["latency_ms"] = {"1": {"median": 1.5, "iqr": 2.0, "unstable": True},
                         "32": {"median": 15.0, "iqr": 0.1, "unstable": False}}
    summary = {"rungs": [_rung(0, 3.5, 1.0, 100)], "variants": [row]}
    r = recommend(summary, max_latency_ms=1.0, max_loss=2.1)
    assert r["choice"] is None and r["closest"]["name"] == "r1-int8"
    assert r["unstable"] == ["r1-int8"] and "flagged UNSTABLE" in r["reason"]
    assert recommend(summary, batch=32)["unstable"] == []


def _table(html: str) -> tuple[list[str], dict[str, list[str]]]:
    """The variants table of the section: its headings and each row's cells by variant name."""
    table = re.search(r'<table class="variants">(.*?)</table>', html, re.S).group(1)
    heads = [unescape(h) for h in re.findall(r"<th>(.*?)</th>", table)]
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", table.split("</thead>")[1], re.S):
        cells = [unescape(c) for c in re.findall(r"<td>(.*?)</td>", tr, re.S)]
        rows[cells[0]] = cells
    return heads, rows


def _number(cell: str) -> float:
    return float(cell.replace(UNSTABLE_MARK, "").rstrip("×"))


def _check_speedups_match_shown_medians(html: str, batch: str) -> int:
    """Every speedup cell equals the ratio of the base and variant medians shown in its row (to
    the rounding of 3 significant digits); returns how many were checked."""
    heads, rows = _table(html)
    base_col = heads.index(f"base rung lat b1 / b{batch} ms")
    checked = 0
    for cells in rows.values():
        if cells[heads.index("method")] == "sparse":
            continue
        bases = [_number(c) for c in cells[base_col].split(" / ")]
        for b, base in zip(("1", batch), bases, strict=True):
            shown = _number(cells[heads.index(f"lat b{b} ms")])
            speed = _number(cells[heads.index(f"speedup b{b}")])
            assert speed == pytest.approx(base / shown, rel=1e-2, abs=6e-3), (cells[0], b)
            checked += 1
    return checked


SECTION = {
    "study": {"threads": 2, "machine": "x86_64 2 cores"},
    "rungs": [{"rung": 0, "status": "done", "n_nonembed": 1e4, "val_loss": 2.5,
               "checkpoint_bytes": 40_000, "latency_ms": {"1": 0.9, "32": 22.3}}],
    "variants": [{
        "name": "r0-int8", "of_rung": 0, "method": "int8", "n_params": 10_000,
        "n_nonembed": 1e4, "bytes": 11_000, "val_loss": 2.51,
        "latency_ms": {"1": 0.52, "32": 22.3}, "latency_iqr_ms": {"1": 0.01, "32": 0.4},
        "latency_unstable": [], "settings": {},
        # The finding: a speedup stored against a base measured at 268 ms (a stalled series):
        # the report must show those medians beside it, and mark the flagged one.
        "extra": {"linear_weight_ratio": 3.9, "speedup": {"1": 1.8, "32": 12.02},
                  "base_latency_ms": {"1": 0.95, "32": 268.0},
                  "base_latency_iqr_ms": {"1": 0.02, "32": 250.0},
                  "base_latency_unstable": ["32"],
                  "fp32_onnxruntime_latency_ms": {"1": 0.61, "32": 25.1},
                  "fp32_onnxruntime_latency_unstable": []}}],
}


def test_report_speedup_is_the_ratio_of_its_shown_medians_and_flags_are_marked():
    html = compression_section(SECTION)
    assert _check_speedups_match_shown_medians(html, "32") == 2
    heads, rows = _table(html)
    cells = rows["r0-int8"]
    assert cells[heads.index("base rung lat b1 / b32 ms")] == f"0.95 / 268{UNSTABLE_MARK}"
    assert cells[heads.index("speedup b32")] == f"12.02×{UNSTABLE_MARK}"
    assert cells[heads.index("speedup b1")] == "1.83×"  # steady on both sides: no mark
    # The int8 note's own speedup is the ratio of the fp32 medians it shows.
    note = cells[heads.index("notes")]
    assert "0.61 / 25.1 ms (b1 / b32), int8 over it 1.17× / 1.13×" in note
    assert "IQR is over 30% of its median" in html


def test_real_study_report_speedups_match_shown_medians(study, summary):
    """On the compressed study of the package's fixture: every variant's row, and the stored
    record keeps each latency's spread and flag beside its median."""
    html = compression_section(summary)
    assert _check_speedups_match_shown_medians(html, "32") >= 2 * 5
    for v in summary["variants"]:
        assert set(v["latency_unstable"]) <= {"1", "32"}
        assert set(v["latency_iqr_ms"]) == {"1", "32"}
        ex = v["extra"]
        if ex.get("base_latency_ms"):
            assert ex["speedup"] == latency.speedups(ex["base_latency_ms"], v["latency_ms"])
            assert set(ex["base_latency_iqr_ms"]) == {"1", "32"}
            assert "base_latency_unstable" in ex


def test_report_rung_table_marks_a_flagged_rung_latency():
    from scalelab.report.html import build_report_html

    rungs = [{"rung": i, "status": "done", "n_params": n, "n_nonembed": n,
              "val_loss": 3.0 - 0.2 * i, "checkpoint_bytes": 4 * n,
              "latency_ms": {"1": 0.1 * (i + 1), "32": 1.0 * (i + 1)},
              "latency_unstable": ["32"] if i == 1 else []}
             for i, n in enumerate((1000, 4000))]
    html = build_report_html({"study": {"name": "s"}, "rungs": rungs, "fits": []}, {})
    marked = re.findall(r"<td[^>]*>([^<]*)</td>", html)
    assert [c for c in marked if UNSTABLE_MARK in c] == [f"2{UNSTABLE_MARK}"]
