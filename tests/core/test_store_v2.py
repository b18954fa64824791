"""study.db schema v2: round trips of RungPlan/RungResult, the rung key, and the v1 -> v2 upgrade
(in place by the writer, in memory by a reader) on a real v1 study folder."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from scalelab.errors import UserError
from scalelab.records import RungPlan, RungResult
from scalelab.storage import StudyStore, migrations

V1_FIXTURE = Path(__file__).resolve().parents[1] / "data" / "v1_study"


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def v1_study(tmp_path) -> Path:
    """A private copy of the v1 fixture (the fixture itself is never opened). A reader of the
    fixture may have left an empty WAL and its index behind: they hold no data, skip them."""
    folder = tmp_path / "v1"

    def empty_wal(directory, names):
        return [n for n in names if n.endswith("-shm")
                or (n.endswith("-wal") and (Path(directory) / n).stat().st_size == 0)]

    shutil.copytree(V1_FIXTURE, folder, ignore=empty_wal)
    assert not (folder / "study.db-wal").exists()
    return folder


def plain(folder: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def dump(folder: Path) -> dict:
    """Every table's SQL and rows, read with plain sqlite3."""
    conn = plain(folder)
    out = {}
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                                  "ORDER BY name"):
        out[name] = (sql, [tuple(r) for r in conn.execute(f"SELECT * FROM {name}")])
    conn.close()
    return out


def version_on_disk(folder: Path) -> list:
    conn = plain(folder)
    rows = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
    conn.close()
    return rows


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def gpt_plan(rung: int = 0, target_n: float = 3000.0, D: int = 32000, repeat: int = 0,
             lr: float = 0.009341669078682401) -> RungPlan:
    return RungPlan(
        rung=rung, family="gpt",
        shape={"n_layer": 1, "d_model": 16, "n_head": 1, "block_size": 32, "vocab_size": 256,
               "share_layers": False, "head_dim": 16, "d_ff": 64},
        target_n=target_n, n_params=7920, n_nonembed=3312, D=D, unit="byte", steps=125,
        batch_size=8, units_per_step=256, lr=lr, warmup_steps=6, seed=rung, repeat=repeat,
    )


# -- a fresh v2 store ------------------------------------------------------------------------------


def test_fresh_store_round_trips_plan_and_result_with_v1_era_keys(tmp_path):
    folder = tmp_path / "s"
    plan = gpt_plan()
    mlp = RungPlan(rung=1, family="mlp", shape={"d_in": 8, "width": 24, "depth": 2, "d_out": 3},
                   target_n=1.5e3, n_params=1000, n_nonembed=1000, D=4096, unit="example",
                   steps=64, batch_size=64, units_per_step=64, lr=0.01, warmup_steps=3, seed=7,
                   repeat=2)
    result = RungResult(
        status="done", D=31744, steps=124, train_seconds=0.5, val_loss=2.625, train_loss=2.5,
        metrics={"bpb": 3.75, "acc": 0.125}, flops=1.25e9, flops_6nd=1.5e9, units_per_s=92481.5,
        mfu=0.0375, peak_mem_bytes=468115456, checkpoint_bytes=33000,
        latency_ms={"1": {"median": 0.0985, "iqr": 0.002, "repeats": 3, "threads": 1}},
        checkpoint="checkpoints/rung-0.safetensors",
    )
    with StudyStore.create_or_open(folder) as store:
        assert store.add_rungs([plan.to_dict(), mlp.to_dict()]) == [0, 1]
        pending = store.rungs()[0]
        assert (pending["status"], pending["D"], pending["metrics"], pending["val_bpb"]) == (
            "pending", 32000, None, None)
        store.record_rung(0, result.to_dict())
        store.record_rung(1, {"status": "diverged", "diverged_step": 9,
                              "diverged_reason": "loss 9.5 > 3x start"})
        with pytest.raises(ValueError, match="unknown result fields"):
            store.record_rung(0, {"tokens": 5})
        with pytest.raises(ValueError, match="no rung 9"):
            store.record_rung(9, {"status": "done"})
    assert version_on_disk(folder) == [2]

    with StudyStore.open_readonly(folder) as ro:
        assert ro.migrated_from is None
        gpt, other = ro.rungs()
    assert isinstance(gpt.pop("updated"), float)
    assert gpt == {
        "rung": 0, "key_n": 3000.0, "key_d": 32000, "repeat": 0, "status": "done",
        "family": "gpt", "plan": plan.to_dict(), "shape": plan.shape,
        "n_params": 7920, "n_nonembed": 3312, "D": 31744, "unit": "byte", "steps": 124,
        "lr": 0.009341669078682401, "seed": 0, "val_loss": 2.625, "train_loss": 2.5,
        "metrics": {"bpb": 3.75, "acc": 0.125}, "flops": 1.25e9, "flops_6nd": 1.5e9,
        "train_seconds": 0.5, "units_per_s": 92481.5, "mfu": 0.0375, "energy_j": None,
        "peak_mem_bytes": 468115456, "checkpoint_bytes": 33000,
        "latency_ms": {"1": {"median": 0.0985, "iqr": 0.002, "repeats": 3, "threads": 1}},
        "diverged_step": None, "diverged_reason": None, "failed_reason": None,
        "checkpoint": "checkpoints/rung-0.safetensors",
        # v1-era names, derived
        "tokens": 31744, "tokens_per_s": 92481.5, "val_bpb": 3.75,
        "n_layer": 1, "d_model": 16, "n_head": 1,
        # two-axis keys, derived from the plan (an N-only plan: no budget, cosine, no trunk;
        # no train_units given, so no epochs)
        "budget": None, "schedule": "cosine", "trunk": None, "epochs": None,
    }
    assert RungPlan.from_dict(gpt["plan"]) == plan
    assert (other["rung"], other["key_n"], other["key_d"], other["repeat"]) == (1, 1500.0, 4096, 2)
    assert (other["status"], other["diverged_step"], other["diverged_reason"]) == (
        "diverged", 9, "loss 9.5 > 3x start")
    assert (other["family"], other["unit"], other["D"], other["tokens"]) == (
        "mlp", "example", 4096, 4096)
    assert (other["n_layer"], other["d_model"], other["n_head"], other["val_bpb"]) == (
        None, None, None, None)
    assert other["metrics"] is None and other["latency_ms"] is None
    assert RungPlan.from_dict(other["plan"]) == mlp


