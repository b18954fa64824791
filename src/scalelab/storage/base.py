"""The storage contract of a study: what the driver writes and every reader reads.

`StudyStorage` is the one interface; `storage.sqlite.StudyStore` keeps a study in its folder's
SQLite database (the real one), `storage.memory.MemoryStore` keeps it in this process (tests).
Both hand out the same rows: plain dicts, JSON columns decoded, and the derived keys built here
(`rung_view`), so a reader cannot tell them apart (tests/storage/test_contract.py runs the
same tests against both).

Records go in as the plain dicts of `scalelab.records` (`RungPlan.to_dict()`,
`RungResult.to_dict()`, a variant's dict, a fine-tune's dict) and come out as rows. Files that
are no records (checkpoints, variants, reports) live in the study `folder` whichever storage
holds the records.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

# The columns of a rung row as stored (the JSON ones under their `_json` names).
RUNG_COLUMNS = (
    "rung", "key_n", "key_d", "repeat", "status", "family", "shape_json", "plan_json",
    "n_params", "n_nonembed", "D", "unit", "steps", "lr", "seed", "val_loss", "train_loss",
    "metrics_json", "flops", "flops_6nd", "train_seconds", "units_per_s", "mfu", "energy_j",
    "peak_mem_bytes", "checkpoint_bytes", "latency_json", "diverged_step", "diverged_reason",
    "checkpoint", "updated", "failed_reason",
)
# RungResult.to_dict() keys -> plain columns; `metrics` and `latency_ms` are stored as JSON.
RUNG_RESULT_COLUMNS = (
    "status", "D", "steps", "train_seconds", "val_loss", "train_loss", "flops", "flops_6nd",
    "units_per_s", "mfu", "energy_j", "peak_mem_bytes", "checkpoint_bytes", "checkpoint",
    "diverged_step", "diverged_reason",
)
RUNG_RESULT_JSON = {"metrics": "metrics_json", "latency_ms": "latency_json"}
RUNG_JSON = {"plan": "plan_json", "shape": "shape_json", **RUNG_RESULT_JSON}
STUDY_JSON = ("spec", "machine", "corpus")
VARIANT_JSON = {"settings": "settings_json", "latency_ms": "latency_json",
                "extra": "extra_json"}
FINETUNE_COLUMNS = (
    "name", "of_rung", "task", "method", "status", "n_params", "n_nonembed", "trainable_params",
    "trainable_fraction", "D", "unit", "steps", "lr", "zero_shot_loss", "val_loss",
    "train_seconds", "units_per_s", "peak_mem_bytes", "train_state_bytes", "bytes", "full_bytes",
)
FINETUNE_JSON = {"settings": "settings_json", "task_spec": "task_json", "metrics": "metrics_json",
                 "latency_ms": "latency_json", "curve": "curve_json",
                 "window_losses": "window_losses_json", "extra": "extra_json"}
CURVE_KEYS = ("step", "tokens", "train_loss", "val_loss", "lr")
# A forecast of `scalelab grow` (storage.migrations.FORECAST_TABLE), recorded before its rung
# trains; what the rung measured is read from the rung's row (`forecast_view`).
FORECAST_COLUMNS = ("rung", "target", "step", "n", "predicted", "lo", "hi", "level")
FORECAST_JSON = {"plan": "plan_json", "detail": "detail_json"}


def dumps(value: Any) -> str | None:
    """A JSON column's text; None stays NULL."""
    return None if value is None else json.dumps(value)


def loads(raw: str | None) -> Any:
    return json.loads(raw) if raw else None


def check_result(result: dict) -> None:
    """`record_rung` takes RungResult fields only: anything else would be lost silently."""
    unknown = sorted(set(result) - set(RUNG_RESULT_COLUMNS) - set(RUNG_RESULT_JSON))
    if unknown:
        raise ValueError(f"record_rung: unknown result fields {unknown}")


def check_finetune(ft: dict) -> None:
    unknown = sorted(set(ft) - set(FINETUNE_COLUMNS) - set(FINETUNE_JSON))
    if unknown:
        raise ValueError(f"record_finetune: unknown fields {unknown}")


def fit_x(fit: dict) -> str:
    """A fit's input as one text: a law of several inputs (L(N, D)) names them as a list."""
    return fit["x"] if isinstance(fit["x"], str) else ",".join(map(str, fit["x"]))


