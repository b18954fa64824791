"""A v1 study reads in the current shape everywhere: the storage normalises it once, so the
readers that used to fall back to v1 names (show's D and D/s, compress's family) need none."""

from __future__ import annotations

import shutil

from scalelab.compress.plan import plan_compress
from scalelab.storage import StudyStore
from tests.helpers import DATA, scalelab


def test_show_reads_d_and_its_rate_of_a_v1_study(tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(DATA / "v1_study", folder)
    before = (folder / "study.db").read_bytes()
    out = scalelab("show", folder, check=True).stdout
    quality = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│")]
    # rung 0 of the v1 fixture: 32,000 bytes (v1's `tokens`) at 92.5k bytes/s (`tokens_per_s`)
    assert [c.strip() for c in quality[0][:5]] == ["0", "done", "3.31k", "1x16", "32k"]
    rate = next(row for row in quality if len(row) == 7)
    assert [c.strip() for c in rate[:4]] == ["0", "1.38B", "346 ms", "92.5k"]
    assert (folder / "study.db").read_bytes() == before


def test_compress_plans_a_v1_rung_as_the_gpt_it_is(tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(DATA / "v1_study", folder)
    with StudyStore.open_readonly(folder) as store:
        rows = store.rungs()
    assert {r["family"] for r in rows} == {"gpt"}
    plan = plan_compress(rows, "largest", ["int8"], None, "lm")
    assert [m.kind for m in plan.methods] == ["int8"]