def test_rung_key_keeps_the_first_plan(tmp_path):
    folder = tmp_path / "s"
    with StudyStore.create_or_open(folder) as store:
        assert store.add_rungs([gpt_plan(rung=0, lr=0.01).to_dict()]) == [0]
        # same (target_n, D, repeat) under another id: ignored, the first plan stays
        assert store.add_rungs([gpt_plan(rung=5, lr=0.02).to_dict()]) == []
        # same id again (a resumed study re-plans): ignored
        assert store.add_rungs([gpt_plan(rung=0, target_n=9e3, lr=0.03).to_dict()]) == []
        # another repeat, another D of the same N: new keys, added (a two-axis ladder)
        assert store.add_rungs([gpt_plan(rung=6, repeat=1).to_dict(),
                                gpt_plan(rung=7, D=64000).to_dict()]) == [6, 7]
        rows = store.rungs()
    assert [(r["rung"], r["key_n"], r["key_d"], r["repeat"]) for r in rows] == [
        (0, 3000.0, 32000, 0), (6, 3000.0, 32000, 1), (7, 3000.0, 64000, 0)]
    assert rows[0]["lr"] == 0.01 and rows[0]["plan"]["lr"] == 0.01
    # the constraint lives in the schema, not only in add_rungs
    conn = sqlite3.connect(folder / "study.db")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute("INSERT INTO rungs (rung, key_n, key_d, repeat, status, family, shape_json, "
                      "plan_json, n_params, n_nonembed) VALUES (8, 3000.0, 32000, 0, 'pending', "
                      "'gpt', '{}', '{}', 1, 1)")
    conn.close()


# -- v1 -> v2 ------------------------------------------------------------------------------------


