"""The report's trust horizon: the extrapolation profile plot and table, the headline, the
predictions beyond the ladder with their warnings, the noise per size, and exact fits flagged."""

from __future__ import annotations

import re

import numpy as np
import pytest
from report_synth import make_study
from test_report_browser import CHROMIUM, _colour_pixels, _panel_page, _run, screenshot
from test_report_tasks import _cards, _text

from scalelab.laws import fit_study_power
from scalelab.laws.profile import fmt_ratio, horizon_text
from scalelab.report.html import build_report_html, render_report

SIZES = np.geomspace(1e4, 1e6, 7)


def _section(html: str, start: str, end: str) -> str:
    """From `start` to the first `end` after it."""
    i = html.index(start)
    return html[i : html.index(end, i)]


def _repeats_fit() -> dict:
    """A 7-size ladder, 2 seeds each, 0.5% noise: noise model, profile and predictions."""
    n = np.repeat(SIZES, 2)
    y = (1.3 + 25.0 * n**-0.3) * np.exp(np.random.default_rng(1).normal(0, 0.005, n.size))
    return fit_study_power(n, y, bootstrap=100)


@pytest.fixture(scope="module")
def study() -> tuple[dict, dict, str]:
    summary, curves = make_study(name="study")
    summary["fits"] = [_repeats_fit()]
    return summary, curves, build_report_html(summary, curves)


def test_headline_shows_the_trust_horizon_beside_the_law(study):
    summary, _, html = study
    prof = summary["fits"][0]["profile"]
    h = horizon_text(prof)
    # the 10x check (+0.6%) lies in a noise band wider than 2% ([-3.8%, +3.0%]): too noisy to
    # count either way, so the horizon is the 4.6x that narrower bands did test
    assert h.startswith("within 2% up to 4.6× beyond the fitted range; too noisy to tell "
                        "beyond: +0.6% at 10× lies inside its noise band [-3.8%, +3.0%]")
    assert _text(_section(html, '<p class="fitted"', "</header>")).strip() == (
        "Fitted: validation loss (nats/byte) against non-embedding parameters "
        f"( L(N) = E + A · N −α ) — {h} .")
    assert _cards(html)["horizon-0"] == (f"trust horizon · validation loss "
                                         f"{fmt_ratio(prof['horizon'])} beyond the fitted range, "
                                         "within 2%")
    assert f"Trust horizon: {h} ." in _text(html)


def test_profile_plot_table_and_noise_bands(study):
    summary, _, html = study
    prof = summary["fits"][0]["profile"]
    figure = re.search(r'<figure class="profile" id="profile-0".*?</figure>', html, re.S)
    assert figure is not None and figure.group(0).count("<svg") == 1
    rows = re.findall(r"<tr><td>(.*?)</td></tr>",
                      _section(html, 'id="profile-table-0"', "</table>"), re.S)
    assert len(rows) == len(prof["splits"]) == 3  # fits on 4, 5 and 6 of the 7 sizes
    cells = [re.split(r"</td>\s*<td>", r) for r in rows]
    assert [c[1] for c in cells] == ["4 (8)", "5 (10)", "6 (12)"]
    last = prof["splits"][-1]["points"][0]
    assert cells[-1][3] == f"{100 * last['rel_error']:+.2f}% at 2.2×"
    assert cells[-1][5] == f"[{100 * last['band'][0]:+.1f}%, {100 * last['band'][1]:+.1f}%]"
    n_pts = sum(len(s["points"]) for s in prof["splits"])
    assert (f"{prof['outside_band']} of {n_pts} errors lie outside their 95% noise-implied "
            "band") in _text(html)


def test_predictions_beyond_the_horizon_carry_a_warning(study):
    summary, _, html = study
    preds = summary["fits"][0]["predictions"]
    table = _text(_section(html, 'id="predictions-0"', "</table>"))
    # 10x and 100x the largest rung both lie beyond the horizon (4.6x): a warning each
    assert [p["beyond_horizon"] for p in preds] == [True, True]
    assert "10× 10M" in table and "100× 100M" in table
    assert table.count("Warning:") == 2
    assert ("Warning: beyond the trust horizon (4.6×): no evidence that the law holds this far; "
            "the interval shows the fit's noise, not the error of its form.") in table.replace(
                "&#39;", "'")


def test_noise_per_size_and_the_weighting(study):
    summary, _, html = study
    noise = summary["fits"][0]["noise"]
    rows = re.findall(r"<tr><td>", _section(html, 'id="noise-0"', "</table>"))
    assert len(rows) == len(noise["sizes"]) == 7
    text = _text(html)
    assert f"pooled noise {100 * noise['sigma']:.2f}% in log L (7 degrees of freedom)" in text
    assert "The fit weighs each run by 1/σ of its size" in text


def test_no_repeats_says_where_the_noise_came_from():
    summary, curves = make_study(name="study")
    n = SIZES
    summary["fits"] = [fit_study_power(n, 1.3 + 25.0 * n**-0.3 * (1 + 0.003 * np.sin(n)),
                                       bootstrap=0)]
    text = _text(build_report_html(summary, curves))
    assert "No repeats of any size: the noise," in text
    assert "ladder: {repeats: K} measures it." in text


def test_an_exact_fit_is_flagged_not_shown_as_a_result():
    summary, curves = make_study(name="study")
    n = SIZES[:3]
    summary["fits"] = [fit_study_power(n, 1.3 + 25.0 * n**-0.3, bootstrap=0)]
    assert summary["fits"][0]["flags"] == ["zero_dof"] and summary["fits"][0]["dof"] == 0
    html = build_report_html(summary, curves)
    assert _text(_section(html, '<p class="fitted"', "</header>")).strip() == (
        "Fitted: validation loss (nats/byte): exact fit, 3 sizes for 3 parameters (zero "
        "degrees of freedom): not a result .")
    cards = _cards(html)
    assert "alpha-0" not in cards and "horizon-0" not in cards
    assert cards["exact-0"] == ("law · validation loss exact fit zero degrees of freedom: "
                                "not a result")
    flagged = _text(_section(html, 'id="flagged-0"', "</p>"))
    assert "Exact fit, not a result." in flagged and "zero degrees of freedom" in flagged
    # no parameter table, no law drawn, no residuals, no profile, no predictions
    for gone in ('id="params-0"', 'id="residuals-0"', 'id="profile-0"', 'id="predictions-0"',
                 "fit: $"):
        assert gone not in html, gone


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_profile_panel_renders_in_chromium(study, tmp_path):
    summary, curves, _ = study
    report = render_report(summary, curves, tmp_path / "report.html")
    res = _run(["--dump-dom", report.as_uri()], tmp_path)
    dom = res.stdout
    assert 'id="profile-0"' in dom and 'id="trust-0"' in dom, res.stderr[-2000:]
    assert "too noisy to tell beyond" in _section(dom, '<p class="fitted"', "</header>")
    px = screenshot(_panel_page(report, "profile-0", tmp_path / "profile.html"), tmp_path)
    # the horizon (orange, dashed) and the first and last splits' lines (viridis ends)
    for colour in ("#d95f02", "#440154", "#b0dd2f"):
        assert _colour_pixels(px, colour) > 30, (colour, _colour_pixels(px, colour))
