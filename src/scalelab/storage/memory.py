"""MemoryStore: a study's records in this process, under the same contract as the SQLite one.

For tests and throwaway studies: nothing is written to disk but the files that are no records
(checkpoints, variants, reports), which go to `folder` as with any storage. Values are kept as
the SQLite store keeps them (JSON columns as JSON text), so they come back in the same shapes:
tuples as lists, integer keys of a JSON object as strings, a copy on every read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

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


class MemoryStore(StudyStorage):
    """A study held in memory; `folder` is where its files go (default: the working directory)."""

    def __init__(self, folder: str | Path = "."):
        self.folder = Path(folder)
        self.readonly = False
        self._study: dict | None = None
        self._model: str | None = None
        self._rungs: dict[int, dict] = {}
        self._curves: dict[int, dict[int, dict]] = {}
        self._fits: list[str] = []
        self._variants: dict[str, dict] = {}
        self._finetunes: dict[str, dict] = {}
        self._scaling: dict[str, str] = {}
        self._forecasts: dict[int, dict] = {}

    def close(self) -> None:
        pass  # nothing is held: no connection, no lock

    # -- study ---------------------------------------------------------------------------------

    def study(self) -> dict | None:
        if self._study is None:
            return None
        out = {k: v for k, v in self._study.items() if not k.endswith("_json")}
        out.update({key: loads(self._study[f"{key}_json"]) for key in STUDY_JSON})
        out["model"] = loads(self._model)
        return out

    def init_study(self, name: str, task: str, family: str, spec: dict) -> None:
        if self._study is not None:
            raise ValueError("init_study: the study is already recorded")
        self._study = {"id": 1, "name": name, "task": task, "family": family,
                       "spec_json": json.dumps(spec), "machine_json": None,
                       "corpus_json": None, "gemm_peak_flops": None,
                       "vendor_peak_flops": None, "created": time.time()}

    def set_machine(self, machine: dict, corpus: dict, gemm_peak: float | None,
                    vendor_peak: float | None) -> None:
        if self._study is not None:
            self._study.update(machine_json=json.dumps(machine), corpus_json=json.dumps(corpus),
                               gemm_peak_flops=gemm_peak, vendor_peak_flops=vendor_peak)

    def set_model(self, fingerprint: dict) -> None:
        self._model = json.dumps(fingerprint)

    # -- rungs ---------------------------------------------------------------------------------

    def add_rungs(self, plans: list[dict]) -> list[int]:
        now = time.time()
        new = [planned_row(p, now) for p in plans]  # every plan is read before any is added
        keys = {(r["key_n"], r["key_d"], r["repeat"]) for r in self._rungs.values()}
        added = []
        for row in new:
            key = (row["key_n"], row["key_d"], row["repeat"])
            if row["rung"] in self._rungs or key in keys:
                continue
            self._rungs[row["rung"]] = row
            keys.add(key)
            added.append(row["rung"])
        return added

    def set_status(self, rung: int, status: str) -> None:
        if rung in self._rungs:
            self._rungs[rung].update(status=status, failed_reason=None, updated=time.time())

    def fail_rung(self, rung: int, reason: str) -> None:
        if rung in self._rungs:
            self._rungs[rung].update(status="failed", failed_reason=reason, updated=time.time())

    def drop_rungs(self, rungs: list[int]) -> None:
        for rung in rungs:
            self._rungs.pop(rung, None)
            self._curves.pop(rung, None)

    def record_rung(self, rung: int, result: dict) -> None:
        cols = result_columns(result)
        if rung not in self._rungs:
            raise ValueError(f"record_rung: the study has no rung {rung}")
        self._rungs[rung].update(cols, updated=time.time())

    def record_curve(self, rung: int, points: list[dict]) -> None:
        rows = [{k: p[k] for k in CURVE_KEYS} for p in points]
        curve = self._curves.setdefault(rung, {})
        for row in rows:
            curve[row["step"]] = row

    def rungs(self) -> list[dict]:
        return [rung_view(dict(self._rungs[r])) for r in sorted(self._rungs)]

    def curves(self) -> dict[int, list[dict]]:
        return {rung: [dict(curve[s]) for s in sorted(curve)]
                for rung, curve in sorted(self._curves.items()) if curve}

    # -- fits ----------------------------------------------------------------------------------

    def replace_fits(self, fits: list[dict]) -> None:
        # Every record is read before any is kept: one without its law or input is refused
        # and the fits stay as they were, as in the SQLite store's transaction.
        rows = [(fit["law"], fit_x(fit), json.dumps(fit)) for fit in fits]
        self._fits = [text for _, _, text in rows]

    def fits(self) -> list[dict]:
        return [json.loads(f) for f in self._fits]

    # -- variants ------------------------------------------------------------------------------

    def record_variant(self, v: dict) -> None:
        self._variants[v["name"]] = {
            "name": v["name"], "of_rung": v["of_rung"], "method": v["method"],
            "settings_json": json.dumps(v.get("settings")), "n_params": v.get("n_params"),
            "n_nonembed": v.get("n_nonembed"), "bytes": v.get("bytes"),
            "val_loss": v.get("val_loss"), "latency_json": json.dumps(v.get("latency_ms")),
            "peak_mem_bytes": v.get("peak_mem_bytes"), "extra_json": json.dumps(v.get("extra")),
            "created": time.time(),
        }

    def variants(self) -> list[dict]:
        rows = sorted(self._variants.values(), key=lambda v: (v["of_rung"], v["name"]))
        return [variant_view(dict(v)) for v in rows]

    # -- fine-tunes ----------------------------------------------------------------------------

    def record_finetune(self, ft: dict) -> None:
        check_finetune(ft)
        now = time.time()
        old = self._finetunes.get(ft["name"])
        row = {c: ft.get(c) for c in FINETUNE_COLUMNS}
        row.update({col: dumps(ft.get(key)) for key, col in FINETUNE_JSON.items()})
        row.update(created=old["created"] if old is not None else now, updated=now)
        self._finetunes[ft["name"]] = row

    def finetunes(self, windows: bool = False) -> list[dict]:
        rows = sorted(self._finetunes.values(),
                      key=lambda r: (r["of_rung"], r["task"], r["name"]))
        return [finetune_view(dict(r), windows) for r in rows]

    def delete_finetune(self, name: str) -> None:
        self._finetunes.pop(name, None)

    def set_finetune_scaling(self, task: str, analysis: dict) -> None:
        self._scaling[task] = json.dumps(analysis)

    def finetune_scaling(self) -> list[dict]:
        return [json.loads(self._scaling[t]) for t in sorted(self._scaling)]

    # -- forecasts -----------------------------------------------------------------------------

    def add_forecasts(self, forecasts: list[dict]) -> list[int]:
        now = time.time()
        rows = [forecast_row(f, now) for f in forecasts]  # every one checked before any is kept
        added = []
        for row in rows:
            if row["rung"] not in self._forecasts:  # pre-registered: never rewritten
                self._forecasts[row["rung"]] = row
                added.append(row["rung"])
        return added

    def forecasts(self) -> list[dict]:
        return [forecast_view(dict(self._forecasts[r]), self._rungs.get(r))
                for r in sorted(self._forecasts)]
