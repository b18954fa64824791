"""The fine-tune tables live within schema 2: a writer adds them to any study it opens (new,
current without them, or upgraded from v1); a reader of a study without them sees none."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from scalelab.storage import SCHEMA_VERSION, StudyStore

V1_FIXTURE = Path(__file__).resolve().parents[1] / "data" / "v1_study"


def _tables(folder: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_a_v2_study_without_the_tables_gets_them_when_a_writer_opens_it(tmp_path):
    folder = tmp_path / "s"
    with StudyStore.create_or_open(folder):
        pass
    conn = sqlite3.connect(folder / "study.db")
    with conn:
        conn.execute("DROP TABLE finetunes")
        conn.execute("DROP TABLE finetune_scaling")
    conn.close()
    with StudyStore.open_readonly(folder) as ro:  # a reader writes nothing and sees none
        assert ro.finetunes() == [] and ro.finetune_scaling() == []
    assert "finetunes" not in _tables(folder)
    with StudyStore.create_or_open(folder) as store:
        store.record_finetune({"name": "r0-t-full", "of_rung": 0, "task": "t", "method": "full",
                               "status": "done", "val_loss": 1.5, "settings": {"slug": "full"},
                               "window_losses": {"finetuned": [1.0, 2.0]}})
        store.set_finetune_scaling("t", {"task": "t", "gaps": []})
    assert {"finetunes", "finetune_scaling"} <= _tables(folder)
    with StudyStore.open_readonly(folder) as ro:
        (row,) = ro.finetunes()
        assert row["val_loss"] == 1.5 and row["settings"] == {"slug": "full"}
        assert "window_losses" not in row
        assert ro.finetunes(windows=True)[0]["window_losses"]["finetuned"] == [1.0, 2.0]
        assert ro.finetune_scaling() == [{"task": "t", "gaps": []}]
        version = ro.conn.execute("SELECT version FROM schema_version").fetchall()
    assert [tuple(v) for v in version] == [(SCHEMA_VERSION,)] == [(2,)]


def test_v1_upgrade_still_works_and_adds_the_tables(tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(V1_FIXTURE, folder,
                    ignore=lambda d, names: [n for n in names if n.endswith(("-shm", "-wal"))])
    with StudyStore.open_readonly(folder) as ro:
        assert ro.migrated_from == 1 and ro.finetunes() == []
    with StudyStore.create_or_open(folder) as store:
        assert len(store.rungs()) == 4 and store.finetunes() == []
    assert {"finetunes", "finetune_scaling", "rungs", "variants"} <= _tables(folder)
