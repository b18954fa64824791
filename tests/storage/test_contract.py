"""The storage contract (`scalelab.storage.base.StudyStorage`), the same tests against the SQLite
study store and the in-memory one, and a check that both give the same rows for the same writes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalelab.records import RungPlan, RungResult
from scalelab.storage import MemoryStore, StudyStorage, StudyStore
from scalelab.storage.base import FINETUNE_COLUMNS, FINETUNE_JSON

KINDS = ("sqlite", "memory")
# Timestamps differ between two stores written one after the other.
CLOCK = ("created", "updated")


def open_store(kind: str, folder: Path) -> StudyStorage:
    return StudyStore.create_or_open(folder) if kind == "sqlite" else MemoryStore(folder)


@pytest.fixture(params=KINDS)
def store(request, tmp_path) -> Iterator[StudyStorage]:
    with open_store(request.param, tmp_path / request.param) as s:
        yield s


def plan(rung: int, target_n: float = 3000.0, D: int = 32000, repeat: int = 0,
         **extra) -> dict:
    return RungPlan(
        rung=rung, family="gpt",
        shape={"n_layer": 1, "d_model": 16, "n_head": 1, "block_size": 32, "vocab_size": 256},
        target_n=target_n, n_params=7920 + rung, n_nonembed=3312 + rung, D=D, unit="byte",
        steps=125, batch_size=8, units_per_step=256, lr=0.01, warmup_steps=6, seed=rung,
        repeat=repeat, describe="1x16", **extra,
    ).to_dict()


def result(val_loss: float = 2.5, **extra) -> dict:
    return RungResult(status="done", D=32000, steps=125, train_seconds=1.5, val_loss=val_loss,
                      train_loss=2.6, metrics={"bpb": 3.6}, flops=1e9, units_per_s=2e4,
                      latency_ms={1: {"median": 0.1}}, checkpoint="checkpoints/rung-0.st",
                      **extra).to_dict()


def finetune(name: str, of_rung: int = 0, task: str = "digits", **extra) -> dict:
    return {"name": name, "of_rung": of_rung, "task": task, "method": "lora",
            "status": "done", "val_loss": 1.25, "settings": {"rank": 4},
            "window_losses": [1.0, 1.5], "curve": [{"step": 1, "val_loss": 2.0}], **extra}


def without_clock(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in CLOCK} for r in rows]


# -- the study -------------------------------------------------------------------------------------


def test_study_row_round_trips(store):
    assert store.study() is None
    store.init_study("s", "text", "gpt", {"name": "s", "ladder": {"sizes": [1, 2]}})
    store.set_machine({"device": "cpu"}, {"sha256": "x"}, 1.5e12, None)
    store.set_model({"family": "gpt", "code": "abc"})
    info = store.study()
    assert {k: info[k] for k in ("id", "name", "task", "family", "spec", "machine", "corpus",
                                 "gemm_peak_flops", "vendor_peak_flops", "model")} == {
        "id": 1, "name": "s", "task": "text", "family": "gpt",
        "spec": {"name": "s", "ladder": {"sizes": [1, 2]}}, "machine": {"device": "cpu"},
        "corpus": {"sha256": "x"}, "gemm_peak_flops": 1.5e12, "vendor_peak_flops": None,
        "model": {"family": "gpt", "code": "abc"}}
    assert store.checkpoints == store.folder / "checkpoints"


# -- rungs -----------------------------------------------------------------------------------------


def test_add_rungs_keeps_the_stored_rung_of_an_id_or_key(store):
    assert store.add_rungs([plan(0), plan(1, target_n=1.2e4)]) == [0, 1]
    # rung 0 again (same id), and rung 5 with rung 1's key: both skipped; rung 2 is new
    assert store.add_rungs([plan(0, target_n=9e9), plan(5, target_n=1.2e4),
                            plan(2, target_n=3e4)]) == [2]
    rows = store.rungs()
    assert [r["rung"] for r in rows] == [0, 1, 2]
    assert rows[0]["key_n"] == 3000.0 and rows[0]["status"] == "pending"
    assert rows[0]["plan"] == plan(0)
    # another repeat of the same size and D is another key
    assert store.add_rungs([plan(3, repeat=1)]) == [3]


def test_record_rung_and_the_derived_keys(store):
    store.add_rungs([plan(0, budget=1e12, schedule="wsd", train_units=16000, trunk=None)])
    store.record_rung(0, result())
    (row,) = store.rungs()
    assert row["val_loss"] == 2.5 and row["metrics"] == {"bpb": 3.6}
    assert row["latency_ms"] == {"1": {"median": 0.1}}  # JSON: integer keys come back as text
    assert row["shape"]["d_model"] == 16 and row["plan"]["rung"] == 0
    # the names summary.json carries beside the stored ones
    assert (row["tokens"], row["tokens_per_s"], row["val_bpb"]) == (32000, 2e4, 3.6)
    assert (row["n_layer"], row["d_model"], row["n_head"]) == (1, 16, 1)
    assert (row["budget"], row["schedule"], row["trunk"], row["epochs"]) == (1e12, "wsd", None,
                                                                             2.0)
    assert row["energy_j"] is None and row["failed_reason"] is None


def test_record_rung_refuses_what_it_would_lose(store):
    store.add_rungs([plan(0)])
    with pytest.raises(ValueError, match="unknown result fields"):
        store.record_rung(0, {"val_loss": 1.0, "val_los": 2.0})
    with pytest.raises(ValueError, match="no rung 7"):
        store.record_rung(7, result())
    assert store.rungs()[0]["val_loss"] is None


def test_status_failure_and_drop(store):
    store.add_rungs([plan(0), plan(1, target_n=1.2e4)])
    store.fail_rung(0, "worker died")
    assert store.rungs()[0]["status"] == "failed"
    assert store.rungs()[0]["failed_reason"] == "worker died"
    store.set_status(0, "running")  # the reason goes with the old status
    assert (store.rungs()[0]["status"], store.rungs()[0]["failed_reason"]) == ("running", None)
    store.record_curve(0, [{"step": 1, "tokens": 256, "train_loss": 5.0, "val_loss": None,
                            "lr": 0.01}])
    store.record_curve(1, [{"step": 1, "tokens": 256, "train_loss": 5.0, "val_loss": None,
                            "lr": 0.01}])
    store.drop_rungs([0])
    assert [r["rung"] for r in store.rungs()] == [1]
    assert list(store.curves()) == [1]
    assert store.add_rungs([plan(0)]) == [0]  # planned again


def test_curve_points_replace_by_step_and_read_in_order(store):
    def point(step, loss):
        return {"step": step, "tokens": step * 256, "train_loss": loss, "val_loss": None,
                "lr": 0.01}

    store.add_rungs([plan(0)])
    store.record_curve(0, [point(20, 4.0), point(10, 5.0)])
    store.record_curve(0, [point(20, 3.5), point(30, 3.0)])
    assert store.curves() == {0: [point(10, 5.0), point(20, 3.5), point(30, 3.0)]}


# -- fits, variants, fine-tunes --------------------------------------------------------------------


def test_fits_are_replaced_whole(store):
    first = {"law": "power", "x": "n_nonembed", "y": "val_loss", "params": {"E": 1.0}}
    two_axis = {"law": "chinchilla", "x": ["N", "D"], "y": "val_loss", "params": {"E": 2.0}}
    store.replace_fits([first])
    store.replace_fits([two_axis, first])
    assert store.fits() == [two_axis, first]
    with pytest.raises(KeyError):  # a record without its law is refused, nothing replaced
        store.replace_fits([first, {"x": "n_nonembed"}])
    assert store.fits() == [two_axis, first]


def test_variants_insert_or_replace_by_name(store):
    def variant(name, of_rung, loss):
        return {"name": name, "of_rung": of_rung, "method": "int8",
                "settings": {"bits": 8}, "n_params": 10, "n_nonembed": 5, "bytes": 100,
                "val_loss": loss, "latency_ms": {1: {"median": 0.2}}, "peak_mem_bytes": None,
                "extra": {"file": f"variants/{name}"}}

    store.record_variant(variant("r2-int8", 2, 2.0))
    store.record_variant(variant("r1-int8", 1, 2.5))
    store.record_variant(variant("r2-int8", 2, 1.9))
    rows = store.variants()
    assert [(v["name"], v["val_loss"]) for v in rows] == [("r1-int8", 2.5), ("r2-int8", 1.9)]
    assert rows[0]["latency_ms"] == {"1": {"median": 0.2}}
    assert rows[0]["settings"] == {"bits": 8} and rows[0]["extra"] == {"file": "variants/r1-int8"}


def test_finetunes_keep_created_and_hide_windows_unless_asked(store):
    store.record_finetune(finetune("b", of_rung=1))
    store.record_finetune(finetune("a", of_rung=1))
    store.record_finetune(finetune("z", of_rung=0, task="tabular"))
    created = store.finetunes()[1]["created"]
    store.record_finetune(finetune("a", of_rung=1, val_loss=1.0))
    rows = store.finetunes()
    assert [r["name"] for r in rows] == ["z", "a", "b"]
    assert rows[1]["val_loss"] == 1.0 and rows[1]["created"] == created
    assert "window_losses" not in rows[1]
    assert store.finetunes(windows=True)[1]["window_losses"] == [1.0, 1.5]
    assert set(rows[1]) == (set(FINETUNE_COLUMNS) | set(FINETUNE_JSON) | set(CLOCK)) - {
        "window_losses"}
    with pytest.raises(ValueError, match="unknown fields"):
        store.record_finetune(finetune("c", loss=1.0))
    store.delete_finetune("a")
    assert [r["name"] for r in store.finetunes()] == ["z", "b"]


def test_finetune_scaling_by_task(store):
    store.set_finetune_scaling("tabular", {"task": "tabular", "laws": []})
    store.set_finetune_scaling("digits", {"task": "digits", "laws": [1]})
    store.set_finetune_scaling("tabular", {"task": "tabular", "laws": [2]})
    assert store.finetune_scaling() == [{"task": "digits", "laws": [1]},
                                        {"task": "tabular", "laws": [2]}]


# -- both stores, the same rows --------------------------------------------------------------------


def write_a_study(store: StudyStorage) -> None:
    store.init_study("s", "text", "gpt", {"name": "s"})
    store.set_machine({"device": "cpu"}, {"sha256": "x"}, 1e12, 2e12)
    store.add_rungs([plan(0), plan(1, target_n=1.2e4), plan(2, target_n=3e4, train_units=8000)])
    store.set_status(0, "running")
    store.record_curve(0, [{"step": 5, "tokens": 1280, "train_loss": 4.0, "val_loss": 4.1,
                            "lr": 0.01}])
    store.record_rung(0, result(2.4, energy_j=3.0))
    store.record_rung(2, {"status": "diverged", "diverged_step": 3, "diverged_reason": "nan"})
    store.fail_rung(1, "out of memory")
    store.replace_fits([{"law": "power", "x": "n_nonembed", "params": {"E": 1.0}}])
    store.record_variant({"name": "r0-int8", "of_rung": 0, "method": "int8"})
    store.record_finetune(finetune("f", metrics={"accuracy": 0.5}))
    store.set_finetune_scaling("digits", {"task": "digits"})


def reads(store: StudyStorage) -> dict:
    return {"study": without_clock([store.study()]), "rungs": without_clock(store.rungs()),
            "curves": store.curves(), "fits": store.fits(),
            "variants": without_clock(store.variants()),
            "finetunes": without_clock(store.finetunes(windows=True)),
            "scaling": store.finetune_scaling()}


def test_memory_and_sqlite_give_the_same_rows(tmp_path):
    with open_store("sqlite", tmp_path / "a") as sql, open_store("memory", tmp_path / "b") as mem:
        write_a_study(sql)
        write_a_study(mem)
        got_sql, got_mem = reads(sql), reads(mem)
    assert got_sql == got_mem
    assert [r["status"] for r in got_sql["rungs"]] == ["done", "failed", "diverged"]
    # and what the SQLite store wrote reads back the same from a read-only open
    with StudyStore.open_readonly(tmp_path / "a") as ro:
        assert reads(ro) == got_mem


def test_a_readonly_sqlite_store_cannot_write(tmp_path):
    with StudyStore.create_or_open(tmp_path) as w:
        write_a_study(w)
    db = tmp_path / "study.db"
    before = db.read_bytes()
    with StudyStore.open_readonly(tmp_path) as ro:
        assert ro.readonly
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.set_status(0, "pending")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.replace_fits([])
        assert ro.rungs()[0]["status"] == "done" and len(ro.fits()) == 1
    assert db.read_bytes() == before


def test_a_study_reads_both_stores_alike(tmp_path):
    from scalelab.api import Study

    with open_store("sqlite", tmp_path / "a") as sql, open_store("memory", tmp_path / "b") as mem:
        write_a_study(sql)
        write_a_study(mem)
        rungs = Study(sql).rungs
        assert rungs == Study(mem).rungs
        assert Study(sql).finetunes == Study(mem).finetunes
        assert Study(sql).variants == Study(mem).variants
    done, failed, diverged = rungs
    assert done.result.val_loss == 2.4 and done.result.energy_j == 3.0
    assert done.result.latency_ms == {"1": {"median": 0.1}} and done.plan.seed == 0
    assert failed.result is None and failed.failed_reason == "out of memory"
    assert (diverged.result.status, diverged.result.diverged_step) == ("diverged", 3)
    assert diverged.plan.epochs == 4.0  # 32,000 units over a training split of 8,000