def expected_v2(v1: sqlite3.Row) -> dict:
    """What the upgrade must make of one v1 rungs row, written out independently of store.py."""
    p = json.loads(v1["plan_json"])
    shape = {"n_layer": p["n_layer"], "d_model": p["d_model"], "n_head": p["n_head"],
             "block_size": p["block_size"], "vocab_size": p["vocab_size"],
             "share_layers": p["share_layers"], "head_dim": p["d_model"] // p["n_head"],
             "d_ff": 4 * p["d_model"]}
    plan = {"rung": p["rung"], "family": "gpt", "shape": shape, "target_n": p["target_nonembed"],
            "n_params": p["n_params"], "n_nonembed": p["n_nonembed"], "D": p["tokens"],
            "unit": "byte", "steps": p["steps"], "batch_size": p["batch_size"],
            "units_per_step": p["batch_size"] * p["block_size"], "lr": p["lr"],
            "warmup_steps": p["warmup_steps"], "seed": p["seed"], "repeat": 0,
            "describe": f"{p['n_layer']}x{p['d_model']}",
            "budget": None, "schedule": "cosine", "decay_steps": 0, "train_units": None,
            "trunk": None, "branch_step": None, "data_seed": None}
    return {
        "rung": v1["rung"], "key_n": p["target_nonembed"], "key_d": p["tokens"], "repeat": 0,
        "status": v1["status"], "family": "gpt", "plan": plan, "shape": shape,
        "n_params": v1["n_params"], "n_nonembed": v1["n_nonembed"], "D": v1["tokens"],
        "unit": "byte", "steps": v1["steps"], "lr": v1["lr"], "seed": p["seed"],
        "val_loss": v1["val_loss"], "train_loss": None, "metrics": {"bpb": v1["val_bpb"]},
        "flops": v1["flops"], "flops_6nd": v1["flops_6nd"],
        "train_seconds": v1["train_seconds"], "units_per_s": v1["tokens_per_s"],
        "mfu": v1["mfu"], "energy_j": None, "peak_mem_bytes": v1["peak_mem_bytes"],
        "checkpoint_bytes": v1["checkpoint_bytes"], "latency_ms": json.loads(v1["latency_json"]),
        "diverged_step": v1["diverged_step"], "diverged_reason": v1["diverged_reason"],
        "failed_reason": None, "checkpoint": v1["checkpoint"], "updated": v1["updated"],
        "tokens": v1["tokens"], "tokens_per_s": v1["tokens_per_s"], "val_bpb": v1["val_bpb"],
        "n_layer": v1["n_layer"], "d_model": v1["d_model"], "n_head": v1["n_head"],
        # two-axis keys, derived from the plan: a v1 plan is an N-only cosine rung
        "budget": None, "schedule": "cosine", "trunk": None, "epochs": None,
    }


PRUNED_R3_SHAPE = {"n_layer": 1, "d_model": 64, "n_head": 2, "block_size": 32, "vocab_size": 256,
                   "share_layers": False, "head_dim": 16, "d_ff": 128}


def check_v2_view(store: StudyStore, v1_rows: list, v1_variants: dict) -> None:
    rungs = store.rungs()
    assert [r["rung"] for r in rungs] == [0, 1, 2, 3]
    for got, v1 in zip(rungs, v1_rows, strict=True):
        assert got == expected_v2(v1)
        assert RungPlan.from_dict(got["plan"]).to_dict() == got["plan"]
    r3 = rungs[3]
    assert (r3["key_n"], r3["key_d"], r3["shape"]["head_dim"], r3["shape"]["d_ff"],
            r3["plan"]["units_per_step"]) == (40000.0, 32000, 16, 256, 256)
    variants = {v["name"]: v for v in store.variants()}
    assert sorted(variants) == sorted(v1_variants)
    for name, v in variants.items():
        settings = json.loads(v1_variants[name]["settings_json"])
        if name == "r3-prune0.5":
            assert settings.pop("shape", None) is None
            assert v["settings"] == {**settings, "shape": PRUNED_R3_SHAPE}
        else:
            assert v["settings"] == settings
            assert "shape" not in v["settings"]
    assert store.study()["spec"]["family"] == {"name": "gpt", "block_size": 32,
                                               "share_layers": False}


def read_v1(folder: Path) -> tuple[list, dict]:
    conn = plain(folder)
    rungs = conn.execute("SELECT * FROM rungs ORDER BY rung").fetchall()
    variants = {r["name"]: r for r in conn.execute("SELECT * FROM variants")}
    conn.close()
    assert len(rungs) == 4 and len(variants) == 6
    return rungs, variants


