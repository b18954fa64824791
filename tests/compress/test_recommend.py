"""The Pareto frontier and `scalelab recommend` (library on synthetic models, CLI on the study)."""

from __future__ import annotations

import json

import pytest

from scalelab.errors import UserError
from scalelab.select import dominates, models, pareto_front, recommend
from tests.helpers import scalelab_each


def _rung(i, loss, lat, nbytes):
    return {"rung": i, "status": "done", "val_loss": loss, "checkpoint_bytes": nbytes,
            "n_nonembed": 1000 * (i + 1), "latency_ms": {"1": lat, "32": 10 * lat}}


def _variant(name, loss, lat, nbytes, method="int8"):
    return {"name": name, "of_rung": 2, "method": method, "n_params": 1, "bytes": nbytes,
            "val_loss": loss, "latency_ms": {"1": lat, "32": 10 * lat}}


SYNTH = {
    "rungs": [_rung(0, 3.0, 1.0, 100), _rung(1, 2.5, 2.0, 400), _rung(2, 2.0, 4.0, 1600),
              {"rung": 3, "status": "diverged", "val_loss": None, "latency_ms": {}}],
    "variants": [_variant("r2-int8", 2.05, 1.5, 450),
                 _variant("r2-bad", 2.6, 5.0, 2000, "sparse"),  # dominated by r1
                 _variant("r2-tie", 2.00004, 4.0, 1500, "fp16")],  # ties r2's loss, fewer bytes
}


def test_frontier_drops_dominated_and_unfinished_models():
    names = [m["name"] for m in pareto_front(models(SYNTH), "1")]
    # r2-bad is dominated by r1; r3 diverged; r2 stays (its loss is lower by 4e-5 nats).
    assert set(names) == {"r0", "r1", "r2", "r2-int8", "r2-tie"}
    assert dominates((1, 1, 1), (1, 2, 1)) and not dominates((1, 1, 1), (1, 1, 1))


def test_choice_is_lowest_loss_with_ties_to_fewer_bytes():
    r = recommend(SYNTH)
    assert r["choice"]["name"] == "r2-tie" and r["closest"] is None  # 4e-5 nats = tie
    r = recommend(SYNTH, max_latency_ms=2.0)
    assert r["choice"]["name"] == "r2-int8"
    assert set(r["feasible"]) == {"r0", "r1", "r2-int8"}
    r = recommend(SYNTH, max_bytes=400, max_loss=2.9)
    assert r["choice"]["name"] == "r1"


def test_nothing_fits_names_the_closest_by_relative_violation():
    r = recommend(SYNTH, max_latency_ms=0.5, max_bytes=50)
    # r0 is 100% over both limits (sum 2.0); every other model is further off.
    assert r["choice"] is None and r["closest"]["name"] == "r0"
    assert "none of the" in r["reason"] and "r0" in r["reason"]
    # Only a loss limit: the violation is loss / 1.9 - 1, so the lowest loss is closest. r2
    # (2.0) beats r2-tie (2.00004): the 1e-4 loss tie belongs to the choice rule, not to closest.
    r = recommend(SYNTH, max_loss=1.9, batch=32)
    assert r["choice"] is None and r["closest"]["name"] == "r2"


def test_closest_ties_on_violation_go_to_lower_loss_then_name():
    # Every model is 100% over the 100-byte limit (and meets the latency limit): equal
    # violations, so the lower loss wins; "b-big" and "c-big" tie on loss too, so the name wins.
    summary = {"rungs": [], "variants": [_variant("c-big", 2.0, 1.0, 200),
                                         _variant("a-worse", 2.5, 1.0, 200),
                                         _variant("b-big", 2.0, 1.0, 200)]}
    r = recommend(summary, max_bytes=100, max_latency_ms=5.0)
    assert r["choice"] is None and r["closest"]["name"] == "b-big"
    summary["variants"].pop(2)
    assert recommend(summary, max_bytes=100)["closest"]["name"] == "c-big"


def test_bad_limits_and_batches_are_user_errors():
    with pytest.raises(UserError, match="positive"):
        recommend(SYNTH, max_bytes=-1)
    with pytest.raises(UserError, match="batch 8"):
        recommend(SYNTH, batch=8)


def _limits(summary: dict) -> dict[str, list[str]]:
    """The limits of each `recommend` below, from the study's models: some fit (a byte budget
    between the smallest and the largest model), exactly one fits (the smallest file size and
    the lowest loss among those files; the distilled student shares rung 0's), none fits (half
    the smallest file)."""
    everything = models(summary)
    by_bytes = sorted(everything, key=lambda m: m["bytes"])
    smallest_bytes = by_bytes[0]["bytes"]
    smallest = min((m for m in everything if m["bytes"] == smallest_bytes),
                   key=lambda m: m["val_loss"])
    return {"some": ["--max-bytes", str(by_bytes[len(by_bytes) // 2]["bytes"]), "--batch", "32"],
            "one": ["--max-bytes", str(smallest_bytes), "--max-loss", repr(smallest["val_loss"])],
            "none": ["--max-bytes", str(smallest_bytes // 2), "--max-latency-ms", "1e6"]}


@pytest.fixture(scope="module")
def recommended(study, summary) -> dict:
    """Each `recommend --json` of `_limits` and the human output of one with a loose limit
    (`scalelab_each`: one process each): {case: process}."""
    cases = {k: [*args, "--json"] for k, args in _limits(summary).items()}
    cases["human"] = ["--max-loss", "100"]
    procs = scalelab_each(*[["recommend", study, *args] for args in cases.values()])
    return dict(zip(cases, procs, strict=True))


def _rec(recommended: dict, case: str) -> dict:
    proc = recommended[case]
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_recommend_for_some_one_and_none(recommended, summary):
    everything = models(summary)
    limits = _limits(summary)
    # Some fit: a byte budget between the smallest and the largest model.
    limit = int(limits["some"][1])
    out = _rec(recommended, "some")
    fits = [m for m in everything if m["bytes"] <= limit]
    assert 1 < len(fits) < len(everything)
    # The documented rule in full: loss in 1e-4 nat steps, then bytes, latency, name.
    assert out["choice"]["name"] == min(fits, key=lambda m: (
        round(m["val_loss"] / 1e-4), m["bytes"], m["latency_ms"]["32"], m["name"]))["name"]
    assert out["choice"]["val_loss"] <= min(m["val_loss"] for m in fits) + 1e-4
    assert out["closest"] is None and out["reason"]
    # Exactly one fits: the smallest file size and the lowest loss among those files.
    smallest_bytes = int(limits["one"][1])
    tied = [m for m in everything if m["bytes"] == smallest_bytes]
    smallest = min(tied, key=lambda m: m["val_loss"])
    assert all(m["val_loss"] > smallest["val_loss"] for m in tied if m is not smallest)
    out = _rec(recommended, "one")
    assert out["choice"]["name"] == smallest["name"] and out["feasible"] == [smallest["name"]]
    # None fits: half the smallest file; exit code 0, a null choice and the closest model.
    out = _rec(recommended, "none")
    assert out["choice"] is None and out["closest"]["name"] == smallest["name"]
    assert "none of the" in out["reason"]
    # Models look like summary.json's entries.
    assert {"name", "val_loss", "latency_ms", "bytes"} <= set(out["closest"])


def test_cli_recommend_human_output(recommended):
    proc = recommended["human"]
    assert proc.returncode == 0 and "choice:" in proc.stdout and "frontier" in proc.stdout
