"""StudyStore: one study folder, its SQLite database (the source of truth) and its lock.

Layout of a study folder:
    study.db        SQLite, WAL journal, schema version in `schema_version`
    study.lock      held (fcntl) by the one driver process allowed to write
    checkpoints/    rung-<r>.safetensors (final weights) and rung-<r>/step-*/ (resume points)
    report.html, summary.json, runs.csv   derived; `scalelab report` rebuilds them

Only the driver writes. Readers (`show`, `report`, `fit DIR`) open the database read-only and
need no lock. Every write is one transaction, so a kill leaves the last committed state.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path

from scalelab.errors import UserError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    task TEXT NOT NULL,
    family TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    machine_json TEXT,
    corpus_json TEXT,
    gemm_peak_flops REAL,
    vendor_peak_flops REAL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rungs (
    rung INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    n_params INTEGER NOT NULL,
    n_nonembed INTEGER NOT NULL,
    n_layer INTEGER, d_model INTEGER, n_head INTEGER,
    tokens INTEGER, steps INTEGER, lr REAL,
    val_loss REAL, val_bpb REAL,
    flops REAL, flops_6nd REAL,
    train_seconds REAL, tokens_per_s REAL, mfu REAL,
    peak_mem_bytes INTEGER, checkpoint_bytes INTEGER,
    latency_json TEXT,
    diverged_step INTEGER, diverged_reason TEXT,
    checkpoint TEXT,
    updated REAL
);
CREATE TABLE IF NOT EXISTS curves (
    rung INTEGER NOT NULL,
    step INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    train_loss REAL,
    val_loss REAL,
    lr REAL,
    PRIMARY KEY (rung, step)
);
CREATE TABLE IF NOT EXISTS fits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    law TEXT NOT NULL,
    x TEXT NOT NULL,
    fit_json TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS variants (
    name TEXT PRIMARY KEY,
    of_rung INTEGER NOT NULL,
    method TEXT NOT NULL,
    settings_json TEXT,
    n_params INTEGER,
    n_nonembed INTEGER,
    bytes INTEGER,
    val_loss REAL,
    latency_json TEXT,
    peak_mem_bytes INTEGER,
    extra_json TEXT,
    created REAL NOT NULL
);
"""

RUNG_RESULT_COLUMNS = (
    "status", "tokens", "steps", "val_loss", "val_bpb", "flops", "flops_6nd", "train_seconds",
    "tokens_per_s", "mfu", "peak_mem_bytes", "checkpoint_bytes", "diverged_step",
    "diverged_reason", "checkpoint",
)
VARIANT_COLUMNS = (
    "name", "of_rung", "method", "settings", "n_params", "n_nonembed", "bytes", "val_loss",
    "latency_ms", "peak_mem_bytes", "extra",
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
    if readonly:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.row_factory = sqlite3.Row
    return conn


class StudyStore:
    def __init__(self, folder: Path, conn: sqlite3.Connection, lock: StudyLock | None):
        self.folder = folder
        self.conn = conn
        self._lock = lock

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def create_or_open(cls, folder: str | Path) -> StudyStore:
        """Open for writing (the driver): takes the lock, creates the schema when new."""
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write to study folder {folder}: {err.strerror}") from None
        lock = StudyLock(folder)
        lock.acquire()
        try:
            conn = _connect(folder / "study.db", readonly=False)
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                conn.commit()
            elif row[0] != SCHEMA_VERSION:
                raise UserError(f"{folder}: study schema version {row[0]} is not supported "
                                f"(this scalelab writes version {SCHEMA_VERSION})")
        except sqlite3.DatabaseError as err:
            lock.release()
            raise UserError(f"{folder / 'study.db'} is not a study database: {err}") from None
        except UserError:
            lock.release()
            raise
        return cls(folder, conn, lock)

    @classmethod
    def open_readonly(cls, folder: str | Path) -> StudyStore:
        folder = Path(folder)
        db = folder / "study.db"
        if not db.is_file():
            raise UserError(f"{folder} is not a study folder (no study.db)")
        try:
            conn = _connect(db, readonly=True)
            conn.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.DatabaseError as err:
            raise UserError(f"{db} is not a readable study database: {err}") from None
        return cls(folder, conn, None)

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    # -- study ---------------------------------------------------------------------------------

    def study(self) -> dict | None:
        row = self.conn.execute("SELECT * FROM study WHERE id = 1").fetchone()
        if row is None:
            return None
        out = dict(row)
        for key in ("spec", "machine", "corpus"):
            raw = out.pop(f"{key}_json")
            out[key] = json.loads(raw) if raw else None
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

    # -- rungs ---------------------------------------------------------------------------------

    def add_rungs(self, plans: list[dict]) -> None:
        with self.conn:
            for p in plans:
                self.conn.execute(
                    "INSERT OR IGNORE INTO rungs (rung, status, plan_json, n_params, n_nonembed, "
                    "n_layer, d_model, n_head, tokens, steps, lr, updated) "
                    "VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (p["rung"], json.dumps(p), p["n_params"], p["n_nonembed"], p["n_layer"],
                     p["d_model"], p["n_head"], p["tokens"], p["steps"], p["lr"], time.time()),
                )

    def set_status(self, rung: int, status: str) -> None:
        with self.conn:
            self.conn.execute("UPDATE rungs SET status = ?, updated = ? WHERE rung = ?",
                              (status, time.time(), rung))

    def record_rung(self, rung: int, result: dict) -> None:
        """Write a finished rung's measurements (one transaction)."""
        cols = [c for c in RUNG_RESULT_COLUMNS if c in result]
        values = [result[c] for c in cols]
        assignments = ", ".join(f"{c} = ?" for c in cols)
        with self.conn:
            self.conn.execute(
                f"UPDATE rungs SET {assignments}, latency_json = ?, updated = ? WHERE rung = ?",
                (*values, json.dumps(result.get("latency_ms")), time.time(), rung),
            )

    def record_curve(self, rung: int, points: list[dict]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO curves (rung, step, tokens, train_loss, val_loss, lr) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(rung, p["step"], p["tokens"], p["train_loss"], p["val_loss"], p["lr"])
                 for p in points],
            )

    def rungs(self) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM rungs ORDER BY rung").fetchall()
        out = []
        for row in rows:
            r = dict(row)
            r["plan"] = json.loads(r.pop("plan_json"))
            raw = r.pop("latency_json")
            r["latency_ms"] = json.loads(raw) if raw else None
            out.append(r)
        return out

    def curves(self) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {}
        for row in self.conn.execute("SELECT * FROM curves ORDER BY rung, step"):
            out.setdefault(row["rung"], []).append(
                {k: row[k] for k in ("step", "tokens", "train_loss", "val_loss", "lr")})
        return out

    # -- fits ----------------------------------------------------------------------------------

    def replace_fits(self, fits: list[dict]) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM fits")
            for fit in fits:
                self.conn.execute(
                    "INSERT INTO fits (law, x, fit_json, created) VALUES (?, ?, ?, ?)",
                    (fit["law"], fit["x"], json.dumps(fit), time.time()),
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
        out = []
        for row in self.conn.execute("SELECT * FROM variants ORDER BY of_rung, name"):
            v = dict(row)
            for key in ("settings", "latency", "extra"):
                raw = v.pop(f"{key}_json")
                v["latency_ms" if key == "latency" else key] = json.loads(raw) if raw else None
            out.append(v)
        return out
