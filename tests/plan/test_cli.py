"""`scalelab plan` through the real entry point: the plan it writes, the spec `scalelab run`
accepts, and one line with exit code 2 for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import assert_refused, run_main, scalelab

DEFAULT_STUDY = Path(__file__).parent / "data" / "default_study"


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEFAULT_STUDY, tmp_path / "study"))


def test_plan_writes_a_spec_run_accepts(study: Path, tmp_path: Path):
    from scalelab.ladder import plan_ladder
    from scalelab.spec import load_spec
    from scalelab.study import resolve

    out = tmp_path / "plan"
    proc = scalelab("plan", "--from", study, "--target", "6e6", "--reach", "6", "--sims", "20",
                    "--budget", "5e14", "--out", out, check=True)
    assert "chosen:" in proc.stdout
    # the default study's shapes sit off its law beyond its seed noise: said, not hidden
    assert "sit off its law by" in proc.stdout and "+2.2% at 56.6k" in proc.stdout
    plan = json.loads((out / "plan.json").read_text())
    chosen = plan["chosen"]
    assert chosen["flops"] <= 5e14 and chosen["ratio"] >= 6
    assert all(r["ratio"] >= 6 for r in plan["candidates"])
    # the table's order: probability per PFLOP of the fitted runs
    per = [r["p_per_pflop"] for r in plan["candidates"]]
    assert per == sorted(per, reverse=True)
    assert (out / "plan.png").stat().st_size > 0
    # the spec: the chosen sizes and seeds, plus one run at the target; the study's D rule
    spec = load_spec(out / "plan.yaml")
    res = resolve(spec)
    rungs = plan_ladder(res.spec, res.task, res.family)
    sizes = sorted({r.n_nonembed for r in rungs})
    assert sizes[:-1] == [int(s) for s in chosen["sizes"]]
    assert 5.5e6 < sizes[-1] < 6.5e6
    assert len(rungs) == chosen["runs"] + 1
    assert spec.train.tokens_exponent == 0.5


def test_target_inside_the_measured_range(study: Path, tmp_path: Path):
    assert_refused(scalelab("plan", "--from", study, "--target", "5e5", "--out", tmp_path / "p"),
             "inside the measured range", "1M")


def test_budget_too_small_names_the_smallest_that_fits(study: Path, tmp_path: Path, capsys,
                                                      monkeypatch):
    proc = run_main(capsys, monkeypatch, "plan", "--from", study, "--target", "6e6", "--budget",
                 "1e12", "--out", tmp_path / "p")
    assert_refused(proc, "too small", "the smallest that fits needs")
    assert not (tmp_path / "p").exists()


def test_no_seeds_to_measure_the_noise_from(study: Path, tmp_path: Path, capsys, monkeypatch):
    summary = json.loads((study / "summary.json").read_text())
    summary["rungs"] = [r for r in summary["rungs"] if r["repeat"] == 0]
    (study / "summary.json").write_text(json.dumps(summary))
    assert_refused(run_main(capsys, monkeypatch, "plan", "--from", study, "--target", "6e6"),
             "no seed repeats", "--noise")
    # a prior law needs an assumed noise too
    assert_refused(run_main(capsys, monkeypatch, "plan", "--law", study, "--target", "6e6"),
                   "--noise")


def test_compute_and_target_together_are_one_line(capsys, monkeypatch):
    """A compute target is planned (tests/plan/test_plan_two_axis.py); with --target too it is
    refused."""
    assert_refused(run_main(capsys, monkeypatch, "plan", "--compute", "1e15", "--target", "6e6"),
             "--compute C", "not both")


def test_a_published_law_written_out_is_the_same_prior_as_its_fit_json(study: Path,
                                                                       tmp_path: Path,
                                                                       capsys, monkeypatch):
    """`--law E=...,A=...,alpha=...` (a published law, no file) plans exactly what a fit.json of
    the same parameters plans; a malformed one is one line, exit 2."""
    params = {"E": 1.2, "A": 30.0, "alpha": 0.3}
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"law": "power", "x": "n_nonembed", "y": "val_loss",
                               "params": params}))
    inline = ",".join(f"{k}={v}" for k, v in params.items())
    chosen = []
    for law, out in ((fit, tmp_path / "a"), (inline, tmp_path / "b")):
        proc = run_main(capsys, monkeypatch, "plan", "--law", law, "--noise", "1%",
                        "--target", "2e6", "--sims", "20", "--out", out)
        assert proc.returncode == 0, proc.stderr
        chosen.append(json.loads((out / "plan.json").read_text())["chosen"])
    assert chosen[0]["describe"] == chosen[1]["describe"]
    assert chosen[0]["p_within"] == chosen[1]["p_within"]
    for bad, words in (("E=1.2,A=x,alpha=0.3", ("NAME=NUMBER",)),
                       ("E=1.2,alpha=0.3", ("E, A and alpha",)),
                       ("E=1.2,A=-3,alpha=0.3", ("above 0",))):
        assert_refused(run_main(capsys, monkeypatch, "plan", "--law", bad, "--noise", "1%",
                                "--target", "2e6", "--out", tmp_path / "c"), *words)


def test_inline_law_in_n_and_d_is_the_chinchilla_form():
    from scalelab.plan.source import prior_record
    from scalelab.plan.two_axis import CHINCHILLA, chinchilla_law, chinchilla_prior

    record = prior_record(",".join(f"{k}={v}" for k, v in CHINCHILLA.items()))
    assert record["law"] == "chinchilla"
    law = chinchilla_law(record, "inline")
    np.testing.assert_allclose(law.theta_, chinchilla_prior().theta_)