def forecast_row(f: dict, now: float) -> dict:
    """The stored row of a forecast (FORECAST_COLUMNS and FORECAST_JSON keys; nothing else, so
    a misspelt key is refused rather than lost)."""
    unknown = sorted(set(f) - set(FORECAST_COLUMNS) - set(FORECAST_JSON))
    if unknown:
        raise ValueError(f"add_forecasts: unknown fields {unknown}")
    row = {c: f.get(c) for c in FORECAST_COLUMNS}
    row.update({col: dumps(f.get(key)) for key, col in FORECAST_JSON.items()})
    row["created"] = now
    return row


def forecast_view(stored: dict, rung: dict | None) -> dict:
    """A stored forecast as readers get it, JSON columns decoded, with its outcome from the
    rung's row (`rung`: its status, val_loss and updated; None when the rung is not stored):
    `outcome` the status once finished (done or diverged), `measured` the val_loss of a done
    rung, `measured_at` when it finished; None before."""
    from scalelab.records import FINISHED

    r = {k: v for k, v in stored.items() if k not in FORECAST_JSON.values()}
    r.update({key: loads(stored.get(col)) for key, col in FORECAST_JSON.items()})
    ended = rung is not None and rung["status"] in FINISHED
    r.update(outcome=rung["status"] if ended else None,
             measured=rung["val_loss"] if ended and rung["status"] == "done" else None,
             measured_at=rung["updated"] if ended else None)
    return r


def rung_view(stored: dict) -> dict:
    """A stored rung row (every RUNG_COLUMNS key) as readers get it: the JSON columns decoded
    as `plan`, `shape`, `metrics` and `latency_ms` (None when not recorded), plus the names
    summary.json and runs.csv carry beside the stored ones, derived here and nowhere else:

        tokens        = D
        tokens_per_s  = units_per_s
        val_bpb       = metrics.get("bpb")
        n_layer, d_model, n_head = shape.get(...)  (None for a shape without them)

    and the two-axis keys, from the plan: `budget` (the IsoFLOP budget C, None off one),
    `schedule` ("cosine" for plans older than the key), `trunk` (the rung a WSD branch starts
    from, else None) and `epochs` = D / the plan's train_units (None where unknown).
    """
    r = {k: v for k, v in stored.items() if k not in RUNG_JSON.values()}
    for key, col in RUNG_JSON.items():
        r[key] = loads(stored.get(col))
    shape = r["shape"] if isinstance(r["shape"], dict) else {}
    plan = r["plan"] if isinstance(r["plan"], dict) else {}
    r["tokens"] = r["D"]
    r["tokens_per_s"] = r["units_per_s"]
    r["val_bpb"] = (r["metrics"] or {}).get("bpb")
    for key in ("n_layer", "d_model", "n_head"):
        r[key] = shape.get(key)
    units = plan.get("train_units")
    r.update(budget=plan.get("budget"), schedule=plan.get("schedule") or "cosine",
             trunk=plan.get("trunk"),
             epochs=r["D"] / units if units and r["D"] is not None else None)
    return r


def planned_row(p: dict, now: float) -> dict:
    """The stored row of a planned rung (`RungPlan.to_dict()`), status `pending`."""
    row = dict.fromkeys(RUNG_COLUMNS)
    row.update(rung=p["rung"], key_n=float(p["target_n"]), key_d=int(p["D"]),
               repeat=int(p.get("repeat", 0)), status="pending", family=p["family"],
               shape_json=json.dumps(p["shape"]), plan_json=json.dumps(p),
               n_params=p["n_params"], n_nonembed=p["n_nonembed"], D=p["D"], unit=p["unit"],
               steps=p["steps"], lr=p["lr"], seed=p["seed"], updated=now)
    return row


def result_columns(result: dict) -> dict:
    """A RungResult dict as the columns it sets (JSON ones encoded); only the keys present."""
    check_result(result)
    cols = {c: result[c] for c in RUNG_RESULT_COLUMNS if c in result}
    cols.update({col: dumps(result[key]) for key, col in RUNG_RESULT_JSON.items()
                 if key in result})
    return cols


def variant_view(stored: dict) -> dict:
    v = {k: val for k, val in stored.items() if k not in VARIANT_JSON.values()}
    v.update({key: loads(stored.get(col)) for key, col in VARIANT_JSON.items()})
    return v


def finetune_view(stored: dict, windows: bool) -> dict:
    r = {k: v for k, v in stored.items() if k not in FINETUNE_JSON.values()}
    for key, col in FINETUNE_JSON.items():
        if key != "window_losses" or windows:
            r[key] = loads(stored.get(col))
    return r


