"""StudyStore: a study's records in its folder's SQLite database, and the writer's lock.

Layout of a study folder:
    study.db        SQLite, WAL journal, schema version in `schema_version` (storage.migrations)
    study.lock      held (fcntl) by the one driver process allowed to write
    checkpoints/    rung-<r>.safetensors (final weights) and rung-<r>/step-*/ (resume points)
    report.html, summary.json, runs.csv   derived; `scalelab report` rebuilds them

Only the driver writes (`create_or_open`, which takes the lock). Readers (`show`, `report`,
`fit DIR`, `Study.load`) open the database read-only (`open_readonly`) and need no lock. Every
write is one transaction, so a kill leaves the last committed state.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path

from scalelab.errors import UserError
from scalelab.storage import migrations
from scalelab.storage.base import (
    CURVE_KEYS,
    FINETUNE_COLUMNS,
    FINETUNE_JSON,
    STUDY_JSON,
    StudyStorage,
    check_finetune,
    dumps,
    finetune_view,
    fit_x,
    forecast_row,
    forecast_view,
    loads,
    planned_row,
    result_columns,
    rung_view,
    variant_view,
)


class StudyLock:
    """An exclusive, non-blocking lock on a study folder; released when the process exits."""

    def __init__(self, folder: Path):
        self.path = folder / "study.lock"
        self._fh = None

    def acquire(self) -> None:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(
                f"study {self.path.parent} is locked by a running process ({holder}); "
                "wait for it to finish or use another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _connect(db: Path, readonly: bool) -> sqlite3.Connection:
    """A connection that has not touched the file yet (the journal mode is set after the schema
    version was checked, so a foreign or corrupt file is never written)."""
    if readonly:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    return conn


def _use_wal(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to study folder {folder}: {err.strerror}") from None


def _current_copy(conn: sqlite3.Connection, version: int, db: Path) -> sqlite3.Connection:
    """An in-memory copy of `conn` (SQLite backup API: a consistent snapshot, also of a WAL
    database) brought to the current schema, `query_only` like a read-only connection."""
    memory = sqlite3.connect(":memory:")
    try:
        conn.backup(memory)
        memory.row_factory = sqlite3.Row
        if version < migrations.SCHEMA_VERSION:
            migrations.upgrade(memory, version, db,
                               "read from an in-memory copy, nothing was written")
        migrations.add_tables(memory)
        memory.execute("PRAGMA query_only = ON")
    except BaseException:
        memory.close()
        raise
    return memory


class StudyStore(StudyStorage):
    """A study's records in `folder`/study.db. Open it with `create_or_open` (the writer) or
    `open_readonly` (any reader); `conn` is the SQLite connection."""

    def __init__(self, folder: Path, conn: sqlite3.Connection, lock: StudyLock | None,
                 migrated_from: int | None = None):
        self.folder = folder
        self.conn = conn
        self._lock = lock
        self.readonly = lock is None
        # Set on a reader of an older study: the schema version on disk (read from an upgraded
        # in-memory copy; the file itself is untouched until a driver opens the study).
        self.migrated_from = migrated_from

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def create_or_open(cls, folder: str | Path) -> StudyStore:
        """Open for writing (the driver): takes the lock, creates the schema when new, upgrades
        an older schema in place (one transaction; a failure leaves the old database as it was).
        A file that is not a study database is refused with a UserError before anything is
        written to it."""
        folder = Path(folder)
        _check_writable(folder)
        lock = StudyLock(folder)
        lock.acquire()
        db = folder / "study.db"
        conn = None
        try:
            conn = _connect(db, readonly=False)
            version = migrations.read_version(conn, db)
            if version is None:
                _use_wal(conn)
                conn.execute("BEGIN IMMEDIATE")
                for statement in migrations.SCHEMA_STATEMENTS:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)",
                             (migrations.SCHEMA_VERSION,))
                conn.commit()
            else:
                if version < migrations.SCHEMA_VERSION:
                    migrations.upgrade(conn, version, db, "the study was left unchanged")
                _use_wal(conn)
            migrations.add_tables(conn)  # what schema 2 gained since, on every writer open
        except BaseException as err:
            if conn is not None:
                conn.close()
            lock.release()
            if isinstance(err, sqlite3.DatabaseError):
                raise UserError(f"{db} is not a study database: {err}") from None
            raise
        return cls(folder, conn, lock)

    @classmethod
    def open_readonly(cls, folder: str | Path) -> StudyStore:
        """Open for reading (no lock, never writes the study).

        A database of an older schema, or of schema 2 without what it gained since, is copied
        into memory and brought to the current schema there (`_current_copy`), so readers
        always see the current shape; `migrated_from` then holds an older version on disk.
        """
        folder = Path(folder)
        db = folder / "study.db"
        if not db.is_file():
            raise UserError(f"{folder} is not a study folder (no study.db)")
        conn = None
        try:
            conn = _connect(db, readonly=True)
            version = migrations.read_version(conn, db)
            if version is None:
                raise UserError(f"{db} is not a study database (it holds no tables)")
            if version == migrations.SCHEMA_VERSION and not migrations.lacks_additions(conn):
                return cls(folder, conn, None)
            memory = _current_copy(conn, version, db)
            conn.close()
            conn = memory
            older = version if version < migrations.SCHEMA_VERSION else None
            return cls(folder, memory, None, migrated_from=older)
        except BaseException as err:
            if conn is not None:
                conn.close()
            if isinstance(err, sqlite3.DatabaseError):
                raise UserError(f"{db} is not a readable study database: {err}") from None
            raise

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            self._lock.release()

    # -- study ---------------------------------------------------------------------------------

    def study(self) -> dict | None:
        row = self.conn.execute("SELECT * FROM study WHERE id = 1").fetchone()
        if row is None:
            return None
        out = dict(row)
        for key in STUDY_JSON:
            out[key] = loads(out.pop(f"{key}_json"))
        model = self.conn.execute("SELECT fingerprint_json FROM model WHERE id = 1").fetchone()
        out["model"] = json.loads(model[0]) if model is not None else None
        return out

    def init_study(self, name: str, task: str, family: str, spec: dict) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO study (id, name, task, family, spec_json, created) "
                "VALUES (1, ?, ?, ?, ?, ?)",
                (name, task, family, json.dumps(spec), time.time()),
            )

    def set_machine(self, machine: dict, corpus: dict, gemm_peak: float | None,
                    vendor_peak: float | None) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE study SET machine_json = ?, corpus_json = ?, gemm_peak_flops = ?, "
                "vendor_peak_flops = ? WHERE id = 1",
                (json.dumps(machine), json.dumps(corpus), gemm_peak, vendor_peak),
            )

    def set_model(self, fingerprint: dict) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO model (id, fingerprint_json) VALUES (1, ?)",
                              (json.dumps(fingerprint),))

    # -- rungs ---------------------------------------------------------------------------------

    def add_rungs(self, plans: list[dict]) -> list[int]:
        # INSERT OR IGNORE: the UNIQUE rung id and key keep a stored rung as it is.
        added = []
        now = time.time()
        with self.conn:
            for p in plans:
                row = {k: v for k, v in planned_row(p, now).items() if v is not None}
                if self._insert_new("rungs", row):
                    added.append(p["rung"])
        return added

    def _insert_new(self, table: str, row: dict) -> bool:
        """INSERT OR IGNORE one row (inside the caller's transaction): whether it was new."""
        cur = self.conn.execute(
            f"INSERT OR IGNORE INTO {table} ({', '.join(row)}) "
            f"VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))
        return bool(cur.rowcount)

    def set_status(self, rung: int, status: str) -> None:
        with self.conn:
            self.conn.execute("UPDATE rungs SET status = ?, failed_reason = NULL, updated = ? "
                              "WHERE rung = ?", (status, time.time(), rung))

    def fail_rung(self, rung: int, reason: str) -> None:
        with self.conn:
            self.conn.execute("UPDATE rungs SET status = 'failed', failed_reason = ?, updated = ? "
                              "WHERE rung = ?", (reason, time.time(), rung))

    def drop_rungs(self, rungs: list[int]) -> None:
        with self.conn:
            for rung in rungs:
                self.conn.execute("DELETE FROM curves WHERE rung = ?", (rung,))
                self.conn.execute("DELETE FROM rungs WHERE rung = ?", (rung,))

    def record_rung(self, rung: int, result: dict) -> None:
        cols = result_columns(result)
        assignments = "".join(f"{c} = ?, " for c in cols)
        with self.conn:
            cur = self.conn.execute(
                f"UPDATE rungs SET {assignments}updated = ? WHERE rung = ?",
                (*cols.values(), time.time(), rung),
            )
            if cur.rowcount != 1:
                raise ValueError(f"record_rung: the study has no rung {rung}")

    def record_curve(self, rung: int, points: list[dict]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO curves (rung, step, tokens, train_loss, val_loss, lr) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(rung, *(p[k] for k in CURVE_KEYS)) for p in points],
            )

    def rungs(self) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM rungs ORDER BY rung").fetchall()
        return [rung_view(dict(row)) for row in rows]

    def curves(self) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {}
        for row in self.conn.execute("SELECT * FROM curves ORDER BY rung, step"):
            out.setdefault(row["rung"], []).append({k: row[k] for k in CURVE_KEYS})
        return out

    # -- fits ----------------------------------------------------------------------------------

    def replace_fits(self, fits: list[dict]) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM fits")
            for fit in fits:
                self.conn.execute(
                    "INSERT INTO fits (law, x, fit_json, created) VALUES (?, ?, ?, ?)",
                    (fit["law"], fit_x(fit), json.dumps(fit), time.time()),
                )

    def fits(self) -> list[dict]:
        return [json.loads(r["fit_json"])
                for r in self.conn.execute("SELECT fit_json FROM fits ORDER BY id")]

    # -- variants ------------------------------------------------------------------------------

    def record_variant(self, v: dict) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO variants (name, of_rung, method, settings_json, n_params, "
                "n_nonembed, bytes, val_loss, latency_json, peak_mem_bytes, extra_json, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (v["name"], v["of_rung"], v["method"], json.dumps(v.get("settings")),
                 v.get("n_params"), v.get("n_nonembed"), v.get("bytes"), v.get("val_loss"),
                 json.dumps(v.get("latency_ms")), v.get("peak_mem_bytes"),
                 json.dumps(v.get("extra")), time.time()),
            )

    def variants(self) -> list[dict]:
        return [variant_view(dict(row)) for row in
                self.conn.execute("SELECT * FROM variants ORDER BY of_rung, name")]

    # -- fine-tunes (tables added within schema 2: storage.migrations.FINETUNE_SCHEMA) ---------

    def record_finetune(self, ft: dict) -> None:
        check_finetune(ft)
        cols = list(FINETUNE_COLUMNS)
        values = [ft.get(c) for c in cols]
        for key, col in FINETUNE_JSON.items():
            cols.append(col)
            values.append(dumps(ft.get(key)))
        now = time.time()
        with self.conn:
            old = self.conn.execute("SELECT created FROM finetunes WHERE name = ?",
                                    (ft["name"],)).fetchone()
            cols += ["created", "updated"]
            values += [old[0] if old is not None else now, now]
            marks = ", ".join("?" for _ in cols)
            self.conn.execute(f"INSERT OR REPLACE INTO finetunes ({', '.join(cols)}) "
                              f"VALUES ({marks})", values)

    def finetunes(self, windows: bool = False) -> list[dict]:
        return [finetune_view(dict(row), windows) for row in
                self.conn.execute("SELECT * FROM finetunes ORDER BY of_rung, task, name")]

    def delete_finetune(self, name: str) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM finetunes WHERE name = ?", (name,))

    def set_finetune_scaling(self, task: str, analysis: dict) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO finetune_scaling (task, analysis_json, "
                              "created) VALUES (?, ?, ?)",
                              (task, json.dumps(analysis), time.time()))

    def finetune_scaling(self) -> list[dict]:
        return [json.loads(r[0]) for r in
                self.conn.execute("SELECT analysis_json FROM finetune_scaling ORDER BY task")]

    # -- forecasts (table added within schema 2: storage.migrations.FORECAST_TABLE) ------------

    def add_forecasts(self, forecasts: list[dict]) -> list[int]:
        now = time.time()
        rows = [forecast_row(f, now) for f in forecasts]  # every one checked before any write
        added = []
        with self.conn:
            for row in rows:
                # INSERT OR IGNORE: a pre-registered forecast is never rewritten
                if self._insert_new("forecasts", row):
                    added.append(row["rung"])
        return added

    def forecasts(self) -> list[dict]:
        rungs = {r["rung"]: dict(r) for r in
                 self.conn.execute("SELECT rung, status, val_loss, updated FROM rungs")}
        return [forecast_view(dict(row), rungs.get(row["rung"])) for row in
                self.conn.execute("SELECT * FROM forecasts ORDER BY rung")]
