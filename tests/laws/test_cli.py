"""The law commands through the real entry point: reproduction, predict, optimal, bad input."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from tests.laws.util import CHINCHILLA, EPOCH_EXACT, EPOCH_INTERVALS, HOLDOUT_KEYS, run_cli


@pytest.fixture(scope="module")
def chinchilla_fit(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    proc = run_cli("fit", CHINCHILLA, "--law", "chinchilla", "--x", "Model Size", "--y", "loss",
                   "--flops-col", "Training FLOP", "--drop-highest", "5", "--bootstrap", "400",
                   "--out", out / "fit.json", "--plot", out / "fit.svg")
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "fit.json").read_text())


def test_chinchilla_reproduces_the_epoch_replication(chinchilla_fit):
    out, fit = chinchilla_fit
    p = fit["params"]
    # The optimum is well determined (240 runs, 5 parameters): over OpenBLAS's Haswell,
    # SkylakeX, Sandybridge, Nehalem and Prescott kernels E, alpha and beta moved by at most
    # 6e-6 relative and lay within 2.2e-5 of the published values, A and B moved by 5e-5 and
    # lay within 2.2e-4. So: the published digits, 1e-4 (1e-3 for A and B).
    for name in ("E", "alpha", "beta"):
        assert p[name] == pytest.approx(EPOCH_EXACT[name], rel=1e-4), name
    for name in ("A", "B"):
        assert p[name] == pytest.approx(EPOCH_EXACT[name], rel=1e-3), name
    for name, (lo, hi) in fit["intervals"].items():
        ref_lo, ref_hi = EPOCH_INTERVALS[name]
        assert lo < ref_hi and ref_lo < hi, (name, lo, hi)  # the 95% intervals overlap
        assert lo <= p[name] <= hi
    assert fit["n_points"] == 240 and fit["starts"]["n"] == 4500
    assert fit["on_bound"] == [] and not fit["starts"]["disagree"]
    assert fit["x"] == ["Model Size", "D"] and fit["y"] == "loss"
    for key in ("law", "objective", "holdout"):
        assert key in fit
    ho = fit["holdout"]
    assert set(ho) == HOLDOUT_KEYS and ho["rule"] == "largest:1"
    assert ho["n_test"] == len(ho["points"]) >= 1 and abs(ho["mean_rel_error"]) < 0.05
    assert ho["n_fit"] + ho["n_test"] == 240 and ho["folds"] is None
    # the held-out runs are the ones beyond the largest size fitted on
    assert all(p["x"][0] > ho["max_fit_size"] for p in ho["points"])
    assert "holdout_skipped" not in fit
    assert (out / "fit.svg").read_text().lstrip().startswith("<?xml")


def test_predict_and_optimal_from_fit_json(chinchilla_fit, tmp_path, capsys):
    out, fit = chinchilla_fit
    code, _, err = run_main(["predict", out / "fit.json", "--N", "7e10", "--D", "1.4e12",
                             "--out", tmp_path / "pred.json"], capsys)
    assert code == 0, err
    pred = json.loads((tmp_path / "pred.json").read_text())[0]
    p = fit["params"]
    expected = p["E"] + p["A"] / 7e10 ** p["alpha"] + p["B"] / 1.4e12 ** p["beta"]
    assert pred["predicted"] == pytest.approx(expected, rel=1e-6)
    assert pred["interval"][0] < pred["predicted"] < pred["interval"][1]

    code, _, err = run_main(["optimal", out / "fit.json", "--compute", "5.76e23", "--out",
                             tmp_path / "opt.json", "--plot", tmp_path / "frontier.png"], capsys)
    assert code == 0, err
    row = json.loads((tmp_path / "opt.json").read_text())[0]
    assert 6 * row["N"] * row["D"] == pytest.approx(5.76e23)
    assert row["intervals"]["N"][0] < row["N"] < row["intervals"]["N"][1]
    assert (tmp_path / "frontier.png").stat().st_size > 1000


def _csv(path, rows, header="N,D,loss"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def _good_rows():
    N = np.repeat([1e7, 3e7, 1e8], 3)
    D = np.tile([1e9, 3e9, 1e10], 3)
    loss = 1.8 + 400 * N**-0.34 + 2000 * D**-0.37
    return [list(r) for r in zip(N, D, loss, strict=True)]


def run_main(argv, capsys):
    """The console script's `main` in this process (no interpreter start-up per case)."""
    import sys

    from scalelab.cli import main

    old = sys.argv
    sys.argv = ["scalelab", *map(str, argv)]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case, pattern", [
    ("non-numeric", "not a number"),
    ("non-positive", "must be positive"),
    ("nan", "finite"),
    ("missing column", "no column 'loss'"),
    ("too few points", "only 3 points"),
    ("single N", "same N"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, case, pattern):
    rows = _good_rows()
    header = "N,D,loss"
    if case == "non-numeric":
        rows[2][2] = "abc"
    elif case == "non-positive":
        rows[4][0] = -5
    elif case == "nan":
        rows[1][2] = "nan"
    elif case == "missing column":
        header = "N,D,val"
    elif case == "too few points":
        rows = rows[:3]
    elif case == "single N":
        rows = [[1e8, r[1], r[2]] for r in rows]
    path = _csv(tmp_path / "runs.csv", rows, header)
    code, _, err = run_main(["fit", path, "--law", "chinchilla", "--bootstrap", "0"], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0]


