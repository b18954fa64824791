"""Selection by an inner holdout: each candidate law fitted without the largest fitted size (or
budget) and judged on it; the winner answers, every candidate's inner and outer holdout in the
record; --law forces one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scalelab.laws import fit_study_power
from scalelab.laws.selection import MARGIN, pick
from scalelab.laws.two_axis import fit_two_axis
from tests.laws.test_cli import _bent_csv, run_main
from tests.laws.two_axis_synth import grid_rows, isoflop_rows


def test_on_a_grid_the_shared_exponent_law_wins_on_evidence():
    """Approach 3 fitted on 2 sizes x 3 D (1 degree of freedom) misses the next size by +7%;
    the shared-exponent law (4 parameters) by -0.3%: it answers, and its outer holdout (the
    largest size, which the choice never saw) is the closer one too."""
    rec = fit_two_axis(grid_rows(), bootstrap=100, seed=0)
    rows = {r["law"]: r for r in rec["candidates"]}
    assert rows["chinchilla"]["inner"]["rel_error"] == pytest.approx(0.0697, abs=0.002)
    assert abs(rows["chinchilla_shared"]["inner"]["rel_error"]) < 0.005
    assert "needs IsoFLOP budgets" in rows["frontier"]["inner_skipped"]
    assert rec["selection"]["selected"] == rec["chosen"] == "chinchilla_shared"
    assert abs(rows["chinchilla_shared"]["outer"]["rel_error"]) < abs(
        rows["chinchilla"]["outer"]["rel_error"])
    assert rec["holdout"]["law"] == "chinchilla_shared"
    assert rec["selected_fit"]["law"] == "chinchilla_shared"
    assert rec["answer"] and rec["predictions"][0]["source"] == "chinchilla_shared"
    # the record answers again from its stored draws, by the same law
    from scalelab.laws.two_axis import answer_for

    again = answer_for(rec, [rec["predictions"][0]["compute"]])[0]
    assert again["N"] == pytest.approx(rec["predictions"][0]["N"], rel=1e-6)


def test_a_gap_within_the_margin_keeps_the_default():
    """On an IsoFLOP ladder of Chinchilla's form the shared-exponent law comes 0.23% closer on
    the inner budget: less than the margin (a quarter of the 2% tolerance), so Approach 3
    answers."""
    rec = fit_two_axis(isoflop_rows(seed=0), bootstrap=100, seed=0)
    rows = {r["law"]: r for r in rec["candidates"]}
    gap = abs(rows["chinchilla"]["inner"]["rel_error"]) - abs(
        rows["chinchilla_shared"]["inner"]["rel_error"])
    assert 0 < gap < MARGIN * 0.02 == rec["selection"]["margin"]
    assert rec["selection"]["selected"] == "chinchilla" and rec["chosen"] == "approach3"
    for r in rec["candidates"][:2]:
        assert r["inner"]["x"] == pytest.approx(1e13) and r["outer"]["x"] == pytest.approx(3e13)


def test_pick_rules():
    def row(law, inner):
        return {"law": law, "inner": None if inner is None else {"rel_error": inner}}

    assert pick([row("a", 0.02), row("b", 0.001)], 0.005) == ("b", True)
    assert pick([row("a", 0.004), row("b", 0.001)], 0.005) == ("a", True)
    assert pick([row("a", None), row("b", 0.03), row("c", -0.01)], 0.005) == ("c", True)
    assert pick([row("a", None), row("b", None)], 0.005) == ("a", False)


def test_one_input_csv_chooses_the_bent_law_and_law_forces_one(tmp_path, capsys):
    path = _bent_csv(tmp_path / "bent.csv")  # a broken power law, steepening at 1e6
    code, out, err = run_main(["fit", path, "--x", "N", "--bootstrap", "0", "--out",
                               tmp_path / "fit.json"], capsys)
    assert code == 0, err
    fit = json.loads((tmp_path / "fit.json").read_text())
    rows = {r["law"]: r for r in fit["candidates"]}
    assert set(rows) == {"power", "bnsl"} and fit["selection"]["on_evidence"]
    assert fit["law"] == fit["selection"]["selected"] == "bnsl"
    assert abs(rows["bnsl"]["inner"]["rel_error"]) < 0.01 < abs(rows["power"]["inner"]["rel_error"])
    assert rows["power"]["outer"]["max_fit_size"] == pytest.approx(np.geomspace(1e3, 1e9, 30)[-2])
    assert "laws chosen by inner holdout" in out
    code, _, err = run_main(["fit", path, "--x", "N", "--law", "power", "--bootstrap", "0",
                             "--out", tmp_path / "forced.json"], capsys)
    assert code == 0, err
    forced = json.loads((tmp_path / "forced.json").read_text())
    assert forced["law"] == "power" and "candidates" not in forced


def test_a_study_ladder_keeps_power_when_nothing_else_can_be_judged():
    """Six sizes: bnsl (6 parameters) has too few sizes below the two largest to be judged,
    so power answers and the record is the power law's, digit for digit."""
    n = np.geomspace(1e4, 1e6, 6)
    loss = (1.3 + 25.0 * n**-0.3) * np.exp(np.random.default_rng(0).normal(0, 0.01, 6))
    fit = fit_study_power(n, loss, bootstrap=50, seed=0)
    rows = {r["law"]: r for r in fit["candidates"]}
    assert fit["law"] == fit["selection"]["selected"] == "power"
    assert rows["bnsl"]["inner"] is None and "6 parameters" in rows["bnsl"]["inner_skipped"]
    assert rows["power"]["inner"] is not None
    forced = fit_study_power(n, loss, bootstrap=50, seed=0, law="power")
    assert forced["params"] == fit["params"] and forced["holdout"] == fit["holdout"]
