"""Every number in the report reads: one formatter for counts, labelled axes on every panel in one
tick style, loss curves with points whatever `eval_every`, and a report file others can read."""

from __future__ import annotations

import os
import re
import stat
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from report_synth import make_study

from scalelab.report import plots
from scalelab.report.html import build_report_html, render_report

# A tick label in the one style: a plain number, an SI count suffix, a ratio sign; never 1e+03,
# 10^3 (mathtext) or 2.0 beside 2.5 (matplotlib's fixed decimals give way to significant digits).
TICK = re.compile(r"^[-−]?\d+(\.\d+)?[kMBT]?×?$")


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.replace("xlink:href", "href"))


def axis_labels(svg: str) -> list[tuple[str, list[str]]]:
    """(`x` or `y`, the non-empty tick labels) of each axis of each panel, in drawing order."""
    out = []
    for group in _parse(svg).iter("g"):
        gid = group.get("id", "")
        if not re.search(r"matplotlib\.axis_\d+$", gid):
            continue
        which = None
        labels = []
        for tick in group.iter("g"):
            m = re.search(r"-([xy])tick_\d+$", tick.get("id", ""))
            if m:
                which = m.group(1)
                labels += ["".join(t.itertext()).strip() for t in tick.iter("text")]
        if which is not None:
            out.append((which, [t for t in labels if t]))
    return out


def _rungs(**columns: list[float]) -> list[dict]:
    """The synthetic study's finished rungs with some columns replaced (one value per rung)."""
    summary, _ = make_study()
    rungs = [r for r in summary["rungs"] if r["status"] == "done"]
    for key, values in columns.items():
        for r, v in zip(rungs, values, strict=True):
            r[key] = v
    return rungs


def test_a_count_just_under_a_million_reads_1m_not_1e03k():
    """Fails on b309b61: N = 999,700 was written "1e+03k" in the rung table."""
    summary, curves = make_study()
    summary["rungs"][-1]["n_nonembed"] = 999_700
    summary["rungs"][-1]["n_params"] = 999_950
    html = build_report_html(summary, curves)
    assert "e+03k" not in html and "e+03M" not in html
    assert ">1M<" in html


@pytest.mark.parametrize("fmt, value, text", [
    ("fmt_count", 999_700, "1M"), ("fmt_count", 999_499, "999k"), ("fmt_count", 12_345, "12.3k"),
    ("fmt_count", 1.2e9, "1.2B"), ("fmt_count", 812, "812"), ("fmt_count", None, "—"),
    ("fmt_bytes", 999_700, "1 MB"), ("fmt_bytes", 47_900, "47.9 kB"),
    ("fmt_seconds", 0.9997, "1 s"), ("fmt_seconds", 500.4, "8.34 min"),
    ("fmt_tick", 8000, "8k"), ("fmt_tick", 1000, "1k"), ("fmt_tick", 0.0005, "0.0005"),
    ("fmt_tick", 2.5, "2.5"), ("fmt_tick", 2.0, "2"),
])
def test_the_one_formatter_rounds_before_it_picks_a_unit(fmt, value, text):
    import scalelab.values

    assert getattr(scalelab.values, fmt)(value) == text


def test_loss_vs_n_labels_several_ticks_on_a_narrow_loss_range():
    """Fails on b309b61: a loss from 1.75 to 2.3 (a real ladder's range) got one label, "2"."""
    rungs = _rungs(val_loss=[2.3, 2.12, 1.98, 1.86, 1.75])
    svg = plots.loss_vs_n_svg(rungs)
    (_, x), (_, y) = axis_labels(svg)
    assert len(y) >= 3, y
    assert all(TICK.match(t) for t in x + y), x + y


def test_every_cost_panel_labels_its_y_axis_in_one_style():
    """Fails on b309b61: a peak memory of 11 to 19 MB got no y label at all, and a throughput of
    7k to 12k tokens/s mixed "10k" with "8e+03"."""
    rungs = _rungs(peak_mem_bytes=[11e6, 12e6, 14e6, 16e6, 19e6],
                   units_per_s=[12e3, 11e3, 9.5e3, 8.2e3, 7.1e3],
                   tokens_per_s=[12e3, 11e3, 9.5e3, 8.2e3, 7.1e3])
    axes = axis_labels(plots.cost_svg(rungs))
    assert len(axes) == 12
    for which, labels in axes:
        assert len(labels) >= 2, (which, labels)
        bad = [t for t in labels if not TICK.match(t)]
        assert not bad, (which, labels)


def test_every_plot_of_the_report_uses_the_one_tick_style():
    """Fails on b309b61: the panels mixed 10k, 1e+03 and matplotlib's 10^3 (and 2.0, 2.5)."""
    summary, curves = make_study()
    html = build_report_html(summary, curves)
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) >= 5
    for svg in svgs:
        for which, labels in axis_labels(svg):
            bad = [t for t in labels if not TICK.match(t)]
            assert not bad, (which, labels)


