"""One holdout record for every rule, the study's fit record, and reading the older shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scalelab.cli.laws_output import holdout_lines
from scalelab.cli.study import fit_lines
from scalelab.laws import Law, fit_study_power, holdout
from scalelab.laws.plots import fit_figure
from scalelab.records import FitRecord, Holdout
from tests.helpers import DATA
from tests.laws.test_cli import _csv, run_main
from tests.laws.util import HOLDOUT_KEYS

# The fit record of the schema-1 study kept in tests/data (its summary.json and study.db agree).
V1_FIT = json.loads((DATA / "v1_study" / "summary.json").read_text())["fits"][0]
V1_POINT = {"x": 50112.0, "measured": 2.5961263179779053, "predicted": 2.679264306989033,
            "lo": None, "hi": None, "rel_error": 0.03202386125644425}


def test_old_study_holdout_reads_as_a_largest_1_record():
    ho = Holdout.from_dict(V1_FIT["holdout"])
    assert ho.to_dict() == {
        "rule": "largest:1", "n_fit": None, "n_test": 1, "max_fit_size": None,
        "points": [V1_POINT], "folds": None, "mean_rel_error": 0.03202386125644425,
        "mean_abs_rel_error": 0.03202386125644425, "params": None, "on_bound": None,
        "x": V1_POINT["x"], "predicted": V1_POINT["predicted"],
        "measured": V1_POINT["measured"], "rel_error": 0.03202386125644425, "interval": None,
    }
    assert ho.largest() == V1_POINT


def test_old_shapes_with_lo_hi_without_x_or_rel_error():
    ho = Holdout.from_dict({"predicted": 2.2, "measured": 2.0, "lo": 2.1, "hi": 2.4})
    assert ho.points == [{"x": None, "measured": 2.0, "predicted": 2.2, "lo": 2.1, "hi": 2.4,
                          "rel_error": pytest.approx(0.1)}]
    assert ho.largest()["rel_error"] == pytest.approx(0.1)
    ho = Holdout.from_dict({"x": 9.0, "predicted": 1.5, "measured": 2.0, "rel_error": -0.25,
                            "interval": [1.25, 1.75]})
    assert (ho.points[0]["lo"], ho.points[0]["hi"]) == (1.25, 1.75)
    assert (ho.mean_rel_error, ho.mean_abs_rel_error) == (-0.25, 0.25)
    # `scalelab fit --holdout loso` wrote n_folds and no points
    old_loso = {"rule": "loso", "n_folds": 2, "n_test": 4, "mean_rel_error": 0.01,
                "mean_abs_rel_error": 0.03,
                "folds": [{"size": 1e4, "n_test": 2, "mean_rel_error": 0.04,
                           "mean_abs_rel_error": 0.04},
                          {"size": 1e5, "n_test": 2, "mean_rel_error": -0.02,
                           "mean_abs_rel_error": 0.02}]}
    ho = Holdout.from_dict(old_loso)
    assert (ho.rule, ho.n_test, ho.points, len(ho.folds)) == ("loso", 4, [], 2)
    assert ho.largest() is None
    assert holdout_lines(old_loso) == [
        "holdout loso: each of 2 sizes predicted from the others: mean relative error "
        "+1.00%, mean |error| 3.00%"]


def test_round_trip_and_largest_averages_the_runs_of_the_largest_size():
    pts = [{"x": 1e5, "measured": 3.0, "predicted": 3.3, "lo": 3.1, "hi": 3.5, "rel_error": 0.1},
           {"x": 1e6, "measured": 2.0, "predicted": 2.1, "lo": 2.0, "hi": 2.2, "rel_error": 0.05},
           {"x": 1.004e6, "measured": 2.2, "predicted": 2.1, "lo": 1.8, "hi": 2.4,
            "rel_error": -0.1 / 2.2}]
    ho = Holdout(rule="largest:2", n_fit=7, n_test=3, max_fit_size=5e4, points=pts,
                 params={"E": 1.0, "A": 2.0, "alpha": 0.3}, on_bound=[])
    assert ho.mean_rel_error == pytest.approx((0.1 + 0.05 - 0.1 / 2.2) / 3)
    assert ho.mean_abs_rel_error == pytest.approx((0.1 + 0.05 + 0.1 / 2.2) / 3)
    assert Holdout.from_dict(json.loads(json.dumps(ho.to_dict()))) == ho
    top = ho.largest()  # the two runs within 1% of 1e6 are one size
    assert top == {"x": 1e6, "measured": pytest.approx(2.1), "predicted": pytest.approx(2.1),
                   "lo": pytest.approx(1.9), "hi": pytest.approx(2.3),
                   "rel_error": pytest.approx(0.0, abs=1e-12)}
    assert holdout_lines(ho.to_dict()) == [
        "holdout largest:2: fit on 7, predict 3: mean relative error +3.48%, mean |error| 6.52%",
        "  largest size predicted 2.1, measured 2.1, error +0.00%"]


def test_fit_record_reads_old_records_and_writes_every_key():
    rec = FitRecord.from_dict(V1_FIT)
    assert (rec.law, rec.x, rec.y, rec.level, rec.on_bound) == (
        "power", "n_nonembed", "val_loss", 0.95, ["alpha"])
    assert rec.holdout.largest() == V1_POINT
    out = rec.to_dict()
    assert set(out) == {"law", "x", "y", "params", "intervals", "level", "on_bound", "holdout",
                        "band", "bootstrap_params", "dof", "flags", "noise", "profile",
                        "predictions"}
    # records from before the extrapolation profile read back without one
    assert (rec.dof, rec.flags, rec.noise, rec.profile, rec.predictions) == (
        None, [], None, None, None)
    assert set(out["holdout"]) == HOLDOUT_KEYS
    # the oldest records had no y, level or holdout
    bare = FitRecord.from_dict({"law": "power", "x": "n_nonembed",
                                "params": {"E": 1.0, "A": 2.0, "alpha": 0.5}})
    assert (bare.y, bare.level, bare.holdout, bare.band) == ("val_loss", 0.95, None, None)


def test_fit_lines_of_new_old_and_short_records():
    n = np.geomspace(1e4, 1e6, 6)
    loss = 1.3 + 25.0 * n**-0.3
    new = fit_study_power(n, loss, bootstrap=0)
    top = Holdout.from_dict(new["holdout"]).largest()
    err = fit_study_power(n, 0.5 * n**-0.2, bootstrap=0, y_name="val_error")
    short = fit_study_power(n[:1], loss[:1], bootstrap=0)
    exact = fit_study_power(n[:3], loss[:3], bootstrap=0)
    lines = fit_lines({"fits": [new, err, V1_FIT, short, exact]})
    assert lines[1] == (f"holdout: largest rung predicted {top['predicted']:.4f}, measured "
                        f"{loss[-1]:.4f}, error {100 * top['rel_error']:+.2f}%")
    # a noiseless law: every split of the profile predicts within 2% as far as it was checked
    assert lines[2] == ("trust horizon: within 2% up to 6.3× beyond the fitted range; "
                        "no evidence beyond")
    assert lines[3].startswith("law power of val_error in n_nonembed: E=")
    assert lines[6:] == [
        "law power of val_loss in n_nonembed: E=0.02809 [0.0026, 0.0281], A=2.619 [2.62, 3.06], "
        "alpha=0 [0, 0.0156] (on a bound)",
        "holdout: largest rung predicted 2.6793, measured 2.5961, error +3.20%",
        "law power of val_loss in n_nonembed: E=-, A=-, alpha=-",
        "law power of val_loss in n_nonembed: exact fit, as many sizes as parameters "
        "(zero degrees of freedom): not a result",
    ]


def test_fit_figure_draws_any_holdout_shape():
    n = np.geomspace(1e4, 1e6, 6)
    loss = 1.3 + 25.0 * n**-0.3
    law = Law("power", bootstrap=0, x_names=("n_nonembed",)).fit(n, loss)
    for ho in (holdout(law, n, loss, "largest:2"), holdout(law, n, loss).to_dict(),
               {"x": 1e6, "predicted": 1.9, "measured": 2.0, "rel_error": -0.05}):
        fig = fit_figure(law, n, loss, ho)
        title = fig.axes[2].get_title()
        rule = "largest:2" if isinstance(ho, Holdout) else "largest:1"
        assert title.startswith(f"holdout {rule}: mean |err| "), title
    fig = fit_figure(law, n, loss, None, "only 2 points to fit")
    assert fig.axes[2].texts[0].get_text() == "only 2 points to fit"


def test_default_holdout_that_cannot_run_is_recorded_as_skipped(tmp_path, capsys):
    n = [1e4, 1e5, 1e6]
    path = _csv(tmp_path / "runs.csv", [[x, 1.3 + 25.0 * x**-0.3] for x in n], "N,loss")
    code, out, err = run_main(["fit", path, "--law", "power", "--x", "N", "--bootstrap", "0",
                               "--out", tmp_path / "fit.json"], capsys)
    assert code == 0, err
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["holdout"] is None
    assert fit["holdout_skipped"] == ("law 'power' has 3 parameters but only 2 points were "
                                      "given; need at least 3")
    assert "holdout skipped: law 'power' has 3 parameters" in out
    code, out, err = run_main(["fit", path, "--law", "power", "--x", "N", "--bootstrap", "0",
                               "--holdout", "none", "--out", tmp_path / "none.json"], capsys)
    assert code == 0, err
    fit = json.loads((tmp_path / "none.json").read_text())
    assert fit["holdout"] is None and "holdout_skipped" not in fit
    assert "holdout skipped" not in out and "holdout none" not in out
