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
    assert dom.count("<svg") == 4, res.stderr[-2000:]  # loss vs N, residuals, curves, cost
    assert len(re.findall(r"<path\b", dom)) > 50
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script" not in dom.lower()
