"""StudyStore: one study folder, its SQLite database (the source of truth) and its lock.

Layout of a study folder:
    study.db        SQLite, WAL journal, schema version in `schema_version`
    study.lock      held (fcntl) by the one driver process allowed to write
    checkpoints/    rung-<r>.safetensors (final weights) and rung-<r>/step-*/ (resume points)
    report.html, summary.json, runs.csv   derived; `scalelab report` rebuilds them

Only the driver writes. Readers (`show`, `report`, `fit DIR`) open the database read-only and
need no lock. Every write is one transaction, so a kill leaves the last committed state.

Schema versions:
    1   GPT-only rungs (n_layer, d_model, n_head, tokens, val_bpb, tokens_per_s columns).
    2   family-neutral rungs: the family's opaque `shape`, D in the task's `unit`, the task's
        `metrics`, and the key (key_n, key_d, repeat) = (target N, D, seed repeat), unique, so a
        two-axis ladder can hold several D per N. `rung` stays the integer id everything else
        (curves, variants, checkpoint files) refers to.

Upgrades: the writer (`create_or_open`, holding the lock) upgrades an older database in place in
ONE transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error, so a failed upgrade leaves the
old database exactly as it was). A reader (`open_readonly`) never writes: on an older database it
copies it into memory (SQLite backup API) and upgrades the copy, so `show`/`report` work on a v1
study that no driver has opened since.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path

from scalelab.errors import UserError

SCHEMA_VERSION = 2

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
    key_n REAL NOT NULL,
    key_d INTEGER NOT NULL,
    repeat INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    family TEXT NOT NULL,
    shape_json TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    n_params INTEGER NOT NULL,
    n_nonembed INTEGER NOT NULL,
    D INTEGER, unit TEXT, steps INTEGER, lr REAL, seed INTEGER,
    val_loss REAL, train_loss REAL, metrics_json TEXT,
    flops REAL, flops_6nd REAL,
    train_seconds REAL, units_per_s REAL, mfu REAL, energy_j REAL,
    peak_mem_bytes INTEGER, checkpoint_bytes INTEGER,
    latency_json TEXT,
    diverged_step INTEGER, diverged_reason TEXT,
    checkpoint TEXT,
    updated REAL,
    failed_reason TEXT,
    UNIQUE (key_n, key_d, repeat)
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

# The schema as single statements, to run inside an explicit transaction (executescript would
# commit first). No statement above holds a ';' inside it.
_SCHEMA_STATEMENTS = tuple(s.strip() for s in SCHEMA.split(";") if s.strip())
_RUNGS_DDL = next(s for s in _SCHEMA_STATEMENTS if "EXISTS rungs (" in s)

# RungResult.to_dict() keys -> plain columns; `metrics` and `latency_ms` are stored as JSON.
RUNG_RESULT_COLUMNS = (
    "status", "D", "steps", "train_seconds", "val_loss", "train_loss", "flops", "flops_6nd",
    "units_per_s", "mfu", "energy_j", "peak_mem_bytes", "checkpoint_bytes", "checkpoint",
    "diverged_step", "diverged_reason",
)
RUNG_RESULT_JSON = {"metrics": "metrics_json", "latency_ms": "latency_json"}
VARIANT_COLUMNS = (
    "name", "of_rung", "method", "settings", "n_params", "n_nonembed", "bytes", "val_loss",
    "latency_ms", "peak_mem_bytes", "extra",
)

# Tables every study database of a version holds (checked before anything is read or written).
_TABLES = ("schema_version", "study", "rungs", "curves", "fits", "variants")
_V1_RUNG_COLUMNS = (
    "rung", "status", "plan_json", "n_params", "n_nonembed", "n_layer", "d_model", "n_head",
    "tokens", "steps", "lr", "val_loss", "val_bpb", "flops", "flops_6nd", "train_seconds",
    "tokens_per_s", "mfu", "peak_mem_bytes", "checkpoint_bytes", "latency_json",
    "diverged_step", "diverged_reason", "checkpoint", "updated",
)
# A malformed old database shows up as one of these while it is converted.
_CONVERSION_ERRORS = (sqlite3.DatabaseError, KeyError, TypeError, ValueError, IndexError,
                      ZeroDivisionError)


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


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _read_version(conn: sqlite3.Connection, db: Path) -> int | None:
    """The schema version of an open database, None for an empty one (no tables: a new study).

    Reads only. Raises UserError (one line) for a database that is not a study of a version this
    scalelab knows. sqlite3.DatabaseError (not a database at all) is left to the caller.
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    if "schema_version" not in tables:
        raise UserError(f"{db} is not a study database (it has no schema_version table)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is not None:
        version = row[0]
    elif "rungs" in tables:
        # scalelab 1 created the tables and the version row in two commits; a kill between them
        # leaves an empty v1 study without its row. Tell the version by the rungs columns.
        version = 2 if "key_n" in _columns(conn, "rungs") else 1
    else:
        version = None
    if not isinstance(version, int) or version < 1:
        raise UserError(f"{db} is not a study database (schema version {version!r})")
    if version > SCHEMA_VERSION:
        raise UserError(f"{db}: study schema version {version} is not supported "
                        f"(this scalelab reads and writes version {SCHEMA_VERSION})")
    missing = [t for t in _TABLES if t not in tables]
    if missing:
        raise UserError(f"{db} is not a complete study database (schema version {version}; "
                        f"missing tables: {', '.join(missing)})")
    if version == 1:
        lacking = [c for c in _V1_RUNG_COLUMNS if c not in _columns(conn, "rungs")]
        if lacking:
            raise UserError(f"{db} is not a complete study database (schema version 1; rungs "
                            f"table lacks columns: {', '.join(lacking)})")
    return version


# -- schema 1 -> 2 ---------------------------------------------------------------------------------


def _v1_plan_to_v2(plan: dict) -> dict:
    """A v1 GPT rung plan as a complete v2 RungPlan dict (same rung, same numbers, family
    `gpt`, unit `byte`: v1 trained byte-level GPTs only)."""
    shape = {
        "n_layer": plan["n_layer"],
        "d_model": plan["d_model"],
        "n_head": plan["n_head"],
        "block_size": plan["block_size"],
        "vocab_size": plan["vocab_size"],
        "share_layers": plan["share_layers"],
        "head_dim": plan["d_model"] // plan["n_head"],
        "d_ff": 4 * plan["d_model"],
    }
    return {
        "rung": plan["rung"],
        "family": "gpt",
        "shape": shape,
        "target_n": plan["target_nonembed"],
        "n_params": plan["n_params"],
        "n_nonembed": plan["n_nonembed"],
        "D": plan["tokens"],
        "unit": "byte",
        "steps": plan["steps"],
        "batch_size": plan["batch_size"],
        "units_per_step": plan["batch_size"] * plan["block_size"],
        "lr": plan["lr"],
        "warmup_steps": plan["warmup_steps"],
        "seed": plan["seed"],
        "repeat": 0,
        "describe": f"{plan['n_layer']}x{plan['d_model']}",  # what GPTFamily.describe says
        # v1 ladders were N-only with a cosine schedule; v1 did not record the train split
        "budget": None, "schedule": "cosine", "decay_steps": 0, "train_units": None,
        "trunk": None, "branch_step": None, "data_seed": None,
    }


def _v1_rung_to_v2(row: dict) -> dict:
    """One v1 rungs row (a dict of its columns) as the v2 rungs row (column -> value).

    The plan's numbers become the key and plan columns; the measured columns are copied
    (tokens -> D, tokens_per_s -> units_per_s, val_bpb -> metrics {"bpb": ...});
    train_loss stays NULL because v1 did not measure it.
    """
    plan = _v1_plan_to_v2(json.loads(row["plan_json"]))
    if plan["rung"] != row["rung"]:
        raise ValueError(f"rung {row['rung']}: its plan says rung {plan['rung']}")
    bpb = row["val_bpb"]
    return {
        "rung": row["rung"],
        "key_n": float(plan["target_n"]),
        "key_d": int(plan["D"]),
        "repeat": 0,
        "status": row["status"],
        "family": "gpt",
        "shape_json": json.dumps(plan["shape"]),
        "plan_json": json.dumps(plan),
        "n_params": row["n_params"],
        "n_nonembed": row["n_nonembed"],
        "D": row["tokens"],
        "unit": "byte",
        "steps": row["steps"],
        "lr": row["lr"],
        "seed": plan["seed"],
        "val_loss": row["val_loss"],
        "train_loss": None,
        "metrics_json": json.dumps({"bpb": bpb}) if bpb is not None else None,
        "flops": row["flops"],
        "flops_6nd": row["flops_6nd"],
        "train_seconds": row["train_seconds"],
        "units_per_s": row["tokens_per_s"],
        "mfu": row["mfu"],
        "peak_mem_bytes": row["peak_mem_bytes"],
        "checkpoint_bytes": row["checkpoint_bytes"],
        "latency_json": row["latency_json"],
        "diverged_step": row["diverged_step"],
        "diverged_reason": row["diverged_reason"],
        "checkpoint": row["checkpoint"],
        "updated": row["updated"],
    }


def _v1_prune_settings_to_v2(settings: dict, base_shape: dict) -> dict:
    """A v1 structured-prune variant's settings plus `shape`: the pruned model is a GPT of the
    base rung's shape with the kept heads and MLP width (v1 kept the same count in every block)."""
    heads, ffn = settings["structure"]["heads"], settings["structure"]["ffn"]
    if not heads or not ffn or len(set(heads)) != 1 or len(set(ffn)) != 1:
        raise ValueError(f"prune structure {settings['structure']} is not one width per model")
    return {**settings, "shape": {**base_shape, "n_head": heads[0], "d_ff": ffn[0]}}


def _migrate_v1_to_v2(conn: sqlite3.Connection) -> None:
    """Rewrite a v1 database as v2 inside the caller's transaction (no BEGIN/COMMIT here)."""
    v1_rows = [dict(r) for r in conn.execute("SELECT * FROM rungs ORDER BY rung")]
    conn.execute("DROP TABLE rungs")
    conn.execute(_RUNGS_DDL)
    shapes = {}
    for v1_row in v1_rows:
        row = _v1_rung_to_v2(v1_row)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO rungs ({cols}) VALUES ({marks})", tuple(row.values()))
        shapes[row["rung"]] = json.loads(row["shape_json"])
    prunes = conn.execute(
        "SELECT name, of_rung, settings_json FROM variants WHERE method = 'prune' ORDER BY name"
    ).fetchall()
    for name, of_rung, raw in prunes:
        if of_rung not in shapes:
            raise ValueError(f"variant {name} prunes rung {of_rung}, which the study lacks")
        settings = _v1_prune_settings_to_v2(json.loads(raw), shapes[of_rung])
        conn.execute("UPDATE variants SET settings_json = ? WHERE name = ?",
                     (json.dumps(settings), name))
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version (version) VALUES (2)")


_MIGRATIONS = {1: _migrate_v1_to_v2}


def _upgrade(conn: sqlite3.Connection, version: int, db: Path, where: str) -> None:
    """Bring `conn` from `version` to SCHEMA_VERSION in ONE transaction; on any error roll back
    (the database stays at `version`, byte for byte) and re-raise, a malformed old database as
    one UserError line."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        while version < SCHEMA_VERSION:
            _MIGRATIONS[version](conn)
            version += 1
    except BaseException as err:
        try:
            conn.rollback()
        except sqlite3.Error:
            pass
        if isinstance(err, _CONVERSION_ERRORS):
            raise UserError(f"{db}: cannot upgrade the study to schema version "
                            f"{SCHEMA_VERSION} ({type(err).__name__}: {err}); {where}") from None
        raise
    conn.commit()


class StudyStore:
    def __init__(self, folder: Path, conn: sqlite3.Connection, lock: StudyLock | None,
                 migrated_from: int | None = None):
        self.folder = folder
        self.conn = conn
        self._lock = lock
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
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write to study folder {folder}: {err.strerror}") from None
        lock = StudyLock(folder)
        lock.acquire()
        db = folder / "study.db"
        conn = None
        try:
            conn = _connect(db, readonly=False)
            version = _read_version(conn, db)
            if version is None:
                _use_wal(conn)
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA_STATEMENTS:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                conn.commit()
            else:
                if version < SCHEMA_VERSION:
                    _upgrade(conn, version, db, "the study was left unchanged")
                _use_wal(conn)
            _add_tables(conn)  # tables added within schema 2 (fine-tuning), on every writer open
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

        A database of an older schema is copied into memory (SQLite backup API: a consistent
        snapshot, also of a WAL database) and the copy is upgraded there, so readers always see
        the current schema; `migrated_from` then holds the version on disk. The in-memory copy is
        `query_only`, like the read-only connection of a current study.
        """
        folder = Path(folder)
        db = folder / "study.db"
        if not db.is_file():
            raise UserError(f"{folder} is not a study folder (no study.db)")
        conn = None
        try:
            conn = _connect(db, readonly=True)
            version = _read_version(conn, db)
            if version is None:
                raise UserError(f"{db} is not a study database (it holds no tables)")
            if version == SCHEMA_VERSION:
                return cls(folder, conn, None)
            memory = sqlite3.connect(":memory:")
            try:
                conn.backup(memory)
                conn.close()
                conn = memory
                memory.row_factory = sqlite3.Row
                _upgrade(memory, version, db, "read from an in-memory copy, nothing was written")
                memory.execute("PRAGMA query_only = ON")
            except BaseException:
                memory.close()
                raise
            return cls(folder, memory, None, migrated_from=version)
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
        model = (self.conn.execute("SELECT fingerprint_json FROM model WHERE id = 1").fetchone()
                 if _has_table(self.conn, "model") else None)
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
        """Record the fingerprint of the code that builds the study's models
        (`scalelab.models.base.family_fingerprint`); a resume compares against it."""
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO model (id, fingerprint_json) VALUES (1, ?)",
                              (json.dumps(fingerprint),))

    # -- rungs ---------------------------------------------------------------------------------

    def add_rungs(self, plans: list[dict]) -> list[int]:
        """Add planned rungs (`RungPlan.to_dict()` dicts) as `pending`, in one transaction.

        INSERT OR IGNORE: a plan whose rung id or key (target_n, D, repeat) is already in the
        study is skipped and the stored rung is kept (a resumed study re-plans the same rungs).
        Returns the rung ids that were added.
        """
        added = []
        now = time.time()
        with self.conn:
            for p in plans:
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO rungs (rung, key_n, key_d, repeat, status, family, "
                    "shape_json, plan_json, n_params, n_nonembed, D, unit, steps, lr, seed, "
                    "updated) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (p["rung"], float(p["target_n"]), int(p["D"]), int(p.get("repeat", 0)),
                     p["family"], json.dumps(p["shape"]), json.dumps(p), p["n_params"],
                     p["n_nonembed"], p["D"], p["unit"], p["steps"], p["lr"], p["seed"], now),
                )
                if cur.rowcount:
                    added.append(p["rung"])
        return added

    def set_status(self, rung: int, status: str) -> None:
        """A new status; the reason of an earlier failure goes with the old status."""
        with self.conn:
            self.conn.execute("UPDATE rungs SET status = ?, failed_reason = NULL, updated = ? "
                              "WHERE rung = ?", (status, time.time(), rung))

    def fail_rung(self, rung: int, reason: str) -> None:
        """Status `failed` with its reason (one line): the rung stopped on an error and did not
        finish; a resume trains it again."""
        with self.conn:
            self.conn.execute("UPDATE rungs SET status = 'failed', failed_reason = ?, updated = ? "
                              "WHERE rung = ?", (reason, time.time(), rung))

    def drop_rungs(self, rungs: list[int]) -> None:
        """Forget planned rungs and their curves (one transaction), so they can be planned
        again (`scalelab run --replan`); never used on finished rungs."""
        with self.conn:
            for rung in rungs:
                self.conn.execute("DELETE FROM curves WHERE rung = ?", (rung,))
                self.conn.execute("DELETE FROM rungs WHERE rung = ?", (rung,))

    def record_rung(self, rung: int, result: dict) -> None:
        """Write a finished rung's measurements (`RungResult.to_dict()`; one transaction).

        Only the keys present are written. A key that is not a RungResult field, or a rung the
        study does not hold, raises ValueError rather than losing the measurement.
        """
        unknown = sorted(set(result) - set(RUNG_RESULT_COLUMNS) - set(RUNG_RESULT_JSON))
        if unknown:
            raise ValueError(f"record_rung: unknown result fields {unknown}")
        cols = [c for c in RUNG_RESULT_COLUMNS if c in result]
        values = [result[c] for c in cols]
        for key, col in RUNG_RESULT_JSON.items():
            if key in result:
                cols.append(col)
                values.append(json.dumps(result[key]) if result[key] is not None else None)
        assignments = "".join(f"{c} = ?, " for c in cols)
        with self.conn:
            cur = self.conn.execute(
                f"UPDATE rungs SET {assignments}updated = ? WHERE rung = ?",
                (*values, time.time(), rung),
            )
            if cur.rowcount != 1:
                raise ValueError(f"record_rung: the study has no rung {rung}")

    def record_curve(self, rung: int, points: list[dict]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO curves (rung, step, tokens, train_loss, val_loss, lr) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(rung, p["step"], p["tokens"], p["train_loss"], p["val_loss"], p["lr"])
                 for p in points],
            )

    def rungs(self) -> list[dict]:
        """Every rung, by id: a dict of every column, the JSON columns decoded as `plan`,
        `shape`, `metrics` and `latency_ms` (None when not recorded), plus the v1-era names the
        rest of scalelab and summary.json still read, derived here and nowhere else:

            tokens        = D
            tokens_per_s  = units_per_s
            val_bpb       = metrics.get("bpb")
            n_layer, d_model, n_head = shape.get(...)  (None for a shape without them)

        and the two-axis keys, from the plan: `budget` (the IsoFLOP budget C, None off one),
        `schedule` ("cosine" for plans older than the key), `trunk` (the rung a WSD branch
        starts from, else None) and `epochs` = D / the plan's train_units (None where unknown).
        """
        rows = self.conn.execute("SELECT * FROM rungs ORDER BY rung").fetchall()
        out = []
        for row in rows:
            r = dict(row)
            for key, col in (("plan", "plan_json"), ("shape", "shape_json"),
                             ("metrics", "metrics_json"), ("latency_ms", "latency_json")):
                raw = r.pop(col)
                r[key] = json.loads(raw) if raw else None
            shape = r["shape"] if isinstance(r["shape"], dict) else {}
            r["tokens"] = r["D"]
            r["tokens_per_s"] = r["units_per_s"]
            r["val_bpb"] = (r["metrics"] or {}).get("bpb")
            for key in ("n_layer", "d_model", "n_head"):
                r[key] = shape.get(key)
            out.append(r | _two_axis_keys(r))
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
                # A law of several inputs (L(N, D)) names them as a list; the column joins them.
                x = fit["x"] if isinstance(fit["x"], str) else ",".join(map(str, fit["x"]))
                self.conn.execute(
                    "INSERT INTO fits (law, x, fit_json, created) VALUES (?, ?, ?, ?)",
                    (fit["law"], x, json.dumps(fit), time.time()),
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

    # -- fine-tunes (tables added within schema 2: see FINETUNE_SCHEMA) -----------------------

    def record_finetune(self, ft: dict) -> None:
        """Insert or replace one fine-tune row (`scalelab.finetune.driver` builds the dict: the
        FINETUNE_COLUMNS keys plus the FINETUNE_JSON ones, any missing key stored as NULL). The
        row's `created` is kept across replacements."""
        unknown = sorted(set(ft) - set(FINETUNE_COLUMNS) - set(FINETUNE_JSON))
        if unknown:
            raise ValueError(f"record_finetune: unknown fields {unknown}")
        cols = list(FINETUNE_COLUMNS)
        values = [ft.get(c) for c in cols]
        for key, col in FINETUNE_JSON.items():
            cols.append(col)
            values.append(json.dumps(ft[key]) if ft.get(key) is not None else None)
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
        """Every fine-tune row by rung, task and name, JSON columns decoded (`settings`,
        `task_spec`, `metrics`, `latency_ms`, `curve`, `extra`; `window_losses` only when asked
        for: the per-window validation losses behind the paired gap intervals). A study whose
        database has no fine-tune table yet reads as none."""
        if not _has_table(self.conn, "finetunes"):
            return []
        out = []
        for row in self.conn.execute("SELECT * FROM finetunes ORDER BY of_rung, task, name"):
            r = dict(row)
            for key, col in FINETUNE_JSON.items():
                raw = r.pop(col)
                if key == "window_losses" and not windows:
                    continue
                r[key] = json.loads(raw) if raw else None
            out.append(r)
        return out

    def delete_finetune(self, name: str) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM finetunes WHERE name = ?", (name,))

    def set_finetune_scaling(self, task: str, analysis: dict) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO finetune_scaling (task, analysis_json, "
                              "created) VALUES (?, ?, ?)",
                              (task, json.dumps(analysis), time.time()))

    def finetune_scaling(self) -> list[dict]:
        """The stored scaling analysis of each second task (by task name)."""
        if not _has_table(self.conn, "finetune_scaling"):
            return []
        return [json.loads(r[0]) for r in
                self.conn.execute("SELECT analysis_json FROM finetune_scaling ORDER BY task")]


# -- fine-tuning (added within schema version 2) --------------------------------------------------
#
# Schema 2 has not been released with these tables, so they do not bump the version: a writer
# creates them (CREATE TABLE IF NOT EXISTS) every time it opens a study, new, current or just
# upgraded from v1; a reader of a study that no writer has opened since simply sees no fine-tunes.
#
#   finetunes          one row per fine-tuned model (`scalelab finetune`): the rung it started
#                      from, the second task, the method and its settings, the status (running
#                      while it trains, then done or diverged) and every measurement; see
#                      `scalelab.finetune.driver` for the fields.
#   finetune_scaling   one row per second task: the laws per method, the gaps to full
#                      fine-tuning with their intervals (`scalelab.finetune.scaling`).

FINETUNE_SCHEMA = """
CREATE TABLE IF NOT EXISTS finetunes (
    name TEXT PRIMARY KEY,
    of_rung INTEGER NOT NULL,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    status TEXT NOT NULL,
    settings_json TEXT,
    task_json TEXT,
    n_params INTEGER, n_nonembed INTEGER,
    trainable_params INTEGER, trainable_fraction REAL,
    D INTEGER, unit TEXT, steps INTEGER, lr REAL,
    zero_shot_loss REAL, val_loss REAL, metrics_json TEXT,
    train_seconds REAL, units_per_s REAL,
    peak_mem_bytes INTEGER, train_state_bytes INTEGER,
    bytes INTEGER, full_bytes INTEGER,
    latency_json TEXT, curve_json TEXT, window_losses_json TEXT, extra_json TEXT,
    created REAL NOT NULL, updated REAL
);
CREATE TABLE IF NOT EXISTS finetune_scaling (
    task TEXT PRIMARY KEY,
    analysis_json TEXT NOT NULL,
    created REAL NOT NULL
)
"""
_FINETUNE_STATEMENTS = tuple(s.strip() for s in FINETUNE_SCHEMA.split(";") if s.strip())
FINETUNE_COLUMNS = (
    "name", "of_rung", "task", "method", "status", "n_params", "n_nonembed", "trainable_params",
    "trainable_fraction", "D", "unit", "steps", "lr", "zero_shot_loss", "val_loss",
    "train_seconds", "units_per_s", "peak_mem_bytes", "train_state_bytes", "bytes", "full_bytes",
)
FINETUNE_JSON = {"settings": "settings_json", "task_spec": "task_json", "metrics": "metrics_json",
                 "latency_ms": "latency_json", "curve": "curve_json",
                 "window_losses": "window_losses_json", "extra": "extra_json"}


MODEL_TABLE = """
CREATE TABLE IF NOT EXISTS model (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint_json TEXT NOT NULL
)"""


def _two_axis_keys(row: dict) -> dict:
    plan = row["plan"] if isinstance(row["plan"], dict) else {}
    units = plan.get("train_units")
    return {"budget": plan.get("budget"), "schedule": plan.get("schedule") or "cosine",
            "trunk": plan.get("trunk"),
            "epochs": row["D"] / units if units and row["D"] is not None else None}


def _add_tables(conn: sqlite3.Connection) -> None:
    """What schema 2 gained after its first release, added on every writer open: the
    fine-tuning tables, the rungs' `energy_j` column (NVML energy; NULL where the device
    reports none) and `failed_reason` (why a rung stopped on an error), and the `model` table:
    one row, the fingerprint of the code that builds the study's models (none in a study made
    before it, which records it on its next run; `scalelab.planned`). Readers of a study
    without them see no such key (`.get` gives None) and no fingerprint."""
    with conn:
        for statement in _FINETUNE_STATEMENTS:
            conn.execute(statement)
        conn.execute(MODEL_TABLE)
        rung_columns = _columns(conn, "rungs")
        for column, kind in (("energy_j", "REAL"), ("failed_reason", "TEXT")):
            if column not in rung_columns:
                conn.execute(f"ALTER TABLE rungs ADD COLUMN {column} {kind}")


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None
