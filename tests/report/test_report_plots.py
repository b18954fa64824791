"""Plots: inline-ready SVG strings, robust to missing data."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
from report_synth import make_study

from scalelab.report import plots


def _parse(svg: str) -> ET.Element:
    # Inline SVG relies on the HTML parser for namespaces; give XML its prefix back.
    return ET.fromstring(svg.replace("xlink:href", "href"))


def test_each_plot_is_a_bare_inline_svg_with_unique_ids():
    summary, curves = make_study()
    svgs = [
        plots.loss_vs_n_svg(summary["rungs"], summary["fits"][0]),
        plots.loss_curves_svg(curves, summary["rungs"]),
        plots.cost_svg(summary["rungs"]),
    ]
    all_ids: list[str] = []
    for svg in svgs:
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert "<?xml" not in svg and "DOCTYPE" not in svg
        assert "http" not in svg  # no namespace/DTD/metadata URLs, no external refs
        assert "<script" not in svg.lower()
        root = _parse(svg)
        assert root.tag == "svg"
        ids = re.findall(r'\bid="([^"]+)"', svg)
        all_ids += ids
        # every local reference points at an id of the same plot
        for ref in re.findall(r'(?:url\(#|href="#)([^)"]+)', svg):
            assert ref in ids
    assert len(all_ids) == len(set(all_ids)), "ids collide between plots in one page"


def test_loss_vs_n_draws_fit_band_and_holdout():
    summary, _ = make_study()
    svg = plots.loss_vs_n_svg(summary["rungs"], summary["fits"][0])
    assert "95% band" in svg
    assert "validation loss" in svg  # the y axis: the fit's y
    assert "holdout prediction of the largest rung (rel. error +0.62%)" in svg
    assert "diverged rung" in svg
    # the axis tick labels are plain numbers, no scientific notation
    assert "100k" in svg and "1M" in svg


def test_loss_vs_n_without_band_evaluates_the_law():
    summary, _ = make_study()
    fit = dict(summary["fits"][0])
    fit.pop("band")
    fit["holdout"] = {"predicted": 1.7, "measured": 1.69, "rel_error": 0.0059}
    svg = plots.loss_vs_n_svg(summary["rungs"], fit)
    assert "fit:" in svg and "band" not in svg
    assert "+0.59%" in svg


def test_eval_law_power():
    x = np.array([1e4, 1e6])
    y = plots.eval_law("power", {"E": 1.0, "A": 10.0, "alpha": 0.5}, x)
    assert np.allclose(y, [1.1, 1.01])
    assert plots.eval_law("chinchilla", {"E": 1.0}, x) is None


def test_plots_survive_empty_and_unfinished_studies():
    pending = [
        {
            "rung": i,
            "status": "pending",
            "n_params": None,
            "n_nonembed": 1000 * (i + 1),
            "val_loss": None,
            "latency_ms": None,
        }
        for i in range(3)
    ]
    for svg in (
        plots.loss_vs_n_svg([], None),
        plots.loss_vs_n_svg(pending, None),
        plots.loss_curves_svg({}, []),
        plots.loss_curves_svg({0: []}, pending),
        plots.cost_svg(pending),
    ):
        assert svg.startswith("<svg")
        _parse(svg)
    assert "no finished rungs yet" in plots.loss_vs_n_svg(pending, None)


def test_curves_skip_non_finite_points_and_accept_string_keys():
    curves = {
        "0": [
            {"step": 0, "tokens": 0, "train_loss": 5.5, "val_loss": 5.5},
            {"step": 10, "tokens": 1000, "train_loss": 4.0, "val_loss": None},
            {"step": 20, "tokens": 2000, "train_loss": float("nan"), "val_loss": None},
            {"step": 30, "tokens": 3000, "train_loss": float("inf"), "val_loss": 3.9},
        ]
    }
    svg = plots.loss_curves_svg(curves, [{"rung": 0, "status": "diverged", "n_nonembed": 5e3}])
    assert "rung 0" in svg and "diverged" in svg
    _parse(svg)


def test_latency_accepts_numbers_and_median_dicts():
    assert plots.latency_median(1.5) == (1.5, None)
    assert plots.latency_median({"median": 2.0, "iqr": 0.2}) == (2.0, 0.2)
    assert plots.latency_median(None) == (None, None)
    assert plots.latency_of({"latency_ms": {1: 3.0}}, "1") == (3.0, None)
    assert plots.latency_batches([{"latency_ms": {"32": 1, "1": 2}}, {"latency_ms": {"4": 1}}]) == [
        "1",
        "4",
        "32",
    ]
