"""The HTML report: content, escaping, self-containment."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_synth import XSS_NAME, make_study

from scalelab.report.html import build_report_html, render_report


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[dict, str, Path]:
    summary, curves = make_study()
    out = tmp_path_factory.mktemp("study") / "sub" / "report.html"
    path = render_report(
        summary,
        curves,
        out,
        extra_sections=[("Compression <variants>", "<p id='extra'>int8: ok</p>")],
    )
    return summary, path.read_text(encoding="utf-8"), path


def test_writes_the_file_atomically(rendered):
    _, html, path = rendered
    assert path.name == "report.html" and path.is_file()
    assert html.startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temp file left


def test_user_text_is_escaped_everywhere(rendered):
    _, html, _ = rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS_NAME not in html
    assert "<script" not in html.lower()
    # spec values and divergence reasons are user/run text too
    assert "&lt;/pre&gt;&lt;b&gt;not bold&lt;/b&gt;" in html
    assert "loss is NaN &lt;after&gt; lr spike" in html
    parser = _Tags()
    parser.feed(html)
    assert "script" not in parser.tags
    assert not any(k.startswith("on") for k, _ in parser.attrs)  # no event handlers
    # loss vs N, its residuals, the generalisation gap, loss curves, cost
    assert parser.tags.count("svg") == 5


def test_self_contained_no_external_resources(rendered):
    _, html, _ = rendered
    assert not re.search(r"https?://", html)
    assert "<link" not in html and "@import" not in html and "<iframe" not in html
    assert not re.search(r"""\ssrc\s*=""", html)
    assert not re.search(r"url\((?!#)", html)  # only local url(#clip) references


def test_every_rung_and_measurement_is_in_the_table(rendered):
    summary, html, _ = rendered
    quality = html[html.index('id="rungs-quality"') : html.index('id="rungs-cost"')]
    cost = html[html.index('id="rungs-cost"') : html.index('id="law"')]
    assert quality.count("<tr class=") == 6 and cost.count("<tr class=") == 6
    assert "D<br>bytes" in quality and "val loss<br>(nats/byte)" in quality
    assert "val bits<br>per byte" in quality and "layers" not in quality
    for want in (
        "6.56k",
        "25.4k",
        "84.8k",
        "200k",
        "559k",
        "1.19M",  # N non-embedding
        "1.23M",
        "<td>6x128 · 8 heads</td>",
        "<td>4M</td>",
        "3.471",
        "1.715",
        "2.474",
        "3.45e-3",
        # train loss and the gap val - train (LM_GAPS), none for the diverged rung
        "<td>3.471</td><td>3.051</td><td>+0.42</td>",
        "<td>1.715</td><td>1.645</td><td>+0.07</td>",
        "<td>—</td><td>—</td><td>—</td>",
    ):
        assert want in quality, want
    for want in (
        "294 GFLOP",
        "29.5 TFLOP",
        "12.7 s",
        "8.34 min",
        "316k/s",
        "throughput<br>bytes/s",
        "7.00%",
        "99.2 MB",
        "47.9 kB",
        "4.92 MB",
        "0.223 ± 0.0089",
        "38.4 ± 0.96",
        "batch 1",
        "batch 32",
    ):
        assert want in cost, want
    assert 'class="badge diverged"' in quality
    assert "at step 812: loss is NaN" in quality
    assert "Rung 3 (N = 200k) diverged at step 812" in html


def test_header_spec_and_machine(rendered):
    _, html, _ = rendered
    for want in (
        "pycode",
        "gpt",
        "2.5.1+cpu",
        "3.11.9",
        "123 GFLOP/s",
        "not known for this device",
        "27.3 MB (27,345,118 bytes)",
        "ab" * 32,
        "min_nonembed: 6600",
        "test-host (x86_64, 2 cores)",
        "2025-01-02T03:04:05Z",
    ):
        assert want in html, want


def test_fit_parameters_intervals_and_holdout(rendered):
    _, html, _ = rendered
    law = html[html.index('id="law"') : html.index('id="curves"')]
    assert "L(N) = E + A · N<sup>−α</sup>" in law
    for want in (
        "1.249",
        "[1.19, 1.31]",
        "30.8",
        "[25.1, 37.9]",
        "0.2991",
        "[0.281, 0.318]",
        "α",
        "+0.62%",
        "holdout prediction of the largest rung",
        "L = 1.725 [1.691, 1.76]",
        "fitted on all rungs but the largest (4 rungs)",
        "the law predicts the largest (N = 1.19M)",
        "validation loss (nats/byte)",
    ):
        assert want in law, want
    assert "<svg" in law and "95% band" in law
    assert law.count('<figure class="fit" id="fit-') == 1 and 'data-y="val_loss"' in law
    # the residual panel is drawn by scalelab.laws.plots, the same code as `scalelab fit --plot`
    assert 'id="residuals-0"' in law and "log residual (pred / measured)" in law


def test_extra_sections_title_escaped_html_trusted(rendered):
    _, html, _ = rendered
    assert "<h2>Compression &lt;variants&gt;</h2>" in html
    assert "<p id='extra'>int8: ok</p>" in html


def test_flat_latency_numbers_and_on_bound_parameters():
    summary, curves = make_study(name="plain study", flat_latency=True)
    summary["fits"][0]["on_bound"] = ["E"]
    del summary["fits"][0]["band"]
    html = build_report_html(summary, {str(k): v for k, v in curves.items()})
    assert "<td>0.223</td>" in html and "± 0.0089" not in html
    assert "on a bound of the fit" in html
    assert "plain study" in html


def test_unfinished_study_renders():
    summary, _ = make_study()
    summary = copy.deepcopy(summary)
    for r in summary["rungs"]:
        r.update(
            status="pending",
            val_loss=None,
            val_bpb=None,
            flops=None,
            flops_6nd=None,
            train_seconds=None,
            tokens_per_s=None,
            mfu=None,
            peak_mem_bytes=None,
            checkpoint_bytes=None,
            latency_ms=None,
            n_layer=None,
            d_model=None,
            n_head=None,
        )
    summary["rungs"][0]["status"] = "running"
    summary["fits"] = []
    summary["study"]["corpus"] = None
    summary["study"]["spec"] = None
    html = build_report_html(summary, {})
    assert html.count('class="badge pending"') == 10 and 'class="badge running"' in html
    assert "No law fitted yet" in html and "no finished rungs yet" in html


def test_minimal_summary_renders():
    html = build_report_html({"study": {"name": "x"}, "rungs": [], "fits": []}, {})
    assert "No rungs planned." in html and "<svg" in html


def test_output_is_deterministic(rendered):
    summary, html, _ = rendered
    _, curves = make_study()
    again = build_report_html(
        summary, curves, [("Compression <variants>", "<p id='extra'>int8: ok</p>")]
    )
    assert again == html  # `scalelab report` rebuilds the same page
