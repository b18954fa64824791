"""`optimal --frontier` past the data warns as `predict` does, through one function."""

from __future__ import annotations

import json

import pytest

from tests.laws.test_cli import _csv, _good_rows, run_main


@pytest.mark.parametrize("profile", [[], ["--profile", "--profile-sims", "20"]])
def test_optimal_past_the_data_warns_like_predict(tmp_path, capsys, profile):
    path = _csv(tmp_path / "runs.csv", _good_rows())  # N up to 1e8, D up to 1e10
    code, _, err = run_main(["fit", path, "--law", "chinchilla", "--bootstrap", "0", "--out",
                             tmp_path / "fit.json", *profile], capsys)
    assert code == 0, err
    code, out, err = run_main(["optimal", tmp_path / "fit.json", "--frontier", "1e16:1e24",
                               "--points", "5", "--out", tmp_path / "opt.json"], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "opt.json").read_text())
    assert rows[0]["warning"] is None  # 1e16 FLOPs: inside the runs (their C from 6e16)
    top = rows[-1]
    assert top["warning"] and "no evidence the law holds there" in top["warning"]
    assert f"warning (C={top['compute']:.3g}): " in out
    # predict at that optimum says the same, word for word
    code, _, err = run_main(["predict", tmp_path / "fit.json", "--N", repr(top["N"]), "--D",
                             repr(top["D"]), "--out", tmp_path / "pred.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "pred.json").read_text())[0]["warning"] == top["warning"]
