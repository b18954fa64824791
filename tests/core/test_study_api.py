"""`scalelab.Study`: create and run a tiny study, load it back read-only (also beside a process
holding its lock) and from the v1 fixture, its typed records, its own law and its DataFrame."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from scalelab import Study
from scalelab.api import Finetune, Rung
from scalelab.errors import UserError
from scalelab.laws import Law
from scalelab.records import RungResult, Variant
from scalelab.storage import MemoryStore, StudyStore
from scalelab.storage.base import FINETUNE_COLUMNS, FINETUNE_JSON
from tests.helpers import DATA, tiny_spec

SIZES = [3.0e3, 1.2e4, 3.0e4, 6.0e4]


def spec(sizes: list[float] = SIZES) -> dict:
    return tiny_spec(name="api", ladder={"sizes": sizes},
                     train={"tokens": 6_000, "eval_every": 10, "checkpoint_every": 20,
                            "eval_tokens": 512, "final_eval_tokens": 2048},
                     measure={"latency_batches": [1], "latency_repeats": 3})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny ladder created and run through the API (4 sizes, a few seconds)."""
    folder = tmp_path_factory.mktemp("api") / "study"
    seen = []

    class Count:
        def on_event(self, event):
            seen.append(type(event).__name__)

        def on_jobs(self, jobs):
            pass

        def on_study(self, folder, spec):
            pass

        def on_outputs(self, folder, summary):
            seen.append("outputs")

    with Study.create(spec(), folder) as study:
        assert not study.readonly and [r.status for r in study.rungs] == []
        study.run(callbacks=[Count()])
        assert [r.status for r in study.rungs] == ["done"] * len(SIZES)
    assert seen.count("Finished") == len(SIZES) and seen[-1] == "outputs"
    return folder


@pytest.fixture
def v1_copy(tmp_path) -> Path:
    folder = tmp_path / "v1"
    shutil.copytree(DATA / "v1_study", folder)
    return folder


def check_law_and_frame(study: Study) -> None:
    """law().predict gives a point inside its interval, the same as the study's stored law;
    to_dataframe has a row per rung with its loss."""
    pred = study.law().predict([1e7])
    assert pred.lo is not None and pred.lo[0] <= pred.point[0] <= pred.hi[0]
    stored = next(f for f in study.fits if f.get("y", "val_loss") == "val_loss")
    again = Law.from_summary(stored).predict([1e7])
    np.testing.assert_allclose([pred.point[0], pred.lo[0], pred.hi[0]],
                               [again.point[0], again.lo[0], again.hi[0]], rtol=1e-9)
    frame = study.to_dataframe()
    rungs = study.rungs
    assert list(frame["rung"]) == [r.rung for r in rungs]
    assert list(frame["val_loss"]) == [r.val_loss for r in rungs]
    assert list(frame["n_nonembed"]) == [r.n_nonembed for r in rungs]
    assert "latency_ms.1" in frame.columns and "shape.d_model" in frame.columns


def test_load_reads_the_trained_study(trained):
    before = (trained / "study.db").read_bytes()
    with Study.load(trained) as study:
        assert study.readonly and study.name == "api"
        rungs = study.rungs
        assert all(isinstance(r, Rung) and isinstance(r.result, RungResult) for r in rungs)
        assert [r.plan.target_n for r in rungs] == SIZES
        assert [r.plan.rung for r in rungs] == [r.rung for r in rungs]
        check_law_and_frame(study)
        assert study.variants == [] and study.finetunes == []
        with pytest.raises(UserError, match="no law of val_error"):
            study.law("val_error")  # a text study has no error rate
    assert (trained / "study.db").read_bytes() == before


def test_load_reads_the_v1_fixture(v1_copy):
    before = (v1_copy / "study.db").read_bytes()
    with Study.load(v1_copy) as study:
        assert study.storage.migrated_from == 1
        check_law_and_frame(study)
        assert [r.plan.unit for r in study.rungs] == ["byte"] * 4
        assert study.rungs[0].result.metrics["bpb"] > 0  # v1's val_bpb, as a metric
        variants = study.variants
        assert all(isinstance(v, Variant) and v.of_rung == 3 for v in variants)
        assert sorted(v.method for v in variants) == ["distill", "fp16", "int8", "lowrank",
                                                      "prune", "sparse"]
        # v1 stored a pruned model's kept widths only: its shape is there, normalised once
        prune = next(v for v in variants if v.method == "prune")
        assert prune.settings["shape"]["d_model"] == study.rungs[3].plan.shape["d_model"]
    assert (v1_copy / "study.db").read_bytes() == before


