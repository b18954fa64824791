"""The report shows every candidate law of a fit: its inner holdout (the choice) beside its outer
holdout, which one answers and why, and the forced law; for a ladder in N alone and for one over
N and D; and headless Chromium draws the table."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest
from report_synth import make_study
from test_report_browser import CHROMIUM, _run, screenshot
from tests.laws.two_axis_synth import isoflop_rows

from scalelab.laws.selection import MARGIN, one_axis_selection, selection_record
from scalelab.laws.two_axis import fit_two_axis
from scalelab.report.html import build_report_html, render_report

SIZES = np.geomspace(1e4, 1e6, 7)


def _judged(law: str, inner: float | None, outer: float, n_params: int = 3) -> dict:
    """A candidate row as `laws.selection` records it, with the errors given."""
    def ho(fit: float, x: float, err: float) -> dict:
        return {"max_fit_size": fit, "x": x, "measured": 2.0, "predicted": 2.0 * (1 + err),
                "rel_error": err, "mean_abs_rel_error": abs(err), "n_star": None}
    return {"law": law, "formula": f"L = {law}(x)", "n_params": n_params,
            "inner": None if inner is None else ho(SIZES[-3], SIZES[-2], inner),
            "inner_skipped": None if inner is not None else "too few sizes",
            "outer": ho(SIZES[-2], SIZES[-1], outer), "outer_skipped": None}


def _with_selection(selection: dict) -> dict:
    """The default synthetic study whose loss fit carries `selection` and its candidates."""
    summary, _ = make_study(name="candidates")
    sel = dict(selection)
    summary["fits"][0] = {**summary["fits"][0], "candidates": sel.pop("candidates"),
                          "selection": sel}
    return summary


def _table(page: str, index: object) -> str:
    m = re.search(rf'<table class="candidates" id="candidates-{index}">(.*?)</table>', page, re.S)
    assert m is not None, index
    return m.group(1)


def _why(page: str, index: object) -> str:
    """The sentence under a table, as a reader sees it (markup dropped, entities read)."""
    m = re.search(rf'id="candidates-why-{index}">(.*?)</p>', page, re.S)
    assert m is not None, index
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1)))


def _cells(row_html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>",
                                                                  row_html, re.S)]


def _row(table: str, law: str) -> list[str]:
    m = re.search(rf'<tr class="(\w+)" data-law="{law}">(.*?)</tr>', table, re.S)
    assert m is not None, law
    return [m.group(1), *_cells(m.group(2))]


def test_one_axis_rival_that_wins_by_more_than_the_margin_answers_and_says_why():
    rows = [_judged("power", 0.012, 0.015), _judged("bnsl", -0.001, 0.002, n_params=6)]
    sel = selection_record(rows, "size", None, MARGIN * 0.02)
    assert sel["selected"] == "bnsl"  # the engine's choice, which the report must show
    page = build_report_html(_with_selection(sel), {})
    table = _table(page, 0)
    power, bnsl = _row(table, "power"), _row(table, "bnsl")
    # class, law, parameters, inner fit on / judged on / error, outer fit on / judged on / error
    assert power == ["rival", "power", "3", "215k", "464k", "+1.20%", "464k", "1M", "+1.50%",
                     ""]
    assert bnsl[0] == "answers" and bnsl[5] == "-0.10%" and bnsl[8] == "+0.20%"
    assert bnsl[-1] == "answers"
    assert "N* error" not in table  # a ladder in N alone has no N*
    why = _why(page, 0)
    assert "bnsl answers" in why
    assert "smaller than the default power's by 1.10%, more than the margin 0.50%" in why
    assert "inner holdout: each candidate fitted without the largest fitted size" in why


def test_one_axis_selection_of_the_engine_with_a_skipped_candidate():
    y = 1.25 + 31.0 * SIZES**-0.3 * np.exp(0.003 * np.random.default_rng(0).standard_normal(7))
    sel = one_axis_selection(SIZES, y)
    page = build_report_html(_with_selection(sel), {})
    table = _table(page, 0)
    power = sel["candidates"][0]["inner"]["rel_error"]
    assert _row(table, "power")[0] == "answers"
    assert _row(table, "power")[5] == f"{100 * power:+.2f}%"
    bnsl = _row(table, "bnsl")
    assert bnsl[3:9] == ["—"] * 6  # bnsl (6 parameters) cannot be fitted on 5 or 6 sizes
    assert "inner: 5 distinct point(s) to fit on: bnsl has 6 parameters" in bnsl[-1]
    assert "the default; no other candidate" in page


def test_a_forced_law_is_named_as_forced():
    y = 1.25 + 31.0 * SIZES**-0.3
    sel = one_axis_selection(SIZES, y, forced="power")
    page = build_report_html(_with_selection(sel), {})
    why = _why(page, 0)
    assert "power answers (forced)" in why and "forced (--law power)" in why
    assert "Rule:" not in why


def test_a_report_without_candidates_has_no_table():
    summary, _ = make_study(name="old")
    assert 'class="candidates"' not in build_report_html(summary, {})


@pytest.fixture(scope="module")
def two_axis_summary() -> dict:
    summary, _ = make_study(name="isoflop")
    rows = isoflop_rows(seed=0)
    summary["rungs"] = rows
    summary["fits"] = [fit_two_axis(rows, bootstrap=20, seed=0)]
    return summary


def test_two_axis_candidates_side_by_side_with_the_record(two_axis_summary):
    record = two_axis_summary["fits"][0]
    page = build_report_html(two_axis_summary, {})
    table = _table(page, "two-axis")
    assert "fit on C ≤" in table and "N* error" in table  # budgets held out, N* checked
    inner = record["candidates"][0]["inner"]
    assert _row(table, "chinchilla")[3:5] == ["3 TFLOP", "10 TFLOP"]  # synthetic budgets
    assert inner["max_fit_size"] == pytest.approx(3e12) and inner["x"] == pytest.approx(1e13)
    for cand in record["candidates"]:
        row = _row(table, cand["law"])
        assert row[0] == ("answers" if cand["law"] == record["selection"]["selected"]
                          else "rival")
        inner, outer = cand["inner"] or {}, cand["outer"] or {}
        expect = [f"{100 * v:+.2f}%" if v is not None else "—"
                  for v in (inner.get("rel_error"), outer.get("rel_error"), outer.get("n_star"))]
        assert [row[5], row[8], row[9]] == expect, cand["law"]
    assert len(re.findall(r"<tr class=\"(answers|rival)\"", table)) == len(record["candidates"])
    assert f"{record['selection']['selected']} answers" in page


def test_two_axis_forced_frontier():
    summary, _ = make_study(name="isoflop")
    rows = isoflop_rows(seed=0)
    summary["rungs"] = rows
    summary["fits"] = [fit_two_axis(rows, bootstrap=0, seed=0, law="frontier")]
    page = build_report_html(summary, {})
    table = _table(page, "two-axis")
    assert _row(table, "frontier")[0] == "answers"
    assert "chinchilla" not in table
    why = _why(page, "two-axis")
    assert "frontier answers (forced)" in why and "forced (--law frontier)" in why


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_renders_both_tables(two_axis_summary, tmp_path):
    summary = dict(two_axis_summary)
    rows = [_judged("power", 0.012, 0.015), _judged("bnsl", -0.001, 0.002, n_params=6)]
    sel = selection_record(rows, "size", None, MARGIN * 0.02)
    one = _with_selection(sel)["fits"][0]
    summary["fits"] = [one, *two_axis_summary["fits"]]
    report = render_report(summary, {}, tmp_path / "report.html")
    dom = _run(["--dump-dom", report.as_uri()], tmp_path).stdout
    selected = two_axis_summary["fits"][0]["selection"]["selected"]
    # parsed and serialised back by the browser: the rows that answer, and their errors
    assert _row(_table(dom, 0), "bnsl")[0] == "answers"
    assert _row(_table(dom, 0), "power")[5] == "+1.20%"
    assert _row(_table(dom, "two-axis"), selected)[0] == "answers"
    # Each table alone, with the report's styles: drawn, and the answering row shaded.
    html = report.read_text(encoding="utf-8")
    style = re.search(r"<style>.*?</style>", html, re.S).group(0)
    for index in (0, "two-axis"):
        table = re.search(rf'<table class="candidates" id="candidates-{index}">.*?</table>',
                          html, re.S).group(0)
        page = tmp_path / f"table-{index}.html"
        page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style}</head>"
                        f"<body><main>{table}</main></body></html>", encoding="utf-8")
        px = screenshot(page, tmp_path, size="1100,400")
        ink = (px < 200).all(axis=2).mean()
        assert ink > 0.002, f"table {index} is (nearly) blank"
        shaded = (np.abs(px - np.array([0xEE, 0xF3, 0xFB])).sum(axis=2) < 6).sum()
        assert shaded > 2000, (index, shaded)  # the row that answers, on its own background
