"""The report of a real v1 (schema 1) study reads only the current record shapes: the storage's
migration gives its rungs D, units/s and the family's `describe`, so the report reads no v1
fallback (tokens, tokens_per_s, layers x width), and each method's own notes show its v1
variants (the method classes keep the v1 variant fields the migration does not rewrite)."""

from __future__ import annotations

import re
import shutil

from tests.helpers import DATA

from scalelab.report.compression import compression_section
from scalelab.report.html import build_report_html
from scalelab.storage import StudyStore
from scalelab.study import build_summary


def _row(html: str, first_cell: str) -> list[str]:
    """The cells of the first table row whose first cell is `first_cell`."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>",
                                                                         row, re.S)]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r}")


def test_a_v1_study_reports_its_rungs_and_variants_from_the_migrated_rows(tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(DATA / "v1_study", folder)
    before = (folder / "study.db").read_bytes()
    with StudyStore.open_readonly(folder) as store:
        summary = build_summary(store)
        curves = store.curves()
    rung0 = summary["rungs"][0]
    assert (rung0["D"], rung0["describe"]) == (32000, "1x16")
    html = build_report_html(summary, curves)
    quality = _row(html, "0")
    assert quality[:2] == ["0", "done"] and "1x16 · 1 heads" in quality and "32k" in quality
    assert "92.5k" in html  # rung 0's bytes per second (v1's tokens_per_s, now units_per_s)

    section = compression_section(summary)
    assert section is not None
    prune = _row(section, "r3-prune0.5")
    assert prune[-1] == "heads per layer 4 → [2], MLP channels 256 → [128]"
    assert _row(section, "r3-sparse0.5")[-1].startswith("sparsity 50% of the Linear weights")
    distill = section[section.index("<h3>Distillation"):]  # the method's own table
    assert _row(distill, "r3-distill-r2")[:3] == ["r3-distill-r2", "2", "32,000"]  # student D
    assert (folder / "study.db").read_bytes() == before
