"""Open the report in headless Chromium: it renders, the plots are drawn, the console is quiet."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from report_synth import make_study

from scalelab.report.html import render_report


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90)


def _read_png(path: Path) -> np.ndarray:
    """RGB pixels, 0-255."""
    px = mpimg.imread(path)
    if px.dtype != np.uint8:
        px = np.rint(px * 255)
    return px[:, :, :3].astype(np.int32)


def screenshot(page: Path, tmp: Path, size: str = "1280,900") -> np.ndarray:
    """The page rendered by headless Chromium, as RGB pixels; fails on a missing screenshot or
    any console message (there is no script, so any would mean a failed load or parse)."""
    shot = tmp / "shot.png"
    res = _run([f"--screenshot={shot}", f"--window-size={size}", page.as_uri()], tmp)
    assert shot.is_file(), res.stderr[-2000:]
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    return _read_png(shot)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    summary, curves = make_study()
    return render_report(summary, curves, tmp_path_factory.mktemp("browser") / "report.html")


def test_renders_with_plots_and_no_console_errors(report, tmp_path):
    shot = tmp_path / "shot.png"
    res = _run([f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri()], tmp_path)
    assert shot.is_file(), res.stderr[-2000:]
    # Any console message (there is no script) would mean a failed load or a parse problem.
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    assert "Failed to load resource" not in res.stderr

    px = _read_png(shot)
    assert px.shape[:2] == (2400, 1280)
    ink = (px < 235).any(axis=2)
    assert ink.mean() > 0.03, "screenshot is (nearly) blank"
    # The fitted law is drawn in orange (#d95f02) and the measured points in navy (#1f3b73).
    orange = (np.abs(px - np.array([0xD9, 0x5F, 0x02])).sum(axis=2) < 40).sum()
    navy = (np.abs(px - np.array([0x1F, 0x3B, 0x73])).sum(axis=2) < 40).sum()
    assert orange > 200 and navy > 200, (orange, navy)


def test_dom_holds_the_plots_and_the_escaped_name(report, tmp_path):
    res = _run(["--dump-dom", report.as_uri()], tmp_path)
    dom = res.stdout
    # loss vs N, residuals, generalisation gap, curves, cost
    assert dom.count("<svg") == 5, res.stderr[-2000:]
    assert len(re.findall(r"<path\b", dom)) > 50
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script" not in dom.lower()


# ----------------------------------------------------------------------------- a classifier


@pytest.fixture(scope="module")
def classifier_report(tmp_path_factory) -> Path:
    summary, curves = make_study(objective="classification")
    return render_report(summary, curves, tmp_path_factory.mktemp("cls") / "report.html")


def _colour_pixels(px: np.ndarray, hex_colour: str, tol: int = 40) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(px - rgb).sum(axis=2) < tol).sum())


def _panel_page(report: Path, panel_id: str, out: Path) -> Path:
    """One figure of the report on a page of its own, with the report's styles."""
    html = report.read_text(encoding="utf-8")
    style = re.search(r"<style>.*?</style>", html, re.S).group(0)
    figure = re.search(rf'<figure[^>]* id="{panel_id}".*?</figure>', html, re.S)
    assert figure is not None, panel_id
    out.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style}</head>"
                   f"<body><main>{figure.group(0)}</main></body></html>", encoding="utf-8")
    return out


def test_classifier_report_dom_has_every_panel(classifier_report, tmp_path):
    res = _run(["--dump-dom", classifier_report.as_uri()], tmp_path)
    dom = res.stdout
    # two fits (loss, error rate) with residuals, the gap, curves, cost
    assert dom.count("<svg") == 7, res.stderr[-2000:]
    for panel in ('id="fit-0" data-y="val_loss"', 'id="fit-1" data-y="val_error"',
                  'id="residuals-1" data-y="val_error"', 'id="gap-plot"'):
        assert panel in dom, panel
    assert "bits per byte" not in dom and "validation error rate" in dom


@pytest.mark.parametrize("panel, colours", [
    # the error-rate law (orange), measured rungs (navy), holdout prediction (magenta)
    ("fit-1", ("#d95f02", "#1f3b73", "#c2185b")),
    # train (green) and validation (navy) loss, and the gap (purple)
    ("gap-plot", ("#1b9e77", "#1f3b73", "#7570b3")),
    # the zero line of the residuals (blue)
    ("residuals-1", ("#1f6fb2",)),
])
def test_classifier_panels_render_and_are_not_blank(classifier_report, tmp_path, panel, colours):
    px = screenshot(_panel_page(classifier_report, panel, tmp_path / f"{panel}.html"), tmp_path)
    ink = (px < 235).any(axis=2)
    assert ink.mean() > 0.005, f"{panel} is (nearly) blank"
    for colour in colours:
        assert _colour_pixels(px, colour) > 100, (panel, colour, _colour_pixels(px, colour))
