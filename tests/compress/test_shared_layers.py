"""A shared-weight (ALBERT-style) ladder end to end: `scalelab run` with `family.share_layers`
and a `compress:` section, so the spec alone trains, compresses and reports."""

from __future__ import annotations

import json

import pytest

from scalelab.ladder import plan_ladder
from scalelab.models import count_params, gpt
from scalelab.spec import parse_spec
from scalelab.study import resolve
from tests.compress.spec_helpers import compress_spec
from tests.helpers import scalelab, write_spec


def _shared_spec() -> dict:
    spec = compress_spec(family={"share_layers": True},
                         compress={"rung": "largest", "methods": ["int8", "prune:0.5",
                                                                  "lowrank:0.5"]})
    spec["name"] = "shared"
    spec["ladder"] = {"sizes": [1.0e4, 4.0e4]}
    spec["train"]["tokens"] = 8_000
    return spec


def test_shared_ladder_plans_fewer_unique_parameters_per_depth():
    spec = parse_spec(_shared_spec())
    res = resolve(spec)
    plans = plan_ladder(spec, res.task, res.family)
    assert all(p.shape["share_layers"] for p in plans)
    for p in plans:
        model = res.family.build(p.shape)
        assert len(model.blocks) == 1 and len(model.layers()) == p.shape["n_layer"]
        assert count_params(model)[1] == p.n_nonembed == gpt.nonembed_for(
            p.shape["n_layer"], p.shape["d_model"], share_layers=True)


@pytest.mark.slow
def test_shared_ladder_runs_and_compresses_from_the_spec(tmp_path):
    spec = write_spec(tmp_path / "shared.yaml", _shared_spec())
    out = tmp_path / "study"
    scalelab("run", spec, "--out", out, check=True)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["rungs"]] == ["done", "done"]
    assert summary["study"]["spec"]["family"]["share_layers"] is True
    names = {v["name"] for v in summary["variants"]}
    assert names == {"r1-int8", "r1-prune0.5", "r1-lowrank0.5"}
    pruned = next(v for v in summary["variants"] if v["method"] == "prune")
    shape = pruned["settings"]["shape"]  # the one shared block, with half its heads
    assert shape["share_layers"] is True and shape["n_head"] < summary["rungs"][1]["n_head"]
    assert pruned["n_nonembed"] < summary["rungs"][1]["n_nonembed"]
    assert "<h2>Compression</h2>" in (out / "report.html").read_text()
