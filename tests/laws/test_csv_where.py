"""`--where`: fit the rows of a CSV that meet conditions, from one command. Gadre et al.'s grid
(three data sets in one file) fitted on RedPajama below 1B as the benchmark fits it; the rows
kept are exactly those a CSV of them alone holds; bad input one line, exit code 2."""

from __future__ import annotations

import json

import pytest

from tests.helpers import DATA
from tests.laws.test_cli import _csv, run_main
from tests.laws.two_axis_synth import isoflop_rows

GADRE = DATA / "gadre_overtraining.csv"  # 104 runs on 3 data sets: tests/data/README.md
# The paper's two targets (RedPajama 1.4B at M = 32, 6.9B at M = 1): N, D and measured loss.
TARGETS = ((1439795200, 921468928000, 2.502053562117363),
           (6889410560, 137788211200, 2.424993099368689))
# What benchmarks/real_ladders.py reports for chinchilla_shared fitted below 1B (docs/results.md)
BENCHMARK = (0.0013, 0.0031)


def test_gadre_redpajama_below_1b_predicts_the_papers_targets_as_the_benchmark(tmp_path,
                                                                              capsys):
    fit_json = tmp_path / "rpj.json"
    code, out, err = run_main(["fit", GADRE, "--law", "chinchilla_shared", "--x",
                               "params,tokens", "--y", "c4_val_loss", "--where", "dataset=rpj",
                               "--where", "params<1e9", "--bootstrap", 0, "--out", fit_json],
                              capsys)
    assert code == 0, err
    record = json.loads(fit_json.read_text())
    assert record["law"] == "chinchilla_shared"
    assert record["where"] == ["dataset=rpj", "params<1e9"]
    assert record["n_points"] == 32  # RedPajama's runs below 1B, and no other
    assert record["x_max"][0] < 1e9
    n, d = (",".join(str(t[i]) for t in TARGETS) for i in (0, 1))
    code, out, err = run_main(["predict", fit_json, "--N", n, "--D", d, "--out",
                               tmp_path / "pred.json"], capsys)
    assert code == 0, err
    pred = json.loads((tmp_path / "pred.json").read_text())
    for row, (_, _, truth), expected in zip(pred, TARGETS, BENCHMARK, strict=True):
        assert (row["predicted"] - truth) / truth == pytest.approx(expected, abs=5e-4)


def _two_sets(tmp_path):
    """A synthetic IsoFLOP ladder as data set "a", beside data set "b" whose loss cells are not
    numbers (rows left out must never be read), and the CSV of "a" alone."""
    rows = isoflop_rows(seed=0)
    header = "dataset,N,D,flops,budget,loss"
    good = [["a", int(r["n_nonembed"]), int(r["D"]), repr(r["flops"]), repr(r["budget"]),
             repr(r["val_loss"])] for r in rows]
    bad = [["b", *row[1:5], "diverged"] for row in good[:6]]
    both = _csv(tmp_path / "both.csv", good[:7] + bad + good[7:], header)
    alone = _csv(tmp_path / "alone.csv", good, header)
    return both, alone


def test_two_axis_fit_of_picked_rows_is_the_fit_of_a_csv_holding_only_them(tmp_path, capsys):
    both, alone = _two_sets(tmp_path)
    args = ["--bootstrap", 0, "--flops-col", "flops", "--budget-col", "budget"]
    code, _, err = run_main(["fit", both, "--where", "dataset=a", *args, "--out",
                             tmp_path / "where.json"], capsys)
    assert code == 0, err
    code, _, err = run_main(["fit", alone, *args, "--out", tmp_path / "alone.json"], capsys)
    assert code == 0, err
    picked = json.loads((tmp_path / "where.json").read_text())
    full = json.loads((tmp_path / "alone.json").read_text())
    assert picked.pop("where") == ["dataset=a"] and "where" not in full
    picked.pop("source"), full.pop("source")
    assert picked == full  # every key and every digit


def test_optimal_from_a_csv_fits_only_the_picked_rows(tmp_path, capsys):
    both, alone = _two_sets(tmp_path)
    answers = []
    for path, extra in ((both, ["--where", "dataset=a"]), (alone, [])):
        out = tmp_path / f"{path.stem}.json"
        code, _, err = run_main(["optimal", path, "--compute", "1e14", "--bootstrap", 0,
                                 "--flops-col", "flops", "--budget-col", "budget", *extra,
                                 "--out", out], capsys)
        assert code == 0, err
        answers.append(json.loads(out.read_text()))
    assert answers[0] == answers[1]


def test_numbers_compare_as_numbers_and_bounds_as_written(tmp_path):
    from scalelab.laws.data import Where, _read_csv

    path = _csv(tmp_path / "runs.csv", [["x", 1e8, 2.0], ["y", 1e9, 3.0], ["x", 2e9, 4.0]],
                "name,N,loss")

    def losses(*conds: str) -> list[float]:
        return _read_csv(path, ["loss"], [Where.parse(c) for c in conds])[:, 0].tolist()

    assert losses("N=1000000000") == [3.0]  # "1e9" in the file, another spelling asked
    assert losses("N<1e9") == [2.0] and losses("N<=1e9") == [2.0, 3.0]
    assert losses("N>1e9") == [4.0] and losses(" N >= 1e9 ") == [3.0, 4.0]
    assert losses("name=x") == [2.0, 4.0] and losses("name=x", "N<1e9") == [2.0]


@pytest.mark.parametrize("where, says", [
    ("data=rpj", "no column 'data'"),
    ("dataset=redpajama", "no row meets --where dataset=redpajama"),
    ("params==1e9", "write COLUMN=VALUE"),
    ("params~1e9", "write COLUMN=VALUE"),
    ("params<", "write COLUMN=VALUE"),
    ("params<small", "'small' is not one"),
    ("dataset<5", "column 'dataset' has 'c4_original', not a number"),
])
def test_bad_where_is_one_line_and_exit_2(where, says, capsys):
    code, out, err = run_main(["fit", GADRE, "--law", "chinchilla_shared", "--x",
                               "params,tokens", "--y", "c4_val_loss", "--where", where,
                               "--bootstrap", 0], capsys)
    assert code == 2
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_where_on_a_fit_json_or_a_study_folder_is_refused(tmp_path, capsys):
    fit_json = tmp_path / "fit.json"
    fit_json.write_text("{}")
    code, _, err = run_main(["optimal", fit_json, "--compute", "1e20", "--where", "a=b"],
                            capsys)
    assert code == 2 and "--where picks rows of a CSV" in err
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "study.db").write_bytes(b"")
    code, _, err = run_main(["fit", folder, "--where", "a=b"], capsys)
    assert code == 2 and "--where picks rows of a CSV" in err and "study folder" in err
