"""The plan for a compute target (`scalelab plan --compute C`): its batched fit is the study's
Approach-3 fit, without noise it predicts the truth's L*(C), with noise more budgets and seeds
help, it chooses within the budget, and the CLI writes an IsoFLOP spec `scalelab run` accepts
or refuses bad input in one line (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws.fit import Law
from scalelab.plan.simulation import fit_designs
from scalelab.plan.two_axis import (
    IsoLadder,
    assumed_truth,
    chinchilla_law,
    chinchilla_prior,
    draw,
    isoflop_ladders,
    isoflop_spec,
    make_two_axis_plan,
    optimal_loss,
    simulate_isoflop,
    two_axis_source,
    wsd_decay,
)
from tests.helpers import assert_refused, run_main, scalelab
from tests.laws import two_axis_synth as synth

C = 1e18
DEFAULT_STUDY = Path(__file__).parent / "data" / "default_study"


def _budgets(k: int, top: float = C / 10) -> tuple[float, ...]:
    return tuple(top / 10 ** (0.5 * (k - 1 - i)) for i in range(k))


def test_candidates_span_budgets_sizes_and_seeds():
    ladders = isoflop_ladders(C, reach=10)
    assert {len(lad.budgets) for lad in ladders} == {3, 4, 5}
    assert {lad.points for lad in ladders} == {4, 5, 7}
    assert {lad.repeats for lad in ladders} == {1, 2, 3}
    assert all(C / lad.budgets[-1] >= 10 * (1 - 1e-3) for lad in ladders)
    lad = ladders[0]
    X, budget = lad.design(assumed_truth(chinchilla_prior(), 0.01).per_unit)
    assert len(X) == lad.runs and np.allclose(6 * X[:, 0] * X[:, 1], budget)


def test_without_noise_the_plan_predicts_the_optimum():
    """sigma 0: every synthetic ladder is the law itself, so its fit is the truth and its
    L*(C) the truth's: the error is 0 and P is 1, whatever the ladder."""
    truth = assumed_truth(chinchilla_prior(), 0.0)
    ladders = [IsoLadder(_budgets(3), 4), IsoLadder(_budgets(5, C / 30), 7, 2)]
    for out in simulate_isoflop(ladders, truth, C, sims=4):
        assert np.max(np.abs(out.errors)) < 1e-6
        assert out.p_within == 1.0


def test_batched_fit_is_the_study_fit():
    """The batch's L*(C) of each synthetic ladder equals the one the study's Approach-3 fit
    (`Law.fit` of the chinchilla form: its grid of starts and polish) gives it."""
    truth = assumed_truth(chinchilla_prior(), 0.02)
    X, ly = draw(IsoLadder(_budgets(4), 5), truth, 3, seed=1)
    thetas = fit_designs(truth.law, [(X, ly, None)])[0]
    batch = optimal_loss(truth.law, thetas, C, truth.per_unit)
    for row, b in zip(ly, batch, strict=True):
        law = Law("chinchilla", bootstrap=0).fit(X, np.exp(row))
        exact = optimal_loss(law, law.theta_[None, :], C, truth.per_unit)[0]
        assert b == pytest.approx(exact, rel=1e-4)


def test_noise_lowers_p_and_more_budgets_and_seeds_do_not():
    truth = assumed_truth(chinchilla_prior(), 0.02)
    small, large = simulate_isoflop([IsoLadder(_budgets(3), 4, 1), IsoLadder(_budgets(5), 5, 3)],
                                    truth, C, tolerance=0.01, sims=200, seed=3)
    assert small.p_within < 1.0
    assert large.p_within >= small.p_within - 0.05
    assert large.record()["spread_width"] < small.record()["spread_width"]


def _plan(**kw):
    truth = assumed_truth(chinchilla_prior(), 0.01)
    return make_two_axis_plan(truth, C, screen_sims=20, final_sims=40, study_draws=0, **kw)


