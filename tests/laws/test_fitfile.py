"""The fit lives in the library: `scalelab.laws.fit_runs` gives the fit.json that `scalelab fit`
writes, byte for byte, for every route (a CSV over N and D, a CSV with --where, a CSV of one
input, a study folder of either kind); `predict_rows` and `optimal_rows` give the rows that
`predict --out` and `optimal --out` write."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scalelab.errors import UserError
from scalelab.laws import FitOptions, fit_runs, optimal_rows, predict_rows, read_fit
from tests.helpers import DATA
from tests.laws.test_cli import _bent_csv, run_main
from tests.laws.test_csv_two_axis import store_study
from tests.laws.test_engine_study_fit import _study
from tests.laws.two_axis_synth import isoflop_rows

ROOT = Path(__file__).resolve().parents[2]


def _cli_fit(argv: list, out, capsys) -> str:
    code, _, err = run_main(["fit", *argv, "--out", out], capsys)
    assert code == 0, err
    return out.read_text()


def _as_written(record: dict) -> str:
    """A record as a fit.json holds it (what `scalelab fit --out` writes)."""
    return json.dumps(record, indent=2) + "\n"


# (CLI arguments after the source, the same options for the library); each cheap: few resamples
CSV_CASES = {
    "two_axis_isoflops": (
        DATA / "chinchilla_isoflops.csv",
        ["--x", "params,tokens", "--bootstrap", "20", "--compute", "1e22"],
        FitOptions(x=["params", "tokens"], bootstrap=20, compute=[1e22])),
    "gadre_where": (
        DATA / "gadre_overtraining.csv",
        ["--law", "chinchilla_shared", "--x", "params,tokens", "--y", "c4_val_loss", "--where",
         "dataset=rpj", "--where", "params<1e9", "--bootstrap", "20"],
        FitOptions(law="chinchilla_shared", x=["params", "tokens"], y="c4_val_loss",
                   where=["dataset=rpj", "params<1e9"], bootstrap=20)),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_fit_runs_of_a_csv_is_the_cli_fit_json(case, tmp_path, capsys):
    path, argv, options = CSV_CASES[case]
    written = _cli_fit([path, *argv], tmp_path / "fit.json", capsys)
    result = fit_runs(path, options)
    assert result.to_dict()["source"] == str(path)
    assert _as_written(result.to_dict()) == written


def test_fit_runs_of_one_input_chooses_profiles_and_ranks_as_the_cli(tmp_path, capsys):
    path = _bent_csv(tmp_path / "bent.csv")
    written = _cli_fit([path, "--x", "N", "--bootstrap", "10"], tmp_path / "chosen.json", capsys)
    chosen = fit_runs(path, FitOptions(x=["N"], bootstrap=10))
    assert chosen.kind == "one_form" and "selection" in chosen.to_dict()
    assert _as_written(chosen.to_dict()) == written
    written = _cli_fit([path, "--law", "power", "--x", "N", "--compare", "bnsl", "--holdout",
                        "largest:5", "--bootstrap", "0", "--profile", "--profile-sims", "3"],
                       tmp_path / "ranked.json", capsys)
    ranked = fit_runs(path, FitOptions(law="power", x=["N"], compare=["bnsl"],
                                       holdout="largest:5", bootstrap=0, profile=True,
                                       profile_sims=3))
    assert ranked.to_dict()["comparison"]["rule"] == "largest:5"
    assert "splits" in ranked.to_dict()["profile"]
    assert _as_written(ranked.to_dict()) == written


def test_fit_runs_of_study_folders_is_the_cli_fit_json(tmp_path, capsys):
    _study(tmp_path / "one")  # a ladder in N, with its spec: the study's own fit
    written = _cli_fit([tmp_path / "one"], tmp_path / "one.json", capsys)
    own = fit_runs(tmp_path / "one")
    assert own.kind == "study" and own.to_dict()["weights"] == "noise"
    assert _as_written(own.to_dict()) == written
    # an option its own fit does not take: a one-form fit that says why
    written = _cli_fit([tmp_path / "one", "--loss", "lsq", "--bootstrap", "0"],
                       tmp_path / "lsq.json", capsys)
    lsq = fit_runs(tmp_path / "one", FitOptions(loss="lsq", bootstrap=0))
    assert lsq.kind == "one_form" and "--loss given" in lsq.note
    assert _as_written(lsq.to_dict()) == written
    store_study(tmp_path / "two", isoflop_rows(seed=0))  # runs over N and D, no spec
    written = _cli_fit([tmp_path / "two", "--bootstrap", "10"], tmp_path / "two.json", capsys)
    two = fit_runs(tmp_path / "two", FitOptions(bootstrap=10))
    assert two.kind == "two_axis" and two.to_dict()["law"] == "two_axis"
    assert _as_written(two.to_dict()) == written


def test_predict_and_optimal_rows_are_the_cli_rows(tmp_path, capsys):
    path = DATA / "gadre_overtraining.csv"
    _, argv, options = CSV_CASES["gadre_where"]
    fit_runs(path, options).write(tmp_path / "fit.json")
    record = read_fit(tmp_path / "fit.json")
    code, _, err = run_main(["predict", tmp_path / "fit.json", "--N", "1e8,1e10", "--D", "1e11",
                             "--out", tmp_path / "predict.json"], capsys)
    assert code == 0, err
    table = predict_rows(record, N=[1e8, 1e10], D=[1e11])
    assert table.rows == json.loads((tmp_path / "predict.json").read_text())
    assert table.rows[0]["warning"] is None and "beyond the largest" in table.rows[1]["warning"]
    code, _, err = run_main(["optimal", tmp_path / "fit.json", "--compute", "1e21,1e23",
                             "--out", tmp_path / "optimal.json"], capsys)
    assert code == 0, err
    answer = optimal_rows(tmp_path / "fit.json", [1e21, 1e23])
    assert answer.rows == json.loads((tmp_path / "optimal.json").read_text())
    assert [r["compute"] for r in answer.rows] == [1e21, 1e23]


@pytest.mark.parametrize("call, says", [
    (lambda p: fit_runs(p / "missing.csv"), "does not exist"),
    (lambda p: fit_runs(DATA / "gadre_overtraining.csv", FitOptions(loss="l1")),
     "--loss must be huber or lsq"),
    (lambda p: FitOptions(where=["params<<1"]), "--where 'params<<1'"),
    (lambda p: optimal_rows(DATA / "chinchilla_isoflops.csv", [1e20], k=6.0),
     "--k applies to a fit.json"),
])
def test_bad_input_from_python_is_a_user_error(call, says, tmp_path):
    with pytest.raises(UserError) as err:
        call(tmp_path)
    assert says in str(err.value)


def test_the_docs_python_example_runs(tmp_path, monkeypatch, capsys):
    """docs/laws.md's "From Python" example runs as printed from a clone."""
    text = (ROOT / "docs" / "laws.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/laws.md", "exec"), {})
    assert read_fit(tmp_path / "rpj.json")["where"] == ["dataset=rpj", "params<1e9"]
    assert (tmp_path / "rpj.svg").read_text().startswith("<?xml")
    assert "beyond the largest params fitted" in capsys.readouterr().out