def _holdouts(n: np.ndarray, y: np.ndarray) -> dict:
    """The holdout records `fit --plot` draws: the largest size predicted, and leave one size
    out (one fold per size)."""
    from scalelab.records import Holdout

    largest = Holdout(rule="largest:1", n_fit=len(n) - 1, n_test=1, max_fit_size=float(n[-2]),
                      points=[{"x": float(n[-1]), "measured": float(y[-1]),
                               "predicted": float(y[-1]) * 1.01, "rel_error": 0.01}])
    loso = Holdout(rule="loso", n_fit=None, n_test=len(n), max_fit_size=None, points=[],
                   folds=[{"size": float(s), "n_test": 1, "mean_rel_error": 0.002 * i,
                           "mean_abs_rel_error": 0.002 * i} for i, s in enumerate(n)],
                   mean_abs_rel_error=0.007)
    return {"largest": largest, "loso": loso}


@pytest.mark.parametrize("rule", ["largest", "loso"])
def test_fit_plot_tick_labels_do_not_overlap(rule, tmp_path):
    """Fails on b309b61: `fit --plot`'s holdout panel wrote its x labels (matplotlib's
    6×10^4, 7×10^4, ... on a narrow log axis) on top of each other."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from scalelab.laws.fit import Law
    from scalelab.laws.plots import fit_figure, save_figure

    n = np.geomspace(2e4, 1.6e5, 8)
    y = 1.8 + 40 * n ** -0.35
    law = Law("power").fit(n, y)
    holdout = _holdouts(n, y)[rule]
    fig = fit_figure(law, n, y, holdout)
    save_figure(fig, tmp_path / "fit.png")  # as `fit --plot` writes it
    FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [t.get_window_extent(renderer)
                     for t in axis.get_ticklabels(minor=False) + axis.get_ticklabels(minor=True)
                     if t.get_visible() and t.get_text()]
            assert len(boxes) >= 2
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    assert not a.overlaps(b), [t.get_text() for t in axis.get_ticklabels()]


def _short_rung_curves() -> tuple[list[dict], dict]:
    """What a rung of 188 steps at eval_every 250 records: one point, at its final step."""
    summary, curves = make_study()
    rungs = [r for r in summary["rungs"] if r["status"] == "done"]
    short = {}
    for r in rungs:
        last = next(p for p in reversed(curves[r["rung"]]) if np.isfinite(p["train_loss"]))
        r.update(steps=188, D=188 * 1024, tokens=188 * 1024)
        short[r["rung"]] = [dict(last, step=188, tokens=r["D"], val_loss=r["val_loss"])]
    return rungs, short


def _drawn_points(svg: str, panel_title: str) -> int:
    """Markers drawn in the panel titled `panel_title` (each point of a series is a <use>)."""
    root = _parse(svg)
    for axes in root.iter("g"):
        if not re.search(r"-axes_\d+$", axes.get("id", "")):
            continue
        if panel_title in "".join(axes.itertext()):
            return sum(1 for _ in axes.iter("use")) - sum(
                1 for g in axes.iter("g") if re.search(r"-[xy]tick_\d+$", g.get("id", ""))
                for _ in g.iter("use"))
    raise AssertionError(f"no panel {panel_title!r}")


def test_loss_curves_of_a_rung_shorter_than_eval_every_have_points():
    """Fails on b309b61: the training-loss panel of such rungs was empty (a one-point line)."""
    rungs, short = _short_rung_curves()
    svg = plots.loss_curves_svg(short, rungs)
    assert _drawn_points(svg, "training loss") >= len(rungs)
    assert _drawn_points(svg, "validation loss") >= len(rungs)


def test_a_finished_rung_without_a_curve_point_at_its_end_gets_its_final_loss():
    """A finished rung whose stored curve stops before its last step (an older study, an
    interrupted record) still shows its final validation loss, at the D it trained on."""
    summary, _ = make_study()
    rungs = [r for r in summary["rungs"] if r["status"] == "done"]
    svg = plots.loss_curves_svg({r["rung"]: [] for r in rungs}, rungs)
    assert "no data yet" not in svg
    assert _drawn_points(svg, "validation loss") >= len(rungs)


def test_report_html_is_readable_like_the_other_outputs(tmp_path):
    """Fails on b309b61: report.html came out 0600 (tempfile.mkstemp's mode) while summary.json
    and runs.csv are 0644."""
    summary, curves = make_study()
    old = os.umask(0o022)
    try:
        path = render_report(summary, curves, tmp_path / "report.html")
        (tmp_path / "summary.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "summary.json").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_report_html_follows_the_umask(tmp_path, monkeypatch, umask):
    # The page itself does not matter here, only how its file is written.
    monkeypatch.setattr("scalelab.report.html.build_report_html", lambda *a, **k: "<html/>")
    old = os.umask(umask)
    try:
        path = render_report({}, {}, tmp_path / "report.html")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_text() == "<html/>"