def test_the_choice_fits_the_budget_and_a_refused_ladder_is_dropped():
    cheapest = min(lad.flops for lad in isoflop_ladders(C))
    plan = _plan(budget=4 * cheapest, refused=lambda r: "refused" if r["repeats"] == 1 else None)
    chosen = plan.chosen
    assert chosen["flops"] <= 4 * cheapest and chosen["repeats"] > 1
    per = [r["p_per_pflop"] for r in plan.rows]
    assert per == sorted(per, reverse=True)
    assert plan.settings["optimum"]["loss"] == pytest.approx(
        assumed_truth(chinchilla_prior(), 0.01).optimum(C)["loss"])


def test_refusals_budget_and_every_ladder_refused():
    with pytest.raises(UserError, match="the smallest that fits needs"):
        _plan(budget=1e3)
    with pytest.raises(UserError, match="can be trained.*too small.*larger --compute"):
        _plan(refused=lambda r: "too small")


def test_spec_is_an_isoflop_ladder_the_loader_reads():
    from scalelab.spec import BUDGET_KEYS, parse_spec, preset_spec

    base = preset_spec("default").model_dump(mode="json", exclude_none=True)
    chosen = {"budgets": [1e12, 3.16e12, 1e13], "points": 5, "repeats": 2, "span": 4.0,
              "tokens_per_param": 20.0}
    spec = parse_spec(isoflop_spec(base, chosen))
    assert spec.ladder.two_axis and spec.ladder.isoflop is not None
    assert spec.ladder.isoflop.budgets == chosen["budgets"] and spec.ladder.isoflop.points == 5
    assert spec.ladder.repeats == 2
    assert all(getattr(spec.train, k) in (None, type(spec.train).model_fields[k].default)
               for k in BUDGET_KEYS)


def test_wsd_cost_is_what_the_ladder_planner_trains():
    """With WSD (the default on an IsoFLOP ladder) a size's runs share a trunk: the plan's cost
    matches the rungs `scalelab run` lays out (each trunk its budget, each branch its budget's
    share over its own cool-down steps), an independent path, and lies below every run whole."""
    from scalelab.ladder import plan_ladder
    from scalelab.plan import shape_realizer
    from scalelab.spec import parse_spec, preset_spec
    from scalelab.study import resolve

    base = preset_spec("default").model_dump(mode="json", exclude_none=True)
    lad = IsoLadder((1e12, 3.16e12, 1e13), 5, 2)
    realize = shape_realizer(base)
    spec = parse_spec(isoflop_spec(base, _row_of(lad)))
    res = resolve(spec)
    rungs = plan_ladder(spec, res.task, res.family)
    branches = [r for r in rungs if r.trunk is not None]
    assert branches  # sizes recur across these budgets, so some runs are branches
    trained = sum(r.budget * (r.decay_steps / r.steps if r.trunk is not None else 1.0)
                  for r in rungs)
    wsd = lad.wsd_flops(wsd_decay(isoflop_spec(base, _row_of(lad))), realize)
    assert wsd == pytest.approx(trained, rel=0.01)
    assert wsd < lad.flops == pytest.approx(sum(r.budget for r in rungs), rel=1e-9)
    assert wsd_decay({**base, "train": {"schedule": "cosine"}}) is None


def _row_of(lad: IsoLadder) -> dict:
    return {"budgets": list(lad.budgets), "points": lad.points, "repeats": lad.repeats,
            "span": lad.span, "tokens_per_param": lad.tokens_per_param}


# -- sources and the CLI --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_axis_study(tmp_path_factory) -> Path:
    """A two-axis study's summary.json: synthetic IsoFLOP rungs (tests/laws/two_axis_synth.py),
    the study's own fit of them, and the example IsoFLOP spec."""
    from scalelab.laws.two_axis import fit_two_axis
    from scalelab.spec import load_spec

    rows = synth.isoflop_rows(points=5, seed=0, sigma=0.01)
    record = fit_two_axis(rows, bootstrap=20)
    spec = load_spec(Path(__file__).parents[2] / "examples" / "isoflop-pycode.yaml")
    folder = tmp_path_factory.mktemp("two-axis-study")
    (folder / "summary.json").write_text(json.dumps({
        "rungs": rows, "fits": [record],
        "study": {"spec": spec.model_dump(mode="json", exclude_none=True)}}))
    (folder / "fit.json").write_text(json.dumps(record))
    return folder