def test_bad_input_through_the_console_script_process(tmp_path):
    rows = _good_rows()
    rows[3][1] = "lots"
    proc = run_cli("fit", _csv(tmp_path / "runs.csv", rows), "--bootstrap", "0")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'runs.csv'} line 5: column 'D' has " \
        "'lots', not a number"


@pytest.mark.parametrize("argv, pattern", [
    (["predict", "nope.json", "--N", "1e9", "--D", "1e10"], "cannot read"),
    (["fit", "runs.csv", "--holdout", "sideways"], "unknown holdout rule"),
    (["fit", "runs.csv", "--law", "cubic"], "unknown law"),
    (["fit", "runs.csv", "--drop-highest", "20"], "would drop all"),
    (["fit", "missing.csv"], "does not exist"),
])
def test_more_bad_input(tmp_path, monkeypatch, capsys, argv, pattern):
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "runs.csv", _good_rows())
    code, _, err = run_main(argv + (["--bootstrap", "0"] if argv[0] == "fit" else []), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and pattern in err, err


def test_fit_reads_finished_rungs_of_a_study_folder(tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    con = sqlite3.connect(folder / "study.db")
    con.execute("CREATE TABLE rungs (id INTEGER PRIMARY KEY, status TEXT, n_params INTEGER, "
                "n_nonembed INTEGER, tokens INTEGER, val_loss REAL, flops REAL)")
    n = np.geomspace(1e4, 1e6, 6)
    loss = 1.3 + 25.0 * n**-0.3
    for i, (ni, li) in enumerate(zip(n, loss, strict=True)):
        con.execute("INSERT INTO rungs VALUES (?, 'done', ?, ?, ?, ?, ?)",
                    (i, int(ni * 1.2), int(ni), 1_000_000, float(li), 6 * ni * 1e6))
    con.execute("INSERT INTO rungs VALUES (9, 'running', 1, 2000000, 1, NULL, NULL)")
    con.commit()
    con.close()
    proc = run_cli("fit", folder, "--bootstrap", "50", "--out", tmp_path / "fit.json")
    assert proc.returncode == 0, proc.stderr
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert (fit["law"], fit["x"], fit["y"], fit["n_points"]) == ("power", "n_nonembed",
                                                                  "val_loss", 6)
    assert fit["params"]["alpha"] == pytest.approx(0.3, rel=0.02)
    code, out, _ = run_main(["predict", tmp_path / "fit.json", "--N", "1e7"], capsys)
    assert code == 0 and "1e+07" in out
    code, _, err = run_main(["optimal", tmp_path / "fit.json", "--compute", "1e20"], capsys)
    assert code == 2 and "N and D" in err


def test_help_has_an_example(capsys):
    for cmd in ("fit", "predict", "optimal"):
        code, out, _ = run_main([cmd, "--help"], capsys)
        assert code == 0 and "Example" in out


def _bent_csv(path):
    """Runs from a smoothly broken power law (it steepens at x_b = 1e6): a plain power law
    fitted below the bend cannot predict above it."""
    from scalelab.laws.forms import FORMS

    x = np.geomspace(1e3, 1e9, 30)
    form = FORMS["bnsl"]
    theta = form.from_params([1.2, 30.0, 0.15, 0.4, 1e6, 0.5])
    y = form.predict(theta, np.log(x)[:, None])[0]
    y = y * np.exp(np.random.default_rng(5).normal(0.0, 0.002, len(y)))
    return _csv(path, [[a, b] for a, b in zip(x, y, strict=True)], "N,loss")


def test_compare_ranks_laws_by_holdout_error(tmp_path, capsys):
    path = _bent_csv(tmp_path / "bent.csv")
    code, out, err = run_main(["fit", path, "--law", "power", "--x", "N", "--compare", "bnsl",
                               "--holdout", "largest:5", "--bootstrap", "0", "--out",
                               tmp_path / "fit.json"], capsys)
    assert code == 0, err
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["law"] == "power"  # the reported fit is still --law
    ranking = fit["comparison"]["ranking"]
    assert fit["comparison"]["rule"] == "largest:5"
    assert [r["law"] for r in ranking] == ["bnsl", "power"]
    errors = [r["holdout"]["mean_abs_rel_error"] for r in ranking]
    assert errors[0] < 0.01 < errors[1]
    # every row is a holdout record of the one shape, the same as the fit's own
    for row in ranking:
        assert set(row) == {"law", "holdout"} and set(row["holdout"]) == HOLDOUT_KEYS
        assert (row["holdout"]["rule"], row["holdout"]["n_test"]) == ("largest:5", 5)
    # the --law row is the same holdout as the fit's own
    assert ranking[1]["holdout"]["mean_abs_rel_error"] == pytest.approx(
        fit["holdout"]["mean_abs_rel_error"], rel=1e-6)
    assert [p["x"] for p in ranking[1]["holdout"]["points"]] == pytest.approx(
        [p["x"] for p in fit["holdout"]["points"]])
    assert "laws ranked by holdout largest:5" in out


@pytest.mark.parametrize("extra, pattern", [
    (["--compare", "chinchilla"], "compare laws with the same inputs"),
    (["--compare", "bnsl", "--holdout", "none"], "give a --holdout rule"),
    (["--compare", "nope"], "unknown law 'nope'"),
])
def test_compare_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, extra, pattern):
    path = _bent_csv(tmp_path / "bent.csv")
    code, _, err = run_main(["fit", path, "--law", "power", "--x", "N", "--bootstrap", "0",
                             "--out", tmp_path / "fit.json", *extra], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0], err
    assert not (tmp_path / "fit.json").exists()  # refused before fitting or writing anything


def test_leave_one_size_out_through_the_cli(tmp_path, capsys):
    path = _bent_csv(tmp_path / "bent.csv")
    code, out, err = run_main(["fit", path, "--law", "power", "--x", "N", "--bootstrap", "0",
                               "--holdout", "loso", "--out", tmp_path / "fit.json", "--plot",
                               tmp_path / "fit.png"], capsys)
    assert code == 0, err
    ho = json.loads((tmp_path / "fit.json").read_text())["holdout"]
    assert set(ho) == HOLDOUT_KEYS
    assert ho["rule"] == "loso" and len(ho["folds"]) == 30 and len(ho["points"]) == 30
    assert (ho["n_fit"], ho["max_fit_size"], ho["params"]) == (None, None, None)
    assert ho["mean_abs_rel_error"] >= abs(ho["mean_rel_error"]) > 0
    assert "each of 30 sizes predicted from the others" in out
    assert (tmp_path / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