def test_readonly_load_is_not_blocked_by_the_lock_and_cannot_write(trained):
    code = ("import sys; from scalelab.storage import StudyStore; "
            f"s = StudyStore.create_or_open({str(trained)!r}); print('held', flush=True); "
            "sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="locked by a running process"):
            Study.load(trained, readonly=False)
        with Study.load(trained) as study:  # the reader takes no lock
            assert len(study.rungs) == len(SIZES)
            with pytest.raises(UserError, match="read-only"):
                study.run()
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                study.storage.set_status(0, "pending")
    finally:
        holder.communicate("", timeout=60)
    assert [r.status for r in Study.load(trained).rungs] == ["done"] * len(SIZES)


def test_writable_load_holds_the_lock(trained):
    with Study.load(trained, readonly=False) as study:
        assert not study.readonly
        with pytest.raises(UserError, match="locked"):
            StudyStore.create_or_open(trained)
    StudyStore.create_or_open(trained).close()  # released on close


def test_a_loaded_study_runs_again_from_its_stored_spec(trained):
    """Loaded for writing, its stored spec resumes it: every rung is finished, none trains."""
    events = []

    class Watch:
        def on_event(self, event):
            events.append(event)

        def on_jobs(self, jobs):
            events.extend(jobs)

        def on_study(self, folder, spec):
            pass

        def on_outputs(self, folder, summary):
            pass

    with Study.load(trained, readonly=False) as study:
        losses = [r.val_loss for r in study.rungs]
        study.run(callbacks=[Watch()])
        assert not study.readonly  # the lock is held again after the run
        with pytest.raises(UserError, match="locked"):
            StudyStore.create_or_open(trained)
        assert [r.val_loss for r in study.rungs] == losses
    assert events == []


def test_create_refuses_a_folder_holding_another_study(trained):
    with pytest.raises(UserError, match="different spec"):
        Study.create(spec(SIZES[:3]), trained)
    for readonly in (True, False):
        with pytest.raises(UserError, match="no study.db"):
            Study.load(trained / "nothing-here", readonly=readonly)
    assert not (trained / "nothing-here").exists()  # a writable load created nothing either


def test_to_dataframe_without_pandas_is_one_line(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    with Study.load(trained) as study, pytest.raises(UserError) as info:
        study.to_dataframe()
    assert str(info.value) == "Study.to_dataframe needs pandas: pip install pandas"


def test_write_report_from_a_readonly_load(trained):
    (trained / "report.html").unlink()
    with Study.load(trained) as study:
        assert study.write_report() == trained / "report.html"
    assert (trained / "report.html").stat().st_size > 0


def test_a_study_on_the_memory_storage(tmp_path):
    """Any storage holds a Study: typed fine-tunes from rows, and no run off a study folder."""
    store = MemoryStore(tmp_path)
    store.init_study("mem", "digits", "mlp", tiny_spec(name="mem"))
    store.record_finetune({"name": "ft", "of_rung": 0, "task": "digits", "method": "lora",
                           "status": "done", "val_loss": 0.5, "metrics": {"error": 0.1},
                           "window_losses": [0.4, 0.6]})
    study = Study(store)
    assert study.name == "mem" and study.rungs == [] and study.fits == []
    (ft,) = study.finetunes
    assert ft == Finetune(name="ft", of_rung=0, task="digits", method="lora", status="done",
                          val_loss=0.5, metrics={"error": 0.1})
    with pytest.raises(UserError, match="no law of val_loss"):
        study.law()
    with pytest.raises(UserError, match="run it"):
        study.run()


def test_finetune_has_every_recorded_field():
    assert {f.name for f in fields(Finetune)} == (
        set(FINETUNE_COLUMNS) | set(FINETUNE_JSON)) - {"window_losses"}

