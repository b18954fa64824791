"""`scalelab fit --profile` and `scalelab predict` beyond the horizon, through the CLI's main."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.laws.test_cli import _csv, run_main
from tests.laws.util import CHINCHILLA


def _power_csv(path, k=8, sigma=0.004, seed=0):
    n = np.geomspace(1e4, 1e6, k)
    y = (1.3 + 25.0 * n**-0.3) * np.exp(np.random.default_rng(seed).normal(0, sigma, k))
    return _csv(path, [[a, b] for a, b in zip(n, y, strict=True)], "N,loss")


def test_fit_profile_table_json_and_predict_warning(tmp_path, capsys):
    path = _power_csv(tmp_path / "runs.csv")
    code, out, err = run_main(["fit", path, "--law", "power", "--bootstrap", "100", "--profile",
                               "--profile-sims", "100", "--out", tmp_path / "fit.json"], capsys)
    assert code == 0, err
    fit = json.loads((tmp_path / "fit.json").read_text())
    prof = fit["profile"]
    assert (prof["by"], prof["k"], prof["tolerance"], prof["max_x"]) == ("N", None, 0.02,
                                                                          pytest.approx(1e6))
    assert [s["n_points"] for s in prof["splits"]] == [4, 5, 6, 7]
    assert fit["noise"]["source"] == "residuals" and fit["noise"]["dof"] == 5
    assert (fit["dof"], fit["flags"]) == (5, [])
    assert "extrapolation profile over N" in out
    table_rows = [ln for ln in out.splitlines() if ln.startswith("│")]
    assert len(table_rows) == 3 + 4  # the three parameters' rows, then the four splits
    from scalelab.laws.profile import horizon_text

    # the line wraps at the terminal's width: compare the words
    assert f"trust horizon: {horizon_text(prof)}" in " ".join(out.split())
    n_pts = sum(len(s["points"]) for s in prof["splits"])
    assert f"{prof['outside_band']} of {n_pts} errors outside their 95% noise-implied band" in out

    # within the horizon no warning; 100x beyond the largest run is past any horizon here
    h = prof["horizon"]
    code, out, err = run_main(["predict", tmp_path / "fit.json", "--N",
                               f"{1e6 * h * 0.99},1e8", "--out", tmp_path / "pred.json"], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "pred.json").read_text())
    assert rows[0]["warning"] is None
    from scalelab.laws.profile import fmt_ratio

    assert rows[1]["warning"] == (f"100× beyond the fitted range, past the trust horizon "
                                  f"({fmt_ratio(h)}): no evidence the law holds there")
    assert out.count("warning") == 1


def test_an_exact_fit_is_flagged_in_fit_json(tmp_path, capsys):
    path = _power_csv(tmp_path / "runs.csv", k=3)
    code, out, err = run_main(["fit", path, "--law", "power", "--bootstrap", "0", "--holdout",
                               "none", "--profile", "--out", tmp_path / "fit.json"], capsys)
    assert code == 0, err
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert (fit["dof"], fit["flags"]) == (0, ["zero_dof"])
    assert ("exact fit: 3 runs, 3 parameters, 0 degrees of freedom: the law passes through its "
            "points and estimates nothing; not a result") in " ".join(out.split())
    assert fit["profile"]["splits"] == [] and fit["noise"] is None
    assert "trust horizon: no extrapolation profile: needs more than 3 distinct points" in out


@pytest.mark.parametrize("extra, pattern", [
    (["--tolerance", "2"], "--tolerance must be between 0 and 1"),
    (["--profile-by", "cost"], "--profile-by must be size or compute"),
    (["--profile-by", "compute"], "--profile-by compute needs a law in N and D"),
    (["--profile-sims", "-1"], "--profile-sims must be >= 0"),
])
def test_bad_profile_options_are_one_line(tmp_path, capsys, extra, pattern):
    path = _power_csv(tmp_path / "runs.csv")
    code, _, err = run_main(["fit", path, "--law", "power", "--bootstrap", "0", "--profile",
                             *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and pattern in err, err


def test_chinchilla_profile_over_model_size(tmp_path, capsys):
    """The published comparison's kind of check: fit the Chinchilla law on the smaller models,
    predict the larger ones. Its predictions of the largest models come out 1.4-3% low."""
    code, out, err = run_main(
        ["fit", CHINCHILLA, "--law", "chinchilla", "--x", "Model Size", "--flops-col",
         "Training FLOP", "--drop-highest", "5", "--bootstrap", "0", "--holdout", "none",
         "--profile", "--profile-sims", "40", "--out", tmp_path / "fit.json"], capsys)
    assert code == 0, err
    prof = json.loads((tmp_path / "fit.json").read_text())["profile"]
    assert prof["by"] == "Model Size" and len(prof["splits"]) == 8
    assert [s["n_fit"] for s in prof["splits"]] == [6, 26, 61, 102, 157, 217, 230, 239]
    largest = [s["points"][-1] for s in prof["splits"]]
    # The first split fits 5 parameters to 6 runs (1 degree of freedom): A and alpha trade
    # along a flat valley, and where the optimiser stops in it follows the BLAS kernel's last
    # bits (alpha 0.89 with Haswell's, 1.47 with SkylakeX's). Its error at 219x measured
    # +18.13% (Haswell; +18.08% on another CPU) to +24.57% over OpenBLAS's Haswell, SkylakeX,
    # Sandybridge, Nehalem and Prescott kernels, all inside its own noise-implied band (about
    # [-17%, +34%]): what is determined is a miss beyond the 2% tolerance that this noise can
    # explain, so that is what is checked.
    first = largest[0]
    assert 0.02 < first["rel_error"] < first["band"][1], first
    # The other splits fit 26 to 239 runs and agree across those kernels to 0.005 points
    # (-5.3242 to -5.3293 at most): pinned to 0.02 points, four times that spread.
    assert [100 * p["rel_error"] for p in largest[1:]] == pytest.approx(
        [-5.327, -3.067, -3.166, -2.678, -2.300, -2.015, -1.405], abs=0.02)
    # every split within 2% up to 1.67x; the fit on models up to 6.8B misses the 11.5B one
    assert prof["horizon"] == pytest.approx(1.66616, abs=1e-4)
    failed = prof["failed"]
    assert {k: failed[k] for k in ("ratio", "rel_error", "max_fit_x")} == {
        "ratio": pytest.approx(1.68518, abs=1e-4), "rel_error": pytest.approx(-0.021447, abs=1e-5),
        "max_fit_x": pytest.approx(6.7956e9, rel=1e-4)}
    # a failure beyond its noise: the check could resolve 2% (its band is narrower than 4%)
    assert failed["band"][1] - failed["band"][0] < 0.04
    assert ("trust horizon: within 2% up to 1.67× beyond the fitted range; -2.1% at 1.69×, "
            "beyond its noise" in " ".join(out.split()))