def test_writer_upgrades_v1_in_place(v1_study, tmp_path):
    v1_rows, v1_variants = read_v1(v1_study)
    before = dump(v1_study)
    with StudyStore.create_or_open(v1_study) as store:
        assert store.migrated_from is None
        check_v2_view(store, v1_rows, v1_variants)
    assert version_on_disk(v1_study) == [2]
    after = dump(v1_study)
    # study, curves and fits rows untouched; the rungs table is exactly a fresh v2 table
    for table in ("study", "curves", "fits", "sqlite_sequence"):
        assert after[table] == before[table]
    assert len(after["curves"][1]) == 20
    with StudyStore.create_or_open(tmp_path / "fresh"):
        pass
    assert after["rungs"][0] == dump(tmp_path / "fresh")["rungs"][0]
    # a second open finds v2 and changes nothing
    with StudyStore.create_or_open(v1_study) as store:
        check_v2_view(store, v1_rows, v1_variants)
    assert dump(v1_study) == after


@pytest.mark.parametrize("target, error, raised", [
    ("_v1_rung_to_v2", ValueError, UserError),  # on the 3rd rung: 2 v2 rows already written
    ("_v1_prune_settings_to_v2", ValueError, UserError),  # after every rung was rewritten
    ("_v1_rung_to_v2", RuntimeError, RuntimeError),  # not a data problem: re-raised as is
])
def test_failed_upgrade_leaves_v1_untouched(v1_study, monkeypatch, target, error, raised):
    db = v1_study / "study.db"
    before_bytes = db.read_bytes()
    before = dump(v1_study)
    real = getattr(migrations, target)
    calls = []

    def failing(*args):
        calls.append(args)
        if target == "_v1_prune_settings_to_v2" or len(calls) == 3:
            raise error("conversion failed")
        return real(*args)

    monkeypatch.setattr(migrations, target, failing)
    with pytest.raises(raised, match="conversion failed") as info:
        StudyStore.create_or_open(v1_study)
    assert len(calls) == (1 if target == "_v1_prune_settings_to_v2" else 3)
    if raised is UserError:
        assert "left unchanged" in str(info.value) and "\n" not in str(info.value)
    assert db.read_bytes() == before_bytes
    assert dump(v1_study) == before
    assert version_on_disk(v1_study) == [1]
    # the lock was released and the study still upgrades once the fault is gone
    monkeypatch.setattr(migrations, target, real)
    with StudyStore.create_or_open(v1_study) as store:
        assert len(store.rungs()) == 4
    assert version_on_disk(v1_study) == [2]


def test_corrupt_or_foreign_database_is_refused_without_writing(tmp_path, v1_study):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    junk = b"this is not sqlite " * 300
    (garbage / "study.db").write_bytes(junk)
    for opener in (StudyStore.create_or_open, StudyStore.open_readonly):
        with pytest.raises(UserError, match="not a (readable )?study database") as info:
            opener(garbage)
        assert "\n" not in str(info.value)
        assert (garbage / "study.db").read_bytes() == junk
    assert sorted(p.name for p in garbage.iterdir()) == ["study.db", "study.lock"]

    # a v1 study with a table missing: refused, and the table is not created behind our back
    conn = sqlite3.connect(v1_study / "study.db")
    conn.execute("DROP TABLE fits")
    conn.commit()
    conn.close()
    before = snapshot(v1_study / "study.db")
    for opener in (StudyStore.create_or_open, StudyStore.open_readonly):
        with pytest.raises(UserError, match=r"schema version 1; missing tables: fits\)$"):
            opener(v1_study)
    assert snapshot(v1_study / "study.db") == before
    assert "fits" not in dump(v1_study) and version_on_disk(v1_study) == [1]


def test_future_version_is_refused(tmp_path):
    folder = tmp_path / "s"
    StudyStore.create_or_open(folder).close()
    conn = sqlite3.connect(folder / "study.db")
    conn.execute("UPDATE schema_version SET version = 3")
    conn.commit()
    conn.close()
    for opener in (StudyStore.create_or_open, StudyStore.open_readonly):
        with pytest.raises(UserError, match="schema version 3 is not supported"):
            opener(folder)
    assert version_on_disk(folder) == [3]


def test_reader_upgrades_an_in_memory_copy_and_never_writes(v1_study):
    v1_rows, v1_variants = read_v1(v1_study)
    db = v1_study / "study.db"
    before = snapshot(db)
    with StudyStore.open_readonly(v1_study) as store:
        assert store.migrated_from == 1
        check_v2_view(store, v1_rows, v1_variants)
        assert len(store.curves()[3]) == 5 and store.fits()[0]["law"] == "power"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.set_status(0, "running")
    assert snapshot(db) == before
    assert version_on_disk(v1_study) == [1]
    wal = v1_study / "study.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    assert not (v1_study / "study.lock").exists()