class StudyStorage(ABC):
    """Where one study's records live: its rungs and their curves, fits, compressed variants
    and fine-tunes. Only the driver writes (one writer at a time); every write is atomic, so an
    interrupted driver leaves the last recorded state. Readers see the current schema whatever
    version wrote the study (`storage.migrations` upgrades old shapes once, at read time)."""

    folder: Path  # the study folder: checkpoints, variants, reports
    readonly: bool

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @abstractmethod
    def close(self) -> None:
        """Release what the storage holds (its connection, the writer's lock)."""

    def __enter__(self) -> StudyStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the study -----------------------------------------------------------------------------

    @abstractmethod
    def study(self) -> dict | None:
        """The study row (name, task, family, spec, machine, corpus, gemm_peak_flops,
        vendor_peak_flops, created, model), None before `init_study`."""

    @abstractmethod
    def init_study(self, name: str, task: str, family: str, spec: dict) -> None: ...

    @abstractmethod
    def set_machine(self, machine: dict, corpus: dict, gemm_peak: float | None,
                    vendor_peak: float | None) -> None: ...

    @abstractmethod
    def set_model(self, fingerprint: dict) -> None:
        """The fingerprint of the code that builds the study's models
        (`scalelab.models.base.family_fingerprint`); a resume compares against it."""

    # -- rungs ---------------------------------------------------------------------------------

    @abstractmethod
    def add_rungs(self, plans: list[dict]) -> list[int]:
        """Add planned rungs (`RungPlan.to_dict()`) as `pending`, all or none. A plan whose rung
        id or key (target_n, D, repeat) is already held is skipped and the stored rung kept (a
        resumed study re-plans the same rungs). Returns the rung ids added."""

    @abstractmethod
    def set_status(self, rung: int, status: str) -> None:
        """A new status; the reason of an earlier failure goes with the old status."""

    @abstractmethod
    def fail_rung(self, rung: int, reason: str) -> None:
        """Status `failed` with its reason (one line): a resume trains the rung again."""

    @abstractmethod
    def drop_rungs(self, rungs: list[int]) -> None:
        """Forget planned rungs and their curves, so they can be planned again (`--replan`)."""

    @abstractmethod
    def record_rung(self, rung: int, result: dict) -> None:
        """A finished rung's measurements (`RungResult.to_dict()`, only the keys present).
        An unknown key or a rung the study does not hold raises ValueError."""

    @abstractmethod
    def record_curve(self, rung: int, points: list[dict]) -> None:
        """Curve points (CURVE_KEYS); a point of a step already held replaces it."""

    @abstractmethod
    def rungs(self) -> list[dict]:
        """Every rung by id, as `rung_view` gives it."""

    @abstractmethod
    def curves(self) -> dict[int, list[dict]]:
        """Each rung's curve points by step."""

    # -- fits ----------------------------------------------------------------------------------

    @abstractmethod
    def replace_fits(self, fits: list[dict]) -> None: ...

    @abstractmethod
    def fits(self) -> list[dict]: ...

    # -- variants ------------------------------------------------------------------------------

    @abstractmethod
    def record_variant(self, v: dict) -> None:
        """Insert or replace a variant (by name)."""

    @abstractmethod
    def variants(self) -> list[dict]:
        """Every variant by rung and name, JSON columns decoded (VARIANT_JSON)."""

    # -- fine-tunes ----------------------------------------------------------------------------

    @abstractmethod
    def record_finetune(self, ft: dict) -> None:
        """Insert or replace one fine-tune (FINETUNE_COLUMNS and FINETUNE_JSON keys, a missing
        one stored as None); its `created` is kept across replacements."""

    @abstractmethod
    def finetunes(self, windows: bool = False) -> list[dict]:
        """Every fine-tune by rung, task and name, JSON columns decoded (`window_losses` only
        when asked for)."""

    @abstractmethod
    def delete_finetune(self, name: str) -> None: ...

    @abstractmethod
    def set_finetune_scaling(self, task: str, analysis: dict) -> None: ...

    @abstractmethod
    def finetune_scaling(self) -> list[dict]:
        """The stored scaling analysis of each second task, by task name."""

    # -- forecasts (`scalelab grow`) -----------------------------------------------------------

    @abstractmethod
    def add_forecasts(self, forecasts: list[dict]) -> list[int]:
        """Record forecasts (FORECAST_COLUMNS and FORECAST_JSON keys), all or none. A forecast
        is pre-registered: one of a rung that already has one is skipped and the stored one
        kept as it was. Returns the rungs whose forecast was added."""

    @abstractmethod
    def forecasts(self) -> list[dict]:
        """Every forecast by rung (`forecast_view`: with its rung's outcome) and `created`."""
