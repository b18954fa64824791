"""The report's two-axis part from a synthetic IsoFLOP study: the answer at the top, every panel
drawn (SVG with paths) and, in headless Chromium, not blank and in its colours."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from report_synth import make_study
from test_report_browser import CHROMIUM, _colour_pixels, _panel_page, screenshot
from tests.laws.two_axis_synth import isoflop_rows

from scalelab.laws.two_axis import fit_two_axis
from scalelab.report.html import build_report_html, render_report

PANELS = ("two-axis-isoflop", "two-axis-contours", "two-axis-optimal", "two-axis-gap")


@pytest.fixture(scope="module")
def summary() -> dict:
    summary, _ = make_study(name="isoflop <study>")
    rows = isoflop_rows(seed=0)
    summary["rungs"] = rows
    summary["fits"] = [fit_two_axis(rows, bootstrap=100, seed=0)]
    return summary


@pytest.fixture(scope="module")
def page(summary) -> str:
    return build_report_html(summary, {})


def _panel(page: str, panel_id: str) -> str:
    m = re.search(rf'<figure[^>]* id="{panel_id}">(.*?)</figure>', page, re.S)
    assert m is not None, panel_id
    return m.group(1)


def test_answer_is_at_the_top(page, summary):
    header = page[: page.index('<section id="setup">')]
    answer = summary["fits"][0]["answer"]
    assert answer.startswith("for 3e+13 FLOPs, train N ≈ ")
    assert f'<p class="answer" id="answer-0"><b>Compute-optimal:</b> {answer}.</p>' in header


@pytest.mark.parametrize("panel", PANELS)
def test_every_panel_is_drawn(page, panel):
    svg = _panel(page, panel)
    assert svg.count("<svg") == 1
    # drawn marks: paths, and markers placed with <use> (a blank axes has a handful of paths)
    assert len(re.findall(r"<(?:path|use)\b", svg)) > 30, panel


def test_tables_and_the_repeated_data(page, summary):
    rec = summary["fits"][0]
    preds = re.search(r'<table class="predictions" id="two-axis-predictions">(.*?)</table>',
                      page, re.S).group(1)
    assert preds.count("<tr>") == 3  # the head and 10x, 100x
    assert "10×" in preds and "100×" in preds and "3x only" in preds
    compare = re.search(r'id="two-axis-compare">(.*?)</table>', page, re.S).group(1)
    assert "a in N* ∝ C^a" in compare and compare.count("[") >= 10  # values with intervals
    assert 'id="two-axis-agree"' in page and "The approaches agree" in page
    assert "Holdout:" in page and f"{100 * rec['holdout']['rel_error']:+.2f}%" in page
    repeated = sum(r["epochs"] > 1 for r in summary["rungs"])
    assert repeated > 0 and f"{repeated} of 20 rungs repeat" in page
    gap = _panel(page, "two-axis-gap")
    assert len(re.findall(r"\d ep<", gap)) == repeated  # each repeated rung labelled
    # the N-only law section does not take the two-axis record for a power law
    assert 'id="fit-0"' not in page and "&lt;study&gt;" in page


def test_a_grid_study_has_no_isoflop_panel(summary):
    from tests.laws.two_axis_synth import grid_rows

    rows = grid_rows()
    grid = dict(summary, rungs=rows, fits=[fit_two_axis(rows, bootstrap=50, seed=0)])
    page = build_report_html(grid, {})
    assert 'id="two-axis-isoflop"' not in page and 'id="two-axis-contours"' in page
    assert "a grid ladder has no IsoFLOP budgets" in page


# -- in the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(summary, tmp_path_factory) -> Path:
    return render_report(summary, {}, tmp_path_factory.mktemp("two_axis") / "report.html")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest.mark.parametrize("panel, colours", [
    # budget curves (navy, orange, green, purple)
    ("two-axis-isoflop", ("#1f3b73", "#d95f02", "#1b9e77")),
    # the frontier (magenta) over the contours
    ("two-axis-contours", ("#c2185b",)),
    # Approach 3 (magenta) and Approach 2 (green)
    ("two-axis-optimal", ("#c2185b", "#1b9e77")),
    # rungs repeating their data ringed in red
    ("two-axis-gap", ("#b00020",)),
])
def test_panels_render_and_are_not_blank(report, tmp_path, panel, colours):
    px = screenshot(_panel_page(report, panel, tmp_path / f"{panel}.html"), tmp_path)
    ink = (px < 235).any(axis=2)
    assert ink.mean() > 0.005, f"{panel} is (nearly) blank"
    for colour in colours:
        assert _colour_pixels(px, colour) > 40, (panel, colour, _colour_pixels(px, colour))