def test_upgrade_converts_a_pending_v1_rung_of_another_head_width(v1_study):
    """A rung v1 planned but never trained (as v1's add_rungs wrote it), d_model / n_head != 16."""
    v1_plan = {"rung": 4, "target_nonembed": 80000.0, "n_layer": 1, "d_model": 96, "n_head": 2,
               "block_size": 32, "vocab_size": 256, "share_layers": True, "n_params": 131000,
               "n_nonembed": 110000, "tokens": 48000, "steps": 187, "batch_size": 8,
               "lr": 0.003, "warmup_steps": 9, "seed": 4}
    conn = sqlite3.connect(v1_study / "study.db")
    conn.execute(
        "INSERT INTO rungs (rung, status, plan_json, n_params, n_nonembed, n_layer, d_model, "
        "n_head, tokens, steps, lr, updated) VALUES (4, 'pending', ?, 131000, 110000, 1, 96, 2, "
        "48000, 187, 0.003, 1.5)", (json.dumps(v1_plan),))
    conn.commit()
    conn.close()
    with StudyStore.open_readonly(v1_study) as ro:
        in_memory = ro.rungs()[4]
    with StudyStore.create_or_open(v1_study) as store:
        r = store.rungs()[4]
    assert r == in_memory
    shape = {"n_layer": 1, "d_model": 96, "n_head": 2, "block_size": 32, "vocab_size": 256,
             "share_layers": True, "head_dim": 48, "d_ff": 384}
    assert r == {
        "rung": 4, "key_n": 80000.0, "key_d": 48000, "repeat": 0, "status": "pending",
        "family": "gpt", "shape": shape,
        "plan": {"rung": 4, "family": "gpt", "shape": shape, "target_n": 80000.0,
                 "n_params": 131000, "n_nonembed": 110000, "D": 48000, "unit": "byte",
                 "steps": 187, "batch_size": 8, "units_per_step": 256, "lr": 0.003,
                 "warmup_steps": 9, "seed": 4, "repeat": 0, "describe": "1x96",
                 "budget": None, "schedule": "cosine", "decay_steps": 0, "train_units": None,
                 "trunk": None, "branch_step": None, "data_seed": None},
        "n_params": 131000, "n_nonembed": 110000, "D": 48000, "unit": "byte", "steps": 187,
        "lr": 0.003, "seed": 4, "val_loss": None, "train_loss": None, "metrics": None,
        "flops": None, "flops_6nd": None, "train_seconds": None, "units_per_s": None,
        "mfu": None, "energy_j": None, "peak_mem_bytes": None, "checkpoint_bytes": None,
        "latency_ms": None, "diverged_step": None, "diverged_reason": None, "checkpoint": None,
        "failed_reason": None, "updated": 1.5,
        "tokens": 48000, "tokens_per_s": None, "val_bpb": None,
        "n_layer": 1, "d_model": 96, "n_head": 2,
        "budget": None, "schedule": "cosine", "trunk": None, "epochs": None,
    }


def test_reader_of_an_early_v2_study_sees_every_key_and_never_writes(tmp_path):
    """A schema-2 study written before the fine-tuning tables, the `model` table and the rungs'
    energy_j and failed_reason columns (its writer has not opened it since) reads in the current
    shape: the reader adds them to an in-memory copy, the file stays as it was."""
    folder = tmp_path / "early"
    with StudyStore.create_or_open(folder) as store:
        store.init_study("early", "text", "gpt", {"name": "early"})
        store.add_rungs([gpt_plan().to_dict()])
        store.record_rung(0, {"status": "done", "val_loss": 2.5})
    conn = sqlite3.connect(folder / "study.db")
    with conn:
        for table in ("finetunes", "finetune_scaling", "model"):
            conn.execute(f"DROP TABLE {table}")
        for column in ("energy_j", "failed_reason"):
            conn.execute(f"ALTER TABLE rungs DROP COLUMN {column}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = dump(folder)
    with StudyStore.open_readonly(folder) as ro:
        assert ro.migrated_from is None  # the same version: only what it gained since is added
        (row,) = ro.rungs()
        assert (row["val_loss"], row["energy_j"], row["failed_reason"]) == (2.5, None, None)
        assert ro.finetunes() == [] and ro.finetune_scaling() == []
        assert ro.study()["model"] is None
    assert dump(folder) == before
