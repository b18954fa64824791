"""One fit, one answer: `scalelab fit STUDY` gives the study's own fit (the same weights, the
same record), and weighing every run alike is an option that says so."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import tiny_spec
from tests.laws.test_cli import run_main

SIZES = (3e3, 1.2e4, 3e4, 6e4, 1.5e5)
# seed noise that differs by size (the small ones noisier), so weighing by it moves the fit
NOISE = (0.03, 0.02, 0.004, 0.004, 0.003)


def _study(folder) -> dict:
    """A one-axis study of 5 sizes x 3 seeds, with its spec, its rungs and its stored fits."""
    from scalelab.spec import parse_spec
    from scalelab.storage import StudyStore
    from scalelab.study import fit_rungs

    spec = tiny_spec(ladder={"sizes": list(SIZES), "repeats": 3}, fit={"bootstrap": 60})
    rng = np.random.default_rng(3)
    rows = []
    for n, sd in zip(SIZES, NOISE, strict=True):
        for rep in range(3):
            loss = (1.3 + 25.0 * n**-0.3) * np.exp(sd * rng.standard_normal())
            rows.append((len(rows), n, rep, float(loss)))
    with StudyStore.create_or_open(folder) as store:
        store.init_study("tiny", "text", "gpt", spec)
        store.add_rungs([{"rung": r, "family": "gpt", "shape": {}, "target_n": n,
                          "n_params": int(1.2 * n), "n_nonembed": int(n), "D": 128_000,
                          "unit": "token", "steps": 10, "batch_size": 1, "units_per_step": 1,
                          "lr": 1e-3, "warmup_steps": 1, "seed": rep, "repeat": rep}
                         for r, n, rep, _ in rows])
        for r, _, _, loss in rows:
            store.record_rung(r, {"status": "done", "D": 128_000, "steps": 10,
                                  "train_seconds": 1.0, "val_loss": loss, "train_loss": loss})
        store.replace_fits(fit_rungs(store.rungs(), parse_spec(spec)))
        return store.fits()[0]


def test_fit_of_a_study_is_the_study_own_fit(tmp_path, capsys):
    stored = _study(tmp_path / "study")
    assert stored["noise"]["weighting"] == "1/sigma"  # the study weighs runs by seed noise
    code, out, err = run_main(["fit", tmp_path / "study", "--out", tmp_path / "fit.json"],
                              capsys)
    assert code == 0, err
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit.pop("source") == str(tmp_path / "study")
    assert fit == stored  # the same record: params, holdout, profile, predictions, every digit
    assert "each run by its size's seed noise" in out and "as the study fits" in out


def test_equal_weights_are_an_option_that_says_so(tmp_path, capsys):
    stored = _study(tmp_path / "study")
    code, out, err = run_main(["fit", tmp_path / "study", "--weights", "equal", "--out",
                               tmp_path / "equal.json"], capsys)
    assert code == 0, err
    equal = json.loads((tmp_path / "equal.json").read_text())
    assert equal["weights"] == "equal" and stored["weights"] == "noise"
    assert "every run alike (--weights equal): not the study's own fit" in out
    assert equal["params"]["alpha"] != pytest.approx(stored["params"]["alpha"], rel=1e-3)
    assert equal["holdout"]["rel_error"] != pytest.approx(stored["holdout"]["rel_error"],
                                                          rel=1e-3)
    # options the study's fit does not take give a one-form fit, and it says so
    code, out, err = run_main(["fit", tmp_path / "study", "--loss", "lsq", "--bootstrap", "0"],
                              capsys)
    assert code == 0, err
    assert "not the study's own fit (--loss given): every run weighs alike" in out
    code, _, err = run_main(["fit", tmp_path / "study", "--loss", "lsq", "--weights", "noise"],
                            capsys)
    assert code == 2 and "--weights noise is the study's own fit" in err
