"""A mirror of a study in MLflow: an export for the tracker people already use, never the record
(study.db is). One MLflow run per study folder (its spec as params, its fits as metrics, report.html
and summary.json as artifacts) with a child run per job: a rung or a tuning trial (its plan as
params, its curve by step, its final measurements), a compressed variant (its method and
settings, its measurements) and a fine-tune (its method and budget, its curve by step, its
measurements). Variants and fine-tunes are jobs of the executor like rungs, so their runs follow
their events as they happen; a variant or fine-tune made before the mirror was on gets its run
from the study's record when its outputs are written.

Runs are found again by tags (`scalelab.study`, `scalelab.kind`, and `scalelab.job`,
`scalelab.variant` or `scalelab.finetune`), so a resumed
or repeated command adds to the same runs instead of making new ones, and a step already logged is
not logged twice. If MLflow cannot be reached the study goes on: the mirror says so once and stops
mirroring. A URI whose scheme MLflow does not know is bad input (UserError) before anything runs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from scalelab.errors import UserError
from scalelab.execute.base import (
    BaseObserver,
    Checkpoint,
    Event,
    Failed,
    Finished,
    Job,
    Pruned,
    Started,
)

# The curve by step, under names of its own: the final measurements keep summary.json's names
# (val_loss on the larger final windows is not the curve's last point).
CURVE_KEYS = {"train_loss": "curve/train_loss", "val_loss": "curve/val_loss", "lr": "curve/lr"}
RUNG_METRICS = ("val_loss", "train_loss", "val_bpb", "val_error", "val_accuracy", "val_rmse",
                "flops", "flops_6nd", "train_seconds", "units_per_s", "mfu", "peak_mem_bytes",
                "checkpoint_bytes")
RUNG_PARAMS = ("n_params", "n_nonembed", "D", "unit", "steps", "batch_size", "lr",
               "warmup_steps", "seed", "repeat", "describe")
END_STATUS = {Finished: "FINISHED", Failed: "FAILED", Pruned: "KILLED"}
VARIANT_METRICS = ("val_loss", "bytes", "n_params", "n_nonembed", "peak_mem_bytes")
FINETUNE_METRICS = ("val_loss", "zero_shot_loss", "trainable_params", "trainable_fraction",
                    "bytes", "full_bytes", "train_seconds", "units_per_s", "peak_mem_bytes",
                    "train_state_bytes")


def tracking_uri(uri: str) -> tuple[str, str | None]:
    """MLflow's tracking URI and artifact root for what the user gave: a folder (or file://)
    becomes a SQLite store inside it, `mlflow.db`, with artifacts beside it, because MLflow 3
    keeps its folder store in maintenance mode only; any other URI is MLflow's to read."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme else uri).expanduser().resolve()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--mlflow {uri}: cannot create the folder ({err.strerror})") from None
        return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()
    return uri, None


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(f"{prefix}.{k}" if prefix else str(k), v)
    else:
        yield prefix, json.dumps(value) if isinstance(value, list | tuple) else str(value)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if v == v and abs(v) != float("inf") else None


