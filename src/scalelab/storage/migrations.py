"""The study database's schema, its versions, and the upgrades between them.

Schema versions:
    1   GPT-only rungs (n_layer, d_model, n_head, tokens, val_bpb, tokens_per_s columns).
    2   family-neutral rungs: the family's opaque `shape`, D in the task's `unit`, the task's
        `metrics`, and the key (key_n, key_d, repeat) = (target N, D, seed repeat), unique, so a
        two-axis ladder can hold several D per N. `rung` stays the integer id everything else
        (curves, variants, checkpoint files) refers to.

Old shapes are normalised once, here, and nowhere else: the writer (`StudyStore.create_or_open`,
holding the lock) upgrades an older database in place in ONE transaction (BEGIN IMMEDIATE ...
COMMIT, ROLLBACK on any error, so a failed upgrade leaves the old database exactly as it was); a
reader (`StudyStore.open_readonly`) never writes: it upgrades an in-memory copy at read time. So
every row a storage hands out is in the current shape.
"""

from __future__ import annotations

import json
import sqlite3
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
SCHEMA_STATEMENTS = tuple(s.strip() for s in SCHEMA.split(";") if s.strip())
_RUNGS_DDL = next(s for s in SCHEMA_STATEMENTS if "EXISTS rungs (" in s)

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


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def read_version(conn: sqlite3.Connection, db: Path) -> int | None:
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


def upgrade(conn: sqlite3.Connection, version: int, db: Path, where: str) -> None:
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
# -- forecasts (added within schema version 2) -----------------------------------------------------
#
#   forecasts          one row per rung `scalelab grow` added: the prediction the study's law made
#                      for it, with its interval, recorded BEFORE the rung trained (never
#                      rewritten: a resumed grow keeps the row it finds), the rung's plan (so a
#                      rerun trains that very rung), the grow's target and step. What the
#                      rung measured is the rung's own record (`StudyStorage.forecasts` joins
#                      them), so it is never kept twice (`scalelab.plan.grow`).

FORECAST_TABLE = """
CREATE TABLE IF NOT EXISTS forecasts (
    rung INTEGER PRIMARY KEY,
    target REAL NOT NULL,
    step INTEGER NOT NULL,
    n REAL NOT NULL,
    predicted REAL NOT NULL,
    lo REAL, hi REAL, level REAL,
    plan_json TEXT NOT NULL,
    detail_json TEXT,
    created REAL NOT NULL
)"""
MODEL_TABLE = """
CREATE TABLE IF NOT EXISTS model (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint_json TEXT NOT NULL
)"""


def add_tables(conn: sqlite3.Connection) -> None:
    """What schema 2 gained after its first release, added on every writer open: the
    fine-tuning tables, the rungs' `energy_j` column (NVML energy; NULL where the device
    reports none) and `failed_reason` (why a rung stopped on an error), and the `model` table:
    one row, the fingerprint of the code that builds the study's models (none in a study made
    before it, which records it on its next run; `scalelab.planned`); and the `forecasts`
    table of `scalelab grow`. Readers of a study without them see no such key (`.get` gives
    None), no fingerprint and no forecasts."""
    with conn:
        for statement in _FINETUNE_STATEMENTS:
            conn.execute(statement)
        conn.execute(MODEL_TABLE)
        conn.execute(FORECAST_TABLE)
        rung_columns = _columns(conn, "rungs")
        for column, kind in (("energy_j", "REAL"), ("failed_reason", "TEXT")):
            if column not in rung_columns:
                conn.execute(f"ALTER TABLE rungs ADD COLUMN {column} {kind}")


def lacks_additions(conn: sqlite3.Connection) -> bool:
    """Whether a schema-2 database predates some of `add_tables` (its writer has not opened it
    since): a reader then adds them to an in-memory copy, so every row has every key."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return (not {"finetunes", "finetune_scaling", "model", "forecasts"} <= tables
            or not {"energy_j", "failed_reason"} <= set(_columns(conn, "rungs")))
