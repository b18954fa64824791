"""The report shows what makes sense for the task: per objective, per family, old studies."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from report_synth import make_study

from scalelab.report import plots
from scalelab.report.html import build_report_html

DATA = Path(__file__).resolve().parents[1] / "data"


def _html(objective: str = "lm", **kw) -> str:
    summary, curves = make_study(name="study", objective=objective, **kw)
    return build_report_html(summary, curves)


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(start) : html.index(end)]


def _text(html: str) -> str:
    """The page's words, without plots or markup."""
    html = re.sub(r"<svg.*?</svg>", " ", html, flags=re.S)
    html = re.sub(r"<style>.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _cards(html: str) -> dict[str, str]:
    """Headline cards: id -> their text."""
    cards = re.findall(r'<div class="card" id="card-([^"]+)">(.*?)</div></div>', html, re.S)
    return {k: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", v)).strip() for k, v in cards}


@pytest.fixture(scope="module")
def classification() -> str:
    return _html("classification")


@pytest.fixture(scope="module")
def regression() -> str:
    return _html("regression")


def test_classification_fits_and_plots_loss_and_error_rate(classification):
    html = classification
    law = _section(html, 'id="law"', 'id="gap"')
    # one figure and one residual panel per fit, each labelled by the fit's y
    assert re.findall(r'<figure class="fit" id="(fit-\d)" data-y="([a-z_]+)"', law) == [
        ("fit-0", "val_loss"), ("fit-1", "val_error")]
    assert re.findall(r'id="(residuals-\d)" data-y="([a-z_]+)"', law) == [
        ("residuals-0", "val_loss"), ("residuals-1", "val_error")]
    error_fig = _section(law, 'id="fit-1"', 'id="residuals-1"')
    assert "validation error rate" in error_fig  # the y axis of its plot and its caption
    assert "holdout prediction of the largest rung (rel. error +3.91%)" in error_fig
    assert "95% band" in error_fig
    words = _text(law)
    for want in (
        "Fitted law of the error rate: err(N) = E + A · N −α",
        "E 0.0107 [0.0061, 0.0149]",
        "α 0.3972 [0.371, 0.425]",
        "the law predicts the largest (N = 1.19M): err = 0.02583 [0.02531, 0.02634]; "
        "measured 0.02486; relative error +3.91%",
        "Fitted law of the validation loss: L(N) = E + A · N −α",
        "the law predicts the largest (N = 1.19M): L = 0.1452",
        "measured 0.1474; relative error -1.43%",
    ):
        assert want in words, want
    assert html.count("<svg") == 7  # 2 fits + 2 residuals, gap, curves, cost


def test_classification_headline_table_and_no_bits_per_byte(classification):
    html = classification
    assert _cards(html) == {
        "alpha-0": "exponent α · validation loss 0.3488 interval [0.331, 0.367]",
        "holdout-0": "holdout error, largest rung · validation loss -1.43% "
                     "predicted 0.1452 · measured 0.1474",
        "alpha-1": "exponent α · error rate 0.3972 interval [0.371, 0.425]",
        "holdout-1": "holdout error, largest rung · error rate +3.91% "
                     "predicted 0.02583 · measured 0.02486",
        "quality": "error rate, largest rung 2.49% accuracy 97.51% · N = 1.19M",
    }
    fitted = _text(_section(html, '<p class="fitted"', "</header>"))
    assert fitted.strip() == (
        "Fitted: validation loss (nats/example) against non-embedding parameters "
        "( L(N) = E + A · N −α ); validation error rate against non-embedding parameters "
        "( err(N) = E + A · N −α ).")
    quality = _section(html, 'id="rungs-quality"', 'id="rungs-cost"')
    assert "D<br>examples" in quality and "val loss<br>(nats/example)" in quality
    assert "<th>val error<br>rate</th><th>val<br>accuracy</th>" in quality
    # rung 0 and the largest: shape from `describe`, D, loss, train loss, gap, error, accuracy
    assert ("<td>2x32</td>\n      <td>50k</td><td>3.91k</td><td>3.45e-3</td>\n"
            "      <td>0.4955</td><td>0.4855</td><td>+0.01</td>\n"
            "<td>12.89%</td><td>87.11%</td>") in quality
    assert "<td>0.1474</td><td>0.06735</td><td>+0.08</td>\n<td>2.49%</td><td>97.51%</td>" \
        in quality
    assert "throughput<br>examples/s" in html and "examples seen" in html
    for absent in ("bits per byte", "per byte", "nats/byte", "nats/token", "bpb<", "heads",
                   "layers", "tokens seen", "tokens/s", "RMSE"):
        assert absent not in _text(html), absent


def test_gap_panel_and_column(classification):
    gap = _section(classification, 'id="gap"', 'id="curves"')
    assert gap.count("<svg") == 1 and 'id="gap-plot"' in gap
    assert "generalisation gap" in gap and "val − train (nats/example)" in gap
    assert "of the 6 finished rungs that measured both" in _text(gap)
    summary, _ = make_study(objective="classification")
    pts = plots.gap_points(summary["rungs"])
    assert [round(v - t, 6) for _, t, v in pts] == [0.01, 0.02, 0.035, 0.05, 0.065, 0.08]
    assert [x for x, _, _ in pts] == sorted(r["n_nonembed"] for r in summary["rungs"])


def test_gap_skips_rungs_without_train_loss():
    summary, _ = make_study()  # rung 3 diverged: no train loss
    assert [round(v - t, 6) for _, t, v in plots.gap_points(summary["rungs"])] == [
        0.42, 0.31, 0.22, 0.11, 0.07]
    for r in summary["rungs"]:
        r["train_loss"] = None
    assert plots.gap_points(summary["rungs"]) == [] and plots.gap_svg(summary["rungs"]) is None
    html = build_report_html(summary, {})
    gap = _section(html, 'id="gap"', 'id="curves"')
    assert "<svg" not in gap and "no generalisation gap to show" in gap
    quality = _section(html, 'id="rungs-quality"', 'id="rungs-cost"')
    assert "<td>1.715</td><td>—</td><td>—</td>" in quality


def test_regression_shows_rmse_and_no_error_rate(regression):
    html = regression
    assert _cards(html) == {
        "alpha-0": "exponent α · validation loss 0.3207 interval [0.301, 0.339]",
        "holdout-0": "holdout error, largest rung · validation loss +2.15% "
                     "predicted 0.1208 · measured 0.1183",
        "quality": "RMSE, largest rung 0.8599 N = 1.19M",
    }
    quality = _section(html, 'id="rungs-quality"', 'id="rungs-cost"')
    assert "val loss<br>(MSE, standardised target)" in quality
    assert "<th>val RMSE<br>target units</th>" in quality
    assert "<td>0.1183</td><td>0.0983</td><td>+0.02</td>\n<td>0.8599</td>" in quality
    law = _section(html, 'id="law"', 'id="gap"')
    assert re.findall(r'<figure class="fit" id="fit-\d" data-y="([a-z_]+)"', law) == ["val_loss"]
    assert 'data-y="val_error"' not in html and "err(N)" not in html
    assert "Loss: mean squared error (MSE, standardised target)" in _text(html)
    for absent in ("error rate", "accuracy", "bits per byte", "nats/", "heads"):
        assert absent not in _text(html), absent
    assert html.count("<svg") == 5


def test_lm_still_shows_bits_per_byte():
    html = _html("lm")
    cards = _cards(html)
    assert cards["quality"] == "bits per byte, largest rung 2.474 N = 1.19M"
    assert cards["holdout-0"] == ("holdout error, largest rung · validation loss +0.62% "
                                  "predicted 1.725 · measured 1.715")
    assert "alpha-1" not in cards and "holdout-1" not in cards
    quality = _section(html, 'id="rungs-quality"', 'id="rungs-cost"')
    assert "val bits<br>per byte" in quality and "<td>2.474</td>" in quality
    assert "D<br>bytes" in quality and "val loss<br>(nats/byte)" in quality
    assert "error rate" not in _text(html) and "RMSE" not in _text(html)
    assert "Fitted: validation loss (nats/byte) against non-embedding parameters" in _text(html)


def test_old_study_with_the_old_holdout_record_renders():
    html = _html(legacy=True)
    words = _text(html)
    # the old record {x, predicted, measured, rel_error, interval}: same numbers as today
    assert _cards(html)["holdout-0"] == ("holdout error, largest rung · validation loss +0.62% "
                                         "predicted 1.725 · measured 1.715")
    assert ("Holdout: fitted on all rungs but the largest, the law predicts the largest "
            "(N = 1.19M): L = 1.725 [1.691, 1.76]; measured 1.715; relative error +0.62%"
            ) in words
    assert "holdout prediction of the largest rung (rel. error +0.62%)" in html
    # no objective recorded: a byte-level language model; no train loss: no gap
    assert "D<br>bytes" in html and "val bits<br>per byte" in html
    assert "<td>6x128 · 8 heads</td>" in html  # the describe the migration gives, the heads
    assert "no generalisation gap to show" in words
    assert "<td>1.715</td><td>—</td><td>—</td>" in html


def test_old_holdout_without_x_sits_at_the_largest_finished_rung():
    summary, curves = make_study(legacy=True)
    del summary["fits"][0]["holdout"]["x"]
    html = build_report_html(summary, curves)
    assert "the law predicts the largest (N = 1.19M): L = 1.725" in _text(html)


def test_real_v1_study_database_renders(tmp_path):
    from scalelab.storage import StudyStore
    from scalelab.study import build_summary

    folder = tmp_path / "v1"
    shutil.copytree(DATA / "v1_study", folder)
    with StudyStore.open_readonly(folder) as store:
        summary = build_summary(store)
    html = build_report_html(summary, {})
    assert _cards(html)["holdout-0"] == ("holdout error, largest rung · validation loss +3.20% "
                                         "predicted 2.679 · measured 2.596")
    assert ("the law predicts the largest (N = 50.1k): L = 2.679; measured 2.596; "
            "relative error +3.20%") in _text(html)
    assert "val bits<br>per byte" in html and "D<br>bytes" in html


def test_fits_of_a_short_ladder_say_what_was_not_fitted():
    from scalelab.laws import fit_study_power

    summary, curves = make_study(objective="classification")
    summary["fits"] = [fit_study_power([1e4], [1.0], bootstrap=0),  # one rung: no law
                       fit_study_power([1e4, 1e5], [0.1, 0.05], bootstrap=0, y_name="val_error")]
    html = build_report_html(summary, curves)
    assert _text(_section(html, '<p class="fitted"', "</header>")).strip() == (
        "Fitted: validation loss (nats/example): too few finished rungs to fit a law yet; "
        "validation error rate: exact fit, 2 sizes for 3 parameters (zero degrees of freedom): "
        "not a result .")
    # two points: a pure power law through both, no degrees of freedom: flagged, no exponent
    assert list(_cards(html)) == ["exact-1", "quality"]
    assert _cards(html)["exact-1"] == ("law · error rate exact fit zero degrees of freedom: "
                                       "not a result")
    assert html.count("No holdout check for this fit.") == 1
    assert 'id="flagged-1"' in html and 'id="params-1"' not in html