@contextmanager
def _few_retries() -> Iterator[None]:
    """MLflow's REST client retries a server that does not answer for minutes; while probing,
    ask it for few retries and a short timeout (the user's own settings win)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    added = {k: v for k, v in keys.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


class MlflowMirror(BaseObserver):
    def __init__(self, uri: str, experiment: str, say: Callable[[str], None] = print):
        try:
            from mlflow import MlflowClient
            from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
        except ImportError:
            raise UserError("--mlflow needs MLflow: pip install 'scalelab[mlflow]'") from None
        self.uri, self.say = uri, say
        # MLflow logs each step of creating a store at INFO; the study's own output is enough.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.client: Any = None
        self.parent: str | None = None
        self.runs: dict[str, str] = {}  # job key -> run id
        self.children: dict[str, tuple[str, str]] = {}  # job key -> (kind, name): not a rung's
        self.logged: dict[str, int] = {}  # run id -> last curve step logged
        store_uri, self.artifacts = tracking_uri(uri)
        try:
            self.client = MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)
        except UnsupportedModelRegistryStoreURIException:
            raise UserError(f"--mlflow {uri}: unknown URI scheme '{urlparse(uri).scheme}' "
                            "(a folder, sqlite:///FILE, http(s)://HOST, or another store "
                            "MLflow knows)") from None
        except Exception as err:  # noqa: BLE001 (a store that cannot be opened is a fault)
            self._lost(err)
            return
        with _few_retries():
            self.experiment = self._call(self._experiment, experiment)

    # -- reaching MLflow -----------------------------------------------------------------------

    @property
    def on(self) -> bool:
        return self.client is not None

    def _lost(self, err: BaseException) -> None:
        self.client = None
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        self.say(f"warning: MLflow at {self.uri} cannot be reached ({first}); the study goes on "
                 "without the mirror")

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.client is None:
            return None
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 (any failure of the tracker must not stop a study)
            self._lost(err)
            return None

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=self.artifacts)

    def _find_or_create(self, tags: dict[str, str], name: str, parent: str | None) -> str:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = self.client.search_runs([self.experiment], query, max_results=1)
        if found:
            return found[0].info.run_id
        if parent is not None:
            tags = {**tags, "mlflow.parentRunId": parent}
        return self.client.create_run(self.experiment, tags=tags, run_name=name).info.run_id

    # -- the study -----------------------------------------------------------------------------

    def on_study(self, folder: Path, spec: dict) -> None:
        self._call(self._study, folder, spec)

    def _study(self, folder: Path, spec: dict) -> None:
        from mlflow.entities import Param

        self.folder = str(Path(folder).resolve())
        self.parent = self._find_or_create({"scalelab.study": self.folder,
                                            "scalelab.kind": "study"}, spec["name"], None)
        self.runs = {}
        self.client.update_run(self.parent, status="RUNNING")
        run = self.client.get_run(self.parent)
        if not run.data.params:  # params are immutable in MLflow: logged once, at creation
            params = [Param(k[:250], v[:6000]) for k, v in _flat("", spec)]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.parent, params=params[i:i + 100])

    def on_jobs(self, jobs: list[Job]) -> None:
        self._call(self._jobs, jobs)

    def _jobs(self, jobs: list[Job]) -> None:
        from mlflow.entities import Param

        for job in jobs:
            if job.kind != "rung":  # its params once made (a variant's settings) or finished
                self.children[job.key] = (job.kind, job.key.removeprefix(f"{job.kind}-"))
                continue
            run_id = self._run(job.key)
            if not self.client.get_run(run_id).data.params:
                plan = job.plan.to_dict()
                self.client.log_batch(run_id, params=[Param(k, str(plan[k])) for k in RUNG_PARAMS
                                                      if k in plan])

    def _run(self, key: str) -> str:
        if key not in self.runs:
            if key in self.children:
                self.runs[key] = self._child(*self.children[key])
            else:
                self.runs[key] = self._find_or_create(
                    {"scalelab.study": self.folder, "scalelab.kind": "job", "scalelab.job": key},
                    key, self.parent)
        return self.runs[key]

    def _child(self, kind: str, name: str) -> str:
        """The run of a variant or a fine-tune, by its name."""
        return self._find_or_create({"scalelab.study": self.folder, "scalelab.kind": kind,
                                     f"scalelab.{kind}": name}, name, self.parent)

    # -- events --------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if self.parent is not None and isinstance(event, Started | Checkpoint | Finished | Failed
                                                  | Pruned):
            self._call(self._event, event)

    def _event(self, event: Event) -> None:
        run_id = self._run(event.key)
        if isinstance(event, Started):
            self.client.update_run(run_id, status="RUNNING")
        if isinstance(event, Finished) and event.record is not None:  # a variant, a fine-tune
            kind = self.children[event.key][0]
            (self._variant if kind == "variant" else self._finetune)(event.record)
            return
        if isinstance(event, Checkpoint | Finished):
            self._curve(run_id, event.curve)
        if isinstance(event, Finished) and event.result is not None:
            self._metrics(run_id, event.result.to_dict() | {
                f"val_{k}": v for k, v in (event.result.metrics or {}).items()})
        status = END_STATUS.get(type(event))
        if status is not None:
            self.client.set_terminated(run_id, status=status)

    def _curve(self, run_id: str, curve: list[dict]) -> None:
        from mlflow.entities import Metric

        if run_id not in self.logged:
            history = self.client.get_metric_history(run_id, CURVE_KEYS["train_loss"])
            self.logged[run_id] = max((m.step for m in history), default=-1)
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(p[k]), now, int(p["step"])) for p in curve
                   if p["step"] > self.logged[run_id] for k, name in CURVE_KEYS.items()
                   if _number(p.get(k)) is not None]
        for i in range(0, len(metrics), 1000):  # MLflow's limit of metrics per batch
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        if curve:
            self.logged[run_id] = max(self.logged[run_id], max(p["step"] for p in curve))

    def _metrics(self, run_id: str, values: dict[str, Any], keys: tuple = RUNG_METRICS) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, _number(values[k]), now, 0) for k in keys
                   if _number(values.get(k)) is not None]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    # -- outputs -------------------------------------------------------------------------------

    def on_outputs(self, folder: Path, summary: dict) -> None:
        if self.parent is None:
            self.on_study(folder, summary["study"]["spec"])
        if self.parent is not None:
            self._call(self._outputs, Path(folder), summary)

    def _outputs(self, folder: Path, summary: dict) -> None:
        for rung in summary["rungs"]:
            self._backfill(folder, rung)
        for variant in summary.get("variants") or []:
            self._variant(variant)
        for tune in summary.get("finetunes") or []:
            if tune.get("status") != "running":
                self._finetune(tune)
        self._fits(summary.get("fits") or [])
        for name in ("report.html", "summary.json", "runs.csv", "tune.json"):
            if (folder / name).is_file():
                self.client.log_artifact(self.parent, str(folder / name))
        self.client.set_terminated(self.parent, status="FINISHED")

    def _backfill(self, folder: Path, rung: dict) -> None:
        """A rung that finished before the mirror was on (an earlier run without --mlflow, a
        resumed study): its run, params, final metrics and curve from the study's record."""
        from mlflow.entities import Param

        from scalelab.storage import StudyStore

        key = f"rung-{rung['rung']}"
        run_id = self._run(key)
        run = self.client.get_run(run_id)
        if not run.data.params:
            self.client.log_batch(run_id, params=[Param(k, str(rung[k])) for k in RUNG_PARAMS
                                                  if rung.get(k) is not None])
        if rung["status"] in ("done", "diverged") and "val_loss" not in run.data.metrics:
            with StudyStore.open_readonly(folder) as store:
                self._curve(run_id, store.curves().get(rung["rung"], []))
            self._metrics(run_id, rung)
            self.client.set_terminated(run_id, status="FINISHED")

    def _variant(self, v: dict) -> None:
        """A variant's run: its method and settings, its measurements (a record as stored, or
        summary.json's row)."""
        self._measured(self._child("variant", v["name"]), v, ("of_rung", "method"),
                       VARIANT_METRICS)

    def _finetune(self, f: dict) -> None:
        """A fine-tune's run: its method and budget, its curve, its measurements; a diverged
        one ends FAILED."""
        run_id = self._child("finetune", f["name"])
        self._curve(run_id, f.get("curve") or [])
        self._measured(run_id, f, ("of_rung", "task", "method", "D", "unit", "steps", "lr"),
                       FINETUNE_METRICS, "FINISHED" if f.get("status") == "done" else "FAILED")

    def _measured(self, run_id: str, record: dict, params: tuple[str, ...],
                  metrics: tuple[str, ...], status: str = "FINISHED") -> None:
        from mlflow.entities import Param

        from scalelab import latency

        if not self.client.get_run(run_id).data.params:
            values = {k: record.get(k) for k in params} | {
                "settings": json.dumps(record.get("settings"))[:6000]}
            self.client.log_batch(run_id, params=[Param(k, str(p)) for k, p in values.items()])
        lat = {f"latency_ms_b{b}": ms for b, ms in latency.medians(record.get("latency_ms"))
               .items()}
        self._metrics(run_id, record | lat, (*metrics, *lat))
        self.client.set_terminated(run_id, status=status)

    def _fits(self, fits: list[dict]) -> None:
        values = {}
        for fit in fits:
            # The law's name too: a two-axis study holds a power law and a two-axis law of
            # the same y, and one must not overwrite the other's metrics.
            prefix = f"fit.{fit.get('law', 'power')}.{fit['y']}"
            for name, value in (fit.get("params") or {}).items():
                values[f"{prefix}.{name}"] = value
                lo_hi = (fit.get("intervals") or {}).get(name)
                if lo_hi:
                    values[f"{prefix}.{name}_lo"], values[f"{prefix}.{name}_hi"] = lo_hi
            values[f"{prefix}.holdout_rel_error"] = (fit.get("holdout") or {}).get("rel_error")
        self._metrics(self.parent, values, tuple(values))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fits.json"
            path.write_text(json.dumps(fits, indent=2))
            self.client.log_artifact(self.parent, str(path))