def test_a_two_axis_study_gives_its_law_noise_and_budgets(two_axis_study: Path):
    src = two_axis_source(two_axis_study)
    record = json.loads((two_axis_study / "fit.json").read_text())
    assert src.truth.source == "measured"
    assert src.truth.sigma == pytest.approx(record["approach3"]["residual_sigma"])
    assert src.truth.law.params_ == pytest.approx(record["approach3"]["params"])
    assert src.truth.per_unit.source == "measured"
    assert src.budgets == pytest.approx(list(synth.BUDGETS))
    assert src.spec["ladder"]["isoflop"]["points"] == 4
    assumed = two_axis_source(two_axis_study, noise=0.005)
    assert assumed.truth.source == "assumed" and assumed.truth.sigma == 0.005


def test_chinchilla_shared_is_the_chinchilla_form_with_one_exponent():
    law = chinchilla_law({"law": "chinchilla_shared",
                          "params": {"E": 1.0, "A": 10.0, "B": 20.0, "eta": 0.3}}, "fit.json")
    assert law.params_["alpha"] == law.params_["beta"] == 0.3
    with pytest.raises(UserError, match="needs a law in N and D"):
        chinchilla_law({"law": "power", "params": {"E": 1.0, "A": 2.0, "alpha": 0.3}}, "x")


def test_cli_plans_a_prior_law_and_writes_a_spec_run_accepts(two_axis_study: Path,
                                                             tmp_path: Path):
    """The real entry point, on a prior (a two-axis fit.json, --noise assumed): the plan, its
    table, and plan.yaml, which the loader and the ladder planner of `scalelab run` accept."""
    from scalelab.ladder import plan_ladder
    from scalelab.spec import load_spec
    from scalelab.study import resolve

    out = tmp_path / "plan"
    proc = scalelab("plan", "--compute", "1e15", "--law", two_axis_study / "fit.json",
                    "--noise", "1%", "--sims", "10", "--out", out, check=True)
    assert "C = 1e+15 FLOPs" in proc.stdout and "chosen:" in proc.stdout
    plan = json.loads((out / "plan.json").read_text())
    chosen = plan["chosen"]
    assert plan["settings"]["kind"] == "compute" and chosen["ratio"] >= 3
    assert chosen["study_fit"]["draws"] == 1
    assert (out / "plan.png").stat().st_size > 0
    spec = load_spec(out / "plan.yaml")
    assert spec.ladder.isoflop is not None
    assert spec.ladder.isoflop.budgets == chosen["budgets"]
    res = resolve(spec)
    rungs = plan_ladder(res.spec, res.task, res.family)
    assert len(rungs) == chosen["runs"]


@pytest.mark.parametrize(("args", "words"), [
    (("--compute", "1e13"), ("inside the measured budgets", "plan a compute above 3e+13")),
    (("--compute", "1e15", "--budget", "1e9"), ("too small", "the smallest that fits needs")),
    (("--compute", "1e15", "--target", "1e6"), ("not both",)),
])
def test_bad_input_is_one_line(two_axis_study: Path, tmp_path: Path, capsys, monkeypatch,
                               args, words):
    proc = run_main(capsys, monkeypatch, "plan", "--from", two_axis_study, *args, "--out",
                 tmp_path / "p")
    assert_refused(proc, *words)


def test_a_one_axis_study_or_a_prior_without_noise_is_refused(tmp_path: Path, capsys,
                                                              monkeypatch):
    assert_refused(run_main(capsys, monkeypatch, "plan", "--from", DEFAULT_STUDY, "--compute",
                            "1e15", "--out", tmp_path / "p"), "ladder in N alone", "--target")
    assert_refused(run_main(capsys, monkeypatch, "plan", "--compute", "1e15", "--out",
                            tmp_path / "p"), "--noise")


def test_a_compute_too_small_for_the_family_is_refused(tmp_path: Path, capsys, monkeypatch):
    """At 1e9 FLOPs every budget's sizes fall on the family's smallest shapes."""
    assert_refused(run_main(capsys, monkeypatch, "plan", "--compute", "1e9", "--noise", "1%",
                            "--out", tmp_path / "p"), "no IsoFLOP ladder",
                   "choose a larger --compute")
