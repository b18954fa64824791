"""`scalelab grow`: forecasts stored before their rungs train and never rewritten, the step's
rungs planned by the study's rules, a grow through the real entry point (its forecasts in
study.db, summary.json and the report), a kill -9 mid-rung resumed, and bad input.

The studies grown here start from a ladder whose losses are drawn from a known law (recorded
as finished rungs of a real digits/MLP spec, so nothing trains but the grown rungs, which train
for real)."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scalelab.records import RungResult
from scalelab.storage import MemoryStore, StudyStore
from tests.helpers import assert_refused, cli_env, scalelab, scalelab_each, tiny_spec
from tests.storage.test_contract import open_store, plan, result

LAW = (0.05, 30.0, 0.8)  # E, A, alpha of the synthetic ladder's losses


def digits_spec(**train) -> dict:
    spec = tiny_spec(name="grow", task={"name": "digits"}, family={"name": "mlp"},
                     ladder={"sizes": [1e3, 2e3, 4e3, 8e3], "repeats": 2},
                     train={"tokens": 400, "eval_every": 25, "checkpoint_every": 10, **train})
    spec["family"].pop("block_size")
    return spec


def synthetic_study(folder: Path, spec: dict, sigma: float = 0.01, seed: int = 0) -> Path:
    """A study of `spec` whose rungs are recorded finished with losses from LAW times
    log-normal noise of `sigma`, its law fitted and outputs written as a run would."""
    from scalelab.ladder import plan_ladder
    from scalelab.spec import parse_spec
    from scalelab.study import canonical_spec, fit_rungs, open_study, resolve, write_outputs

    res = resolve(parse_spec(spec), None, None, folder)
    plans = plan_ladder(res.spec, res.task, res.family)
    rng = np.random.default_rng(seed)
    e, a, alpha = LAW
    with open_study(res.spec, folder, canonical_spec(res.spec)) as store:
        store.add_rungs([p.to_dict() for p in plans])
        for p in plans:
            loss = (e + a * p.n_nonembed ** -alpha) * math.exp(sigma * rng.standard_normal())
            store.record_rung(p.rung, RungResult("done", p.D, p.steps, 1.0, val_loss=loss,
                                                 flops=6.0 * p.n_nonembed * p.D).to_dict())
        store.replace_fits(fit_rungs(store.rungs(), res.spec))
        write_outputs(store)
    return folder


# -- the forecasts table ---------------------------------------------------------------------------


def forecast(rung: int, predicted: float = 0.2, **extra) -> dict:
    return {"rung": rung, "target": 6e4, "step": 1, "n": 967.0, "predicted": predicted,
            "lo": 0.15, "hi": 0.3, "level": 0.95, "plan": plan(rung),
            "detail": {"sigma": 0.01}, **extra}


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_forecasts_are_kept_as_first_recorded(kind: str, tmp_path: Path):
    with open_store(kind, tmp_path / kind) as store:
        store.add_rungs([plan(3), plan(4, target_n=6000.0), plan(5, target_n=9000.0)])
        assert store.add_forecasts([forecast(3), forecast(4)]) == [3, 4]
        first = store.forecasts()
        # a forecast is pre-registered: recording it again (a resumed grow) changes nothing
        assert store.add_forecasts([forecast(3, predicted=9.9), forecast(5)]) == [5]
        again = {f["rung"]: f for f in store.forecasts()}
        assert again[3] == first[0] and again[3]["predicted"] == 0.2
        assert again[3]["plan"] == plan(3) and again[3]["measured"] is None
        # what the rung measured comes with its forecast once it finished, and only then
        store.set_status(3, "running")
        assert store.forecasts()[0]["outcome"] is None
        store.record_rung(3, result(val_loss=0.25))
        store.record_rung(4, RungResult("diverged", 32000, 12, 0.5).to_dict())
        got = {f["rung"]: f for f in store.forecasts()}
        assert (got[3]["measured"], got[3]["outcome"], got[3]["predicted"]) == (0.25, "done",
                                                                                 0.2)
        assert got[3]["measured_at"] >= got[3]["created"]
        assert (got[4]["measured"], got[4]["outcome"]) == (None, "diverged")
        with pytest.raises(ValueError, match="unknown fields"):
            store.add_forecasts([forecast(6), forecast(7, measured=0.1)])
        assert [f["rung"] for f in store.forecasts()] == [3, 4, 5]  # all or none


def test_both_stores_give_the_same_forecasts(tmp_path: Path):
    rows = []
    for store in (StudyStore.create_or_open(tmp_path / "db"), MemoryStore(tmp_path / "m")):
        with store:
            store.add_rungs([plan(1)])
            store.add_forecasts([forecast(2), forecast(1, predicted=0.3)])
            store.record_rung(1, result(val_loss=0.3))
            rows.append([{k: v for k, v in f.items() if k not in ("created", "measured_at")}
                         for f in store.forecasts()])
    assert rows[0] == rows[1] and [f["rung"] for f in rows[0]] == [1, 2]
    assert rows[0][0]["measured"] == 0.3 and rows[0][1]["measured"] is None


def test_a_study_from_before_forecasts_gains_the_table(tmp_path: Path):
    folder = tmp_path / "old"
    with StudyStore.create_or_open(folder) as store:
        store.init_study("old", "digits", "mlp", {})
    with sqlite3.connect(folder / "study.db") as conn:
        conn.execute("DROP TABLE forecasts")
    with StudyStore.open_readonly(folder) as reader:  # an in-memory copy gains it
        assert reader.forecasts() == []
    with sqlite3.connect(folder / "study.db") as conn:  # the reader wrote nothing
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "forecasts" not in tables
    with StudyStore.create_or_open(folder) as writer:
        assert writer.add_forecasts([forecast(0)]) == [0]


# -- one step's pieces -----------------------------------------------------------------------------


def test_forecast_interval_is_the_law_interval_widened_by_one_run():
    from scalelab.laws.fit import Law
    from scalelab.plan.grow import forecast as run_forecast
    from scalelab.plan.simulation import assumed_noise

    record = {"law": "power", "x": "n_nonembed", "y": "val_loss", "level": 0.95,
              "params": {"E": 0.05, "A": 30.0, "alpha": 0.8}}
    noise = assumed_noise(Law.from_summary(record), 0.02)
    f = run_forecast(record, noise, 1000.0)
    point = 0.05 + 30.0 * 1000.0 ** -0.8
    # without a bootstrap the law has no interval: only one run's noise, +-1.96 sd of log L
    assert f["predicted"] == pytest.approx(point)
    assert f["lo"] == pytest.approx(point * math.exp(-1.959964 * 0.02), rel=1e-6)
    assert f["hi"] == pytest.approx(point * math.exp(1.959964 * 0.02), rel=1e-6)
    # with one, the two add in quadrature on each side
    record["bootstrap_params"] = {"E": [0.04, 0.06] * 50, "A": [30.0] * 100,
                                  "alpha": [0.8] * 100}
    g = run_forecast(record, noise, 1000.0)
    assert f["detail"]["law_lo"] is None
    law_lo, law_hi = g["detail"]["law_lo"], g["detail"]["law_hi"]
    assert law_lo < point < law_hi
    want = point * math.exp(-math.hypot(math.log(point / law_lo), 1.959964 * 0.02))
    assert g["lo"] == pytest.approx(want, rel=1e-6) and g["lo"] < f["lo"]
    # sizes off the law beyond their seeds' noise: a new size's run carries that spread too
    noise.record["shapes"] = {"sigma": 0.015}
    h = run_forecast(record, noise, 1000.0)
    run_sigma = math.hypot(0.02, 0.015)
    assert h["detail"]["sigma"] == pytest.approx(run_sigma)
    want = point * math.exp(-math.hypot(math.log(point / law_lo), 1.959964 * run_sigma))
    assert h["lo"] == pytest.approx(want, rel=1e-6) and h["lo"] < g["lo"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return synthetic_study(tmp_path_factory.mktemp("grow") / "study", digits_spec())


def test_step_rungs_follow_the_study_rules(synthetic: Path):
    from scalelab.ladder import data_seed, plan_ladder
    from scalelab.plan.grow import Proposal, step_plans
    from scalelab.spec import parse_spec
    from scalelab.study import resolve

    with StudyStore.open_readonly(synthetic) as store:
        rungs, spec = store.rungs(), parse_spec(store.study()["spec"])
    res = resolve(spec, None, None, synthetic)
    base = {p.n_nonembed: p for p in plan_ladder(res.spec, res.task, res.family)}
    # two more seeds at a size the study has: repeats 2 and 3, its key and D
    n = max(base)
    plans = step_plans(res.spec, res.task, res.family, rungs,
                       Proposal(float(n), float(base[n].target_n), 2, 1.0, 1.0, 0.5, ""))
    assert [p.rung for p in plans] == [8, 9] and [p.repeat for p in plans] == [2, 3]
    assert {p.seed for p in plans}.isdisjoint({r["seed"] for r in rungs})
    assert len({p.seed for p in plans}) == 2
    assert all((p.D, p.lr, p.shape, p.target_n) == (base[n].D, base[n].lr, base[n].shape,
                                                    base[n].target_n) for p in plans)
    assert [p.data_seed for p in plans] == [data_seed(res.spec, 2), data_seed(res.spec, 3)]
    # a new size: repeat 0, the D rule and learning-rate rule at its own N
    from scalelab.plan.source import realizer

    new = realizer(res.family, res.task)(2 * n)
    one = step_plans(res.spec, res.task, res.family, rungs,
                     Proposal(new, new, 1, 1.0, 1.0, 0.5, ""))[0]
    assert one.n_nonembed == new and one.repeat == 0 and one.rung == 8
    assert one.D == base[n].D  # this spec's D is fixed, not a rule in N
    assert one.lr < base[n].lr  # the size rule: lr falls with N


def test_proposal_stays_in_budget_and_below_the_target(synthetic: Path):
    from scalelab.plan.grow import candidate_steps, propose, read_state, study_ladder
    from scalelab.plan.source import study_source
    from scalelab.spec import parse_spec
    from scalelab.study import resolve

    state = read_state(synthetic, 6e4)
    res = resolve(parse_spec(state.spec), None, None, synthetic)
    from scalelab.plan.source import realizer

    realize = realizer(res.family, res.task)
    src = study_source(state.summary, synthetic)
    ladder = study_ladder(state.rungs)
    assert ladder.counts == (2, 2, 2, 2)
    steps = candidate_steps(ladder, 6e4, realize)
    assert all(n <= 3e4 for n, _ in steps)  # at least MIN_REACH below the target
    assert {s for _, s in steps} == {1, 2, 3} and any(n > ladder.sizes[-1] for n, _ in steps)
    # only sizes it has once the target is near
    assert all(n in ladder.sizes for n, _ in candidate_steps(ladder, 1.2e4, realize))
    cheapest = min(src.cost.run_flops(n) * s for n, s in steps)
    step = propose(src, state.rungs, 6e4, realize, cheapest * 1.01, sims=30)
    assert step is not None and step.flops <= cheapest * 1.01 and step.seeds == 1
    assert propose(src, state.rungs, 6e4, realize, cheapest * 0.99, sims=30) is None


# -- through the real entry point ------------------------------------------------------------------


def test_bad_input_is_one_line_and_nothing_recorded(synthetic: Path, tmp_path: Path):
    from scalelab.spec import parse_spec
    from scalelab.study import canonical_spec, open_study, resolve

    # a study with no law yet: its rungs not trained
    res = resolve(parse_spec(digits_spec()), None, None, tmp_path / "new")
    with open_study(res.spec, tmp_path / "new", canonical_spec(res.spec)):
        pass
    before = (synthetic / "study.db").read_bytes()
    procs = scalelab_each(
        ["grow", synthetic, "--target", "5e3"],
        ["grow", synthetic, "--target", "6e4", "--budget", "1e3", "--sims", "10",
         "--tolerance", "0.1%"],
        ["grow", synthetic, "--target", "6e4", "--tolerance", "150%"],
        ["grow", tmp_path / "new", "--target", "6e4"])
    assert_refused(procs[0], "inside the measured range")
    assert_refused(procs[1], "too small for any step", "the cheapest needs")
    assert_refused(procs[2], "--tolerance")
    assert_refused(procs[3], "no fitted law")
    assert (synthetic / "study.db").read_bytes() == before
    with StudyStore.open_readonly(synthetic) as store:
        assert store.forecasts() == []


def test_grow_records_each_forecast_before_its_rung_trains(synthetic: Path, tmp_path: Path):
    import shutil

    folder = Path(shutil.copytree(synthetic, tmp_path / "study"))
    proc = scalelab("grow", folder, "--target", "6e4", "--steps", "2", "--sims", "30",
                    "--tolerance", "0.1%", check=True)
    assert "stopped: 2 step(s) grown" in proc.stdout, proc.stdout
    with StudyStore.open_readonly(folder) as store:
        forecasts, rungs = store.forecasts(), {r["rung"]: r for r in store.rungs()}
    assert {f["step"] for f in forecasts} == {1, 2}
    for f in forecasts:
        rung = rungs[f["rung"]]
        assert rung["status"] == "done" and f["measured"] == rung["val_loss"]
        assert f["lo"] < f["predicted"] < f["hi"] and f["outcome"] == "done"
        assert f["created"] < f["measured_at"]  # recorded before the rung finished
    # step 2 was forecast from the law refitted with step 1's rungs
    first = [f for f in forecasts if f["step"] == 1]
    second = [f for f in forecasts if f["step"] == 2]
    assert second[0]["detail"]["fitted_rungs"] == 8 + len(first)
    assert second[0]["detail"]["law"] != first[0]["detail"]["law"]
    summary = json.loads((folder / "summary.json").read_text())
    assert [f["rung"] for f in summary["forecasts"]] == [f["rung"] for f in forecasts]
    assert {f["rung"] for f in forecasts} <= {r["rung"] for r in summary["rungs"]}
    html = (folder / "report.html").read_text()
    assert "Forecast record" in html
    from scalelab.report.forecast import coverage

    hits, measured = coverage(forecasts)
    assert measured == len(forecasts) and f"{hits} of {measured}</b>" in html


def _row(folder: Path, rung: int | None = None) -> dict | None:
    if not (folder / "study.db").exists():
        return None
    try:
        with StudyStore.open_readonly(folder) as store:
            forecasts, rungs = store.forecasts(), {r["rung"]: r for r in store.rungs()}
    except Exception:  # the writer is mid-transaction
        return None
    for f in forecasts:
        if rung is None or f["rung"] == rung:
            return {**f, "status": rungs.get(f["rung"], {}).get("status")}
    return None


@pytest.mark.slow
def test_kill_during_a_grown_rung_resumes_it_and_keeps_its_forecast(synthetic: Path,
                                                                   tmp_path: Path):
    import shutil

    folder = Path(shutil.copytree(synthetic, tmp_path / "study"))
    args = ["grow", str(folder), "--target", "6e4", "--steps", "1", "--sims", "30",
            "--tolerance", "0.1%"]
    proc = subprocess.Popen([sys.executable, "-m", "scalelab", *args], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            row = _row(folder)
            if row is not None and row["status"] == "running":
                break
            assert proc.poll() is None, "grow ended before its rung ran"
            time.sleep(0.05)
        else:
            raise AssertionError("the grown rung never started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _row(folder)
    assert before is not None and before["measured"] is None
    again = scalelab(*args, check=True)
    assert "resuming step 1" in again.stdout, again.stdout
    after = _row(folder, before["rung"])
    assert after["status"] == "done" and after["measured"] is not None
    for key in ("created", "predicted", "lo", "hi", "plan", "detail", "step", "n"):
        assert after[key] == before[key], key
    with StudyStore.open_readonly(folder) as store:
        assert len(store.forecasts()) == len({f["rung"] for f in store.forecasts()})
        assert {f["step"] for f in store.forecasts()} == {1}


def test_forecast_record_section_counts_the_running_coverage():
    from scalelab.report.forecast import coverage, forecast_section

    assert forecast_section({"forecasts": []}) is None
    rows = [forecast(8, detail={"target_before": {"point": 0.1, "lo": 0.09, "hi": 0.11}}),
            forecast(9), forecast(10), forecast(11)]
    rows[1]["step"] = rows[2]["step"] = rows[3]["step"] = 2
    outcomes = [(0.2, "done"), (0.5, "done"), (None, "diverged"), (None, None)]
    for f, (measured, outcome) in zip(rows, outcomes, strict=True):
        f.update(measured=measured, outcome=outcome)
    assert coverage(rows) == (1, 2)  # 0.5 lies above [0.15, 0.3]; unmeasured ones not counted
    html = forecast_section({"forecasts": rows})
    assert "<b>1 of 2</b>" in html and html.count("<b>outside</b>") == 1
    # the running coverage after each row: 1/1, then 1/2 from the outside one on
    cells = [row.split("<td>")[9].split("</td>")[0] for row in html.split("<tr>")[2:]]
    assert cells == ["1/1", "1/2", "1/2", "1/2"]
    assert "diverged" in html and "not yet" in html and "0.1000 [0.0900, 0.1100]" in html


def test_study_api_reads_forecasts_and_grows_only_a_writable_study(synthetic: Path):
    from scalelab import Study
    from scalelab.errors import UserError

    with Study.load(synthetic) as study:
        assert study.forecasts == []
        with pytest.raises(UserError, match="read-only"):
            study.grow(6e4)
