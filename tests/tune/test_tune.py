"""`scalelab tune` on a small pycode ladder through the real entry point: Optuna's trials stored
per rung (the default rung as each one's first), the lr*(N) rule fitted to the best learning
rates, the tuned ladder trained with it, and the report comparing both ladders; a rerun resumes
without new trials; a spec without a search space is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.helpers import scalelab, scalelab_each, tiny_spec, write_spec

TRIALS = 4
SIZES = [3.0e3, 1.2e4, 3.0e4, 6.0e4]


def _spec(tmp_path: Path, **tune) -> Path:
    return write_spec(tmp_path / "tune.yaml", tiny_spec(
        name="tune", ladder={"sizes": SIZES},
        train={"tokens": 32_000, "eval_every": 25, "checkpoint_every": 50},
        measure={"latency_repeats": 3, "threads": 1}, **tune))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("tune")
    spec = _spec(root, tune={"lr": [3.0e-4, 3.0e-2]})
    proc = scalelab("tune", spec, "--trials", TRIALS, "--out", root / "s", check=True)
    return root / "s", spec, proc.stdout


def _studies(folder: Path) -> dict[str, optuna.Study]:
    url = f"sqlite:///{folder / 'tune.db'}"
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=url)
            for s in optuna.get_all_study_summaries(url)}


@pytest.mark.slow
def test_trials_are_stored_per_rung_with_the_default_rung_first(tuned):
    folder, _, _ = tuned
    studies = _studies(folder)
    default = json.loads((folder / "summary.json").read_text())
    assert sorted(studies) == [f"rung-{r['rung']}" for r in default["rungs"]]
    for r in default["rungs"]:
        trials = studies[f"rung-{r['rung']}"].trials
        assert len(trials) == TRIALS and all(t.state.is_finished() for t in trials)
        first = trials[0]
        assert first.user_attrs["source"] == "default ladder"
        assert first.params["lr"] == pytest.approx(r["lr"]) and first.value == r["val_loss"]
        assert all(3.0e-4 <= t.params["lr"] <= 3.0e-2 for t in trials)
        for t in trials:  # a pruned trial stopped early, at a step it reported
            if t.state == optuna.trial.TrialState.PRUNED:
                assert t.last_step is not None and t.last_step < r["steps"]


@pytest.mark.slow
def test_the_rule_is_fitted_to_the_best_lr_and_the_tuned_ladder_follows_it(tuned):
    folder, _, _ = tuned
    record = json.loads((folder / "tune.json").read_text())
    studies = _studies(folder)
    n = [r["n_nonembed"] for r in record["rungs"]]
    best = [studies[f"rung-{r['rung']}"].best_trial.params["lr"] for r in record["rungs"]]
    gamma, log_c = np.polyfit(np.log(n), np.log(best), 1)
    rule = record["rule"]
    assert rule["gamma"] == pytest.approx(gamma) and rule["c"] == pytest.approx(np.exp(log_c))
    lo, hi = rule["intervals"]["gamma"]
    assert lo < rule["gamma"] < hi
    tuned_rungs = json.loads((folder / "tuned" / "summary.json").read_text())["rungs"]
    default_rungs = json.loads((folder / "summary.json").read_text())["rungs"]
    for t, d in zip(tuned_rungs, default_rungs, strict=True):
        assert t["status"] == "done" and t["n_nonembed"] == d["n_nonembed"]
        assert t["lr"] == pytest.approx(rule["c"] * t["n_nonembed"] ** rule["gamma"])
        assert t["steps"] == d["steps"]
        assert 0 < t["val_loss"] < 6
    assert [t["lr"] for t in tuned_rungs] != pytest.approx([d["lr"] for d in default_rungs])
    assert record["ladders"]["tuned"]["rungs"] == [
        {k: r[k] for k in ("rung", "n_nonembed", "lr", "steps", "status", "val_loss")}
        for r in tuned_rungs]


@pytest.mark.slow
def test_the_report_compares_the_tuned_and_default_ladders(tuned):
    folder, _, stdout = tuned
    html = (folder / "report.html").read_text()
    assert "<h2>Tuning</h2>" in html and "optuna-dashboard sqlite:///tune.db" in html
    record = json.loads((folder / "tune.json").read_text())
    rule = record["rule"]
    assert f"lr*(N) = {rule['c']:.3g}·N^{rule['gamma']:.3f}" in html
    for name in ("default", "tuned"):
        fit = json.loads((folder / ("." if name == "default" else "tuned") / "summary.json")
                         .read_text())["fits"][0]
        assert record["ladders"][name]["fit"]["params"] == fit["params"]
        assert f"{100 * fit['holdout']['rel_error']:+.2f}%" in html
        assert f"{name} ladder: alpha {fit['params']['alpha']:.3f}" in stdout
    for r in record["ladders"]["tuned"]["rungs"]:
        assert f"{r['val_loss']:.4f}" in html


@pytest.mark.slow
def test_a_rerun_resumes_without_new_trials(tuned):
    folder, spec, _ = tuned
    before = {k: len(s.trials) for k, s in _studies(folder).items()}
    rule = json.loads((folder / "tune.json").read_text())["rule"]
    scalelab("tune", spec, "--trials", TRIALS, "--out", folder, check=True)
    assert {k: len(s.trials) for k, s in _studies(folder).items()} == before
    assert json.loads((folder / "tune.json").read_text())["rule"] == rule


NO_SEARCH_SPACE = [None, {"trials": 3}]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> list[tuple]:
    """`scalelab tune` on a spec without a tune section and on one without a search space
    (`scalelab_each`: one process each): (process, its --out folder) in that order."""
    folders = [tmp_path_factory.mktemp("no-space") for _ in NO_SEARCH_SPACE]
    specs = [_spec(f, **({} if tune is None else {"tune": tune}))
             for f, tune in zip(folders, NO_SEARCH_SPACE, strict=True)]
    procs = scalelab_each(*[["tune", spec, "--out", f / "s"]
                            for spec, f in zip(specs, folders, strict=True)])
    return [(proc, f / "s") for proc, f in zip(procs, folders, strict=True)]


@pytest.mark.parametrize("tune", NO_SEARCH_SPACE)
def test_a_spec_without_a_search_space_is_one_line(refused, tune):
    proc, out = refused[NO_SEARCH_SPACE.index(tune)]
    assert proc.returncode == 2
    assert "no search space" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
