"""The two-axis fit on known data: a synthetic L(N, D) with known parameters and noise, sampled
on IsoFLOP profiles, must give back a, b and the optimum inside their intervals, and not a
wrong truth; the holdout of the largest budget within 2%; bad input one line.

Seeds: the data of `isoflop_rows(seed=0)` (noise 0.5%), bootstrap seed 0 with 200 resamples.
Over data seeds 0-29 (same settings) the 95% intervals held the true value in 28/30 (a and b,
Approach 2), 30/30 (a and b, Approach 3), 29/30 (N* at the largest budget, Approach 2) and
30/30 (Approach 3); the holdout was within 2% in 29/30: seed 0 is not a picked one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws.isoflop import FlopsPerUnit
from scalelab.laws.optimal import optimal_allocation
from scalelab.laws.two_axis import _why, answer_for, fit_two_axis, runs_from_rows
from tests.laws.two_axis_synth import (
    ALPHA,
    BETA,
    BUDGETS,
    flops_per_unit,
    grid_rows,
    isoflop_rows,
    true_exponents,
    true_optimum,
)

BOOT = 200


def inside(v: float, iv: list[float] | None) -> bool:
    assert iv is not None, "no interval"
    return iv[0] <= v <= iv[1]


@pytest.fixture(scope="module")
def record() -> dict:
    return fit_two_axis(isoflop_rows(seed=0), bootstrap=BOOT, seed=0)


def test_record_is_json_and_has_the_contract_keys(record):
    json.dumps(record)  # JSON-serialisable, nothing numpy left
    for key in ("law", "approach3", "approach2", "comparison", "agree", "why", "holdout",
                "predictions", "answer", "frontier", "flops_per_unit", "params", "intervals"):
        assert key in record, key
    assert record["law"] == "two_axis" and record["ladder"] == "isoflop"
    assert record["chosen"] == "approach3" and record["approach3"]["degenerate"] is None
    assert record["approach3"]["on_bound"] == []
    assert [b["compute"] for b in record["approach2"]["budgets"]] == list(BUDGETS)
    assert all(b["vertex_inside"] for b in record["approach2"]["budgets"])
    assert record["flops_per_unit"]["source"] == "measured"


def test_recovers_a_and_b_inside_their_intervals_and_rejects_a_wrong_truth(record):
    a_true, b_true = true_exponents()
    comp = record["comparison"]
    for name, truth in (("a", a_true), ("b", b_true)):
        for approach in ("approach2", "approach3"):
            iv = comp[name][approach]["interval"]
            assert inside(truth, iv), (name, approach, truth, iv)
            # A truth 0.1 off (Kaplan-like allocation is ~0.3 off) lies outside.
            assert not inside(truth + 0.1, iv) and not inside(truth - 0.1, iv), (name, iv)
    # Approach 3's own limit, beta/(alpha+beta), is the law's exponent where f(N) ∝ N.
    assert inside(BETA / (ALPHA + BETA), record["approach3"]["a_limit"]["interval"])


def test_recovers_the_optimum_at_the_largest_budget(record):
    n_true, d_true, l_true = true_optimum(BUDGETS[-1])
    largest = record["comparison"]["largest"]
    for approach in ("approach2", "approach3"):
        got = largest[approach]
        assert inside(n_true, got["N"]["interval"]), (approach, n_true, got["N"])
        assert inside(d_true, got["D"]["interval"]), (approach, d_true, got["D"])
        assert inside(l_true, got["loss"]["interval"]), (approach, l_true, got["loss"])
        assert not inside(2 * n_true, got["N"]["interval"])
        assert not inside(n_true / 2, got["N"]["interval"])
    assert record["agree"] is True and record["why"] is None


def test_holdout_of_the_largest_budget_is_within_two_percent(record):
    ho = record["holdout"]
    assert ho["rule"] == "largest_budget" and ho["x"] == BUDGETS[-1]
    assert ho["max_fit_size"] == BUDGETS[-2] and ho["n_test"] == 5 and ho["n_fit"] == 15
    assert abs(ho["rel_error"]) < 0.02 and ho["within_tolerance"]
    _, _, l_true = true_optimum(BUDGETS[-1])
    assert abs(ho["measured"] / l_true - 1) < 0.01  # the parabola's minimum is the true one
    n_true = true_optimum(BUDGETS[-1])[0]
    assert inside(n_true, ho["n_star"]["interval"])


def test_predictions_answer_and_warnings(record):
    preds = record["predictions"]
    assert [p["factor"] for p in preds] == [10.0, 100.0]
    for p in preds:
        n_true, _, l_true = true_optimum(p["compute"])
        assert inside(n_true, p["intervals"]["N"]) and inside(l_true, p["intervals"]["loss"])
        # The holdout checked a 3x step: 10x and 100x are beyond the evidence.
        assert p["beyond_evidence"] and "3x only" in p["warning"]
    top = record["approach3"]["allocations"][-1]
    assert record["answer"].startswith("for 3e+13 FLOPs, train N ≈ ")
    assert f"expected loss {top['loss']:.4g} [" in record["answer"] and "bytes" in record["answer"]
    again = answer_for(record, [BUDGETS[-1]])[0]  # from the stored draws only
    assert again["N"] == pytest.approx(top["N"], rel=1e-6)
    assert again["answer"].startswith("for 3e+13 FLOPs")


def test_measured_flops_per_unit_moves_the_optimum_off_6nd():
    """With f(N) = 6N + overhead the optimum differs from the 6·N·D closed form, and the search
    along the measured line finds the brute-force optimum of the true law."""
    from scalelab.laws import Law

    law = Law.from_summary({"law": "chinchilla", "x": ["N", "D"],
                            "params": {"E": 1.7, "A": 40.0, "B": 73.0, "alpha": ALPHA,
                                       "beta": BETA}})
    sizes = np.geomspace(1e3, 1e7, 400)  # dense: this checks the search, not interpolation
    per_unit = FlopsPerUnit(tuple(sizes), tuple(flops_per_unit(sizes) / sizes), "measured")
    for c in BUDGETS:
        row = optimal_allocation(law, c, per_unit=per_unit)[0]
        n_true, d_true, l_true = true_optimum(c)
        assert row["N"] == pytest.approx(n_true, rel=2e-3)
        assert row["D"] == pytest.approx(d_true, rel=2e-3)
        assert row["loss"] == pytest.approx(l_true, rel=1e-6)
        closed = optimal_allocation(law, c)[0]  # C = 6·N·D: ignores the overhead
        assert abs(closed["N"] / n_true - 1) > 0.03  # 3% at 3e13, 10% at 1e12


def test_grid_ladder_gets_approach3_only():
    # Forced: on this grid the shared-exponent law wins the inner holdout on evidence
    # (tests/laws/test_selection.py); here Approach 3 is what is checked.
    rec = fit_two_axis(grid_rows(), bootstrap=BOOT, seed=0, law="chinchilla")
    assert rec["ladder"] == "grid" and rec["approach2"] is None and rec["agree"] is None
    assert rec["holdout"]["rule"] == "largest:1" and rec["holdout"]["x_name"] == "N"
    assert rec["chosen"] == "approach3" and len(rec["predictions"]) == 2
    assert rec["answer"].startswith("for ")


def test_a_parabola_needs_three_sizes_and_an_outside_vertex_is_said():
    rows = isoflop_rows(seed=1)
    # Budget 1e12 keeps 2 of its rungs: its parabola is skipped with a reason.
    rows = [r for r in rows if r["budget"] != 1e12] + [r for r in rows if r["budget"] == 1e12][:2]
    rec = fit_two_axis(rows, bootstrap=BOOT, seed=0)
    skipped = rec["approach2"]["skipped_budgets"]
    assert [s["compute"] for s in skipped] == [1e12] and "3 sizes" in skipped[0]["reason"]
    assert len(rec["approach2"]["budgets"]) == 3 and rec["approach2"]["a"] is not None

    # Sizes all well below the optimum: the largest budget's vertex lies beyond them.
    low = isoflop_rows(seed=1, span=4.0, shift=0.12, points=4)
    rec = fit_two_axis(low, bootstrap=BOOT, seed=0)
    top = rec["approach2"]["budgets"][-1]
    assert not top["vertex_inside"]
    why = _why(rec["approach2"], rec["approach3"], runs_from_rows(low), BUDGETS[-1])
    assert "outside the sizes it sampled" in why
    if rec["agree"] is False:
        assert rec["why"] == why


@pytest.mark.parametrize("rows, message", [
    ([{"status": "done", "n_nonembed": n, "D": 1e6, "val_loss": 3.0 + 1e4 / n}
      for n in (1e4, 2e4, 4e4, 8e4, 1.6e5, 3.2e5)], "every finished rung has D = 1e+06"),
    ([{"status": "done", "n_nonembed": 1e5, "D": d, "val_loss": 3.0 + 1e4 / d}
      for d in (1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7)], "every finished rung has N = 1e+05"),
    ([{"status": "done", "n_nonembed": n, "D": d, "val_loss": 3.0}
      for n, d in ((1e4, 1e6), (2e4, 2e6), (4e4, 1e6), (1e4, 2e6))], "4 distinct (N, D) points"),
    ([{"status": "diverged", "n_nonembed": 1e4, "D": 1e6, "val_loss": None}],
     "no finished rung"),
])
def test_bad_input_is_one_line(rows, message):
    with pytest.raises(UserError, match=None) as err:
        fit_two_axis(rows, bootstrap=0)
    assert message in str(err.value) and "\n" not in str(err.value)


# -- scalelab optimal STUDY --------------------------------------------------------------------


def _study(folder, rows: list[dict]):
    """A study folder holding `rows` as finished rungs (budget and epochs in each plan, where a
    two-axis ladder keeps them)."""
    from scalelab.storage import StudyStore

    with StudyStore.create_or_open(folder) as store:
        store.add_rungs([{"rung": i, "family": "gpt", "shape": {}, "target_n": r["n_nonembed"],
                          "n_params": int(1.2 * r["n_nonembed"]),
                          "n_nonembed": int(r["n_nonembed"]), "D": int(r["D"]), "unit": "byte",
                          "steps": 10, "batch_size": 1, "units_per_step": 1, "lr": 1e-3,
                          "warmup_steps": 1, "seed": i, "budget": r.get("budget"),
                          "train_units": 30_000_000, "schedule": r.get("schedule")}
                         for i, r in enumerate(rows)])
        for i, r in enumerate(rows):
            store.record_rung(i, {"status": "done", "D": int(r["D"]), "steps": 10,
                                  "train_seconds": 1.0, "val_loss": r["val_loss"],
                                  "train_loss": r["train_loss"], "flops": r["flops"]})
    return folder


def test_optimal_answers_from_a_study_folder(tmp_path, capsys):
    from tests.laws.test_cli import run_main

    folder = _study(tmp_path / "iso", isoflop_rows(seed=0))
    code, out, err = run_main(["optimal", folder, "--compute", "3e13,3e14", "--bootstrap",
                               str(BOOT), "--out", tmp_path / "opt.json"], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "opt.json").read_text())
    assert [r["compute"] for r in rows] == [3e13, 3e14]
    for r in rows:
        n_true = true_optimum(r["compute"])[0]
        assert inside(n_true, r["intervals"]["N"]) and r["source"] == "approach3"
    assert "for 3e+13 FLOPs, train N ≈ " in out and "Approach 2 and Approach 3 agree" in out
    assert "warning" in out and "10x the largest budget trained" in out
    # the same answer as the Python API on the same rungs
    rec = fit_two_axis(isoflop_rows(seed=0), bootstrap=BOOT, seed=0)
    assert rows[0]["N"] == pytest.approx(rec["approach3"]["allocations"][-1]["N"], rel=0.02)


def test_optimal_refuses_a_study_that_is_not_two_axis(tmp_path, capsys):
    from tests.laws.test_cli import run_main

    one_d = [dict(r, D=2e7, budget=None) for r in grid_rows()]
    folder = _study(tmp_path / "n_only", one_d[::3])  # one D, the N-only ladder of old
    code, out, err = run_main(["optimal", folder, "--compute", "1e13"], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "is not a two-axis study" in lines[0] and "D = 2e+07" in lines[0]
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(["optimal", tmp_path / "empty", "--compute", "1e13"], capsys)
    assert code == 2 and "without study.db" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main(["optimal", folder, "--compute", "1e13", "--k", "6"], capsys)
    assert code == 2 and "--k applies to a fit.json" in err
