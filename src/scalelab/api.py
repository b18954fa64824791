"""`Study`: one study as a Python object, to create and run, or to load and read back.

    from scalelab import Study
    study = Study.create("spec.yaml", "studies/mine")    # or a StudySpec, or a dict of keys
    study.run()                                         # train (or resume), fit, write outputs
    study = Study.load("studies/mine")                  # read-only: no lock, never writes
    study.law().predict([1e7])                          # the study's own law, with intervals
    study.to_dataframe()                                # one row per rung (pandas)

A loaded study reads whatever scalelab version wrote it: its storage hands out the current
shapes (`scalelab.storage.migrations` upgrades old ones at read time). Records come back typed:
`.rungs` (`Rung`: its `RungPlan` and, once finished, its `RungResult`), `.variants`
(`scalelab.records.Variant`), `.finetunes` (`Finetune`); `.fits` are the stored fit records as
summary.json holds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalelab.errors import UserError
from scalelab.records import FINISHED, RungPlan, RungResult, Variant
from scalelab.storage import StudyStorage, StudyStore

if TYPE_CHECKING:
    import pandas

    from scalelab.execute.base import Executor, Observer
    from scalelab.laws import Law
    from scalelab.models.base import Family
    from scalelab.spec import StudySpec
    from scalelab.tasks.base import Task


@dataclass(frozen=True)
class Rung:
    """One rung of the ladder: what it was planned to train and, once finished (status done or
    diverged), what it measured; `failed_reason` says why a `failed` rung stopped."""

    rung: int
    status: str
    plan: RungPlan
    result: RungResult | None
    failed_reason: str | None = None

    @property
    def n_nonembed(self) -> int:
        return self.plan.n_nonembed

    @property
    def val_loss(self) -> float | None:
        return None if self.result is None else self.result.val_loss

    @classmethod
    def from_row(cls, row: dict) -> Rung:
        """A storage row (`StudyStorage.rungs`) as a typed rung."""
        result = None
        if row["status"] in FINISHED:
            values = {f.name: row.get(f.name) for f in fields(RungResult)}
            values["metrics"] = values["metrics"] or {}
            result = RungResult(**values)
        return cls(rung=row["rung"], status=row["status"], plan=RungPlan.from_dict(row["plan"]),
                   result=result, failed_reason=row.get("failed_reason"))


@dataclass(frozen=True)
class Finetune:
    """A model fine-tuned from a rung on a second task (`scalelab finetune`): its method and
    settings, status, and what it measured (fields as `scalelab.finetune.driver` records them;
    the per-window losses stay in the storage: `finetunes(windows=True)`)."""

    name: str
    of_rung: int
    task: str
    method: str
    status: str
    settings: dict | None = None
    task_spec: dict | None = None
    n_params: int | None = None
    n_nonembed: int | None = None
    trainable_params: int | None = None
    trainable_fraction: float | None = None
    D: int | None = None
    unit: str | None = None
    steps: int | None = None
    lr: float | None = None
    zero_shot_loss: float | None = None
    val_loss: float | None = None
    metrics: dict | None = None
    train_seconds: float | None = None
    units_per_s: float | None = None
    peak_mem_bytes: int | None = None
    train_state_bytes: int | None = None
    bytes: int | None = None
    full_bytes: int | None = None
    latency_ms: dict | None = None
    curve: list | None = None
    extra: dict | None = None


def _typed(cls: type, row: dict) -> Any:
    """A dataclass from a storage row: the row's keys that are its fields (created, updated and
    other bookkeeping are left out)."""
    return cls(**{f.name: row.get(f.name) for f in fields(cls)})


def _as_spec(spec: Any) -> StudySpec:
    """A StudySpec from what `Study.create` takes: None (the default study), a StudySpec, a dict
    of spec keys, or the path of a YAML spec file."""
    from scalelab.spec import StudySpec, default_spec, load_spec, parse_spec

    if spec is None:
        return default_spec()
    if isinstance(spec, StudySpec):
        return spec
    if isinstance(spec, str | Path):
        return load_spec(spec)
    return parse_spec(spec)


class Study:
    """A study: its storage (the records), and the task and family objects it trains with when
    they are the user's own rather than the spec's (give them again to `load` to run it)."""

    def __init__(self, storage: StudyStorage, *, spec: StudySpec | None = None,
                 task: Task | None = None, family: Family | None = None):
        self._storage = storage
        self._spec = spec
        self._task, self._family = task, family
        self._own_fits: list[dict] | None = None  # the study's own fit, made on first use

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def create(cls, spec: Any, out: str | Path, *, task: Task | None = None,
               family: Family | None = None) -> Study:
        """A new study in folder `out`, its spec recorded, nothing trained yet (`run` trains).

        Held for writing (the folder's lock) until `close`. A folder that already holds the
        same study is opened to resume it, as `scalelab run` does; one holding another spec is
        a UserError. `task` and `family` are the user's own objects (see `scalelab.run_study`).
        """
        from scalelab.study import canonical_spec, open_study, resolve

        given = _as_spec(spec)
        res = resolve(given, task, family, Path(out))  # every bad option refused here
        store = open_study(res.spec, Path(out), canonical_spec(res.spec, task, family))
        return cls(store, spec=given, task=task, family=family)

    @classmethod
    def load(cls, out: str | Path, readonly: bool = True, *, task: Task | None = None,
             family: Family | None = None) -> Study:
        """The study in folder `out`. Read-only by default: no lock, so it loads beside a
        running driver, and nothing can be written. `readonly=False` takes the lock (a UserError
        while another process holds it), as needed to `run` it again."""
        if not (Path(out) / "study.db").is_file():  # a writer would create one: load none
            raise UserError(f"{out} is not a study folder (no study.db)")
        store = StudyStore.open_readonly(out) if readonly else StudyStore.create_or_open(out)
        if store.study() is None:
            store.close()
            raise UserError(f"{out} has no study recorded")
        return cls(store, task=task, family=family)

    def close(self) -> None:
        """Release the storage (and the lock of a writable study)."""
        self._storage.close()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what it is ----------------------------------------------------------------------------

    @property
    def storage(self) -> StudyStorage:
        return self._storage

    @property
    def folder(self) -> Path:
        return self._storage.folder

    @property
    def readonly(self) -> bool:
        return self._storage.readonly

    @property
    def spec(self) -> StudySpec:
        """The spec it was created with, else the one it stored."""
        from scalelab.spec import parse_spec

        if self._spec is not None:
            return self._spec
        return parse_spec(self._info()["spec"], f"{self.folder}'s spec")

    @property
    def name(self) -> str:
        return self._info()["name"]

    def _info(self) -> dict:
        info = self._storage.study()
        if info is None:
            raise UserError(f"{self.folder} has no study recorded")
        return info

    # -- running -------------------------------------------------------------------------------

    def run(self, executor: Executor | None = None, callbacks: Sequence[Observer] = (),
            **options: Any) -> None:
        """Train every unfinished rung, fit the law and write the outputs (summary.json,
        runs.csv, report.html): `scalelab.study.run_study`, as `scalelab run` does.

        `executor`: one already open (None: the spec's `execute`, opened and closed here);
        `callbacks`: observers (`scalelab.execute.base.Observer`) that get every event once it
        is recorded; `options` go to `run_study` (device_name, execute, plans, replan, ...).
        An interrupted run keeps what finished: run again to resume."""
        from scalelab.study import run_study

        if self.readonly or not isinstance(self._storage, StudyStore):
            raise UserError(f"{self.folder} was loaded read-only; "
                            "Study.load(folder, readonly=False) to run it")
        spec, folder = self.spec, self.folder
        # run_study opens the folder as its writer and takes the lock itself: this study hands
        # it over for the run and takes it back after, however the run ends.
        self._storage.close()
        self._own_fits = None
        try:
            run_study(spec, folder, task=self._task, family=self._family, executor=executor,
                      observers=list(callbacks), **options)
        finally:
            self._storage = StudyStore.create_or_open(folder)

    def grow(self, target: float, executor: Executor | None = None,
             callbacks: Sequence[Observer] = (), **options: Any) -> Any:
        """Grow the study toward size `target`, each step's forecast recorded before it trains
        (`scalelab grow`: `scalelab.plan.grow.grow`, whose `options` are tolerance, steps,
        budget, seconds, noise, sims, seed, execute). Returns its `GrowOutcome`; rerun to
        resume an interrupted grow."""
        from scalelab.plan.grow import grow

        if self.readonly or not isinstance(self._storage, StudyStore):
            raise UserError(f"{self.folder} was loaded read-only; "
                            "Study.load(folder, readonly=False) to grow it")
        folder = self.folder
        self._storage.close()  # the grow's runs take the lock, as `run` hands it over
        self._own_fits = None
        try:
            return grow(folder, target, executor=executor, observers=list(callbacks),
                        task=self._task, family=self._family, **options)
        finally:
            self._storage = StudyStore.create_or_open(folder)

    # -- records -------------------------------------------------------------------------------

    @property
    def rungs(self) -> list[Rung]:
        return [Rung.from_row(r) for r in self._storage.rungs()]

    @property
    def variants(self) -> list[Variant]:
        return [_typed(Variant, v) for v in self._storage.variants()]

    @property
    def finetunes(self) -> list[Finetune]:
        return [_typed(Finetune, f) for f in self._storage.finetunes()]

    @property
    def forecasts(self) -> list[dict]:
        """The forecasts `grow` recorded, one per grown rung, each with what its rung measured
        (summary.json's `forecasts`)."""
        return self._storage.forecasts()

    @property
    def fits(self) -> list[dict]:
        """The fit records the study stored (summary.json's `fits`), one per quantity."""
        return self._storage.fits()

    def law(self, y: str = "val_loss") -> Law:
        """The study's own law of `y` ("val_loss", or "val_error" for classifiers), fitted to
        its finished rungs as `scalelab fit STUDY` fits them by default (the study's weights,
        holdout and fit settings: `scalelab.study.fit_rungs`), ready to `.predict(N)` with
        intervals. A two-axis study's law takes (N, D) rows."""
        from scalelab.laws import Law
        from scalelab.laws.engine import MIN_POINTS_FOR_FIT

        if self._own_fits is None:
            from scalelab.study import fit_rungs

            self._own_fits = fit_rungs(self._storage.rungs(), self.spec, quiet=False)
        record = next((f for f in self._own_fits if (f.get("y") or "val_loss") == y), None)
        params = (record or {}).get("params") or {}
        if not params or any(v is None for v in params.values()):
            raise UserError(f"{self.folder}: no law of {y} (laws are fitted to val_loss and, "
                            f"for classifiers, val_error, over at least {MIN_POINTS_FOR_FIT} "
                            "finished rungs of distinct sizes)")
        return Law.from_summary(record)

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per rung, the columns of summary.json's rungs; nested ones flattened with
        dots (`latency_ms.1`, `shape.n_layer`, `metrics.bpb`). Needs pandas."""
        try:
            import pandas as pd
        except ImportError:
            raise UserError("Study.to_dataframe needs pandas: pip install pandas") from None
        from scalelab.study import build_summary

        return pd.json_normalize(build_summary(self._storage)["rungs"], sep=".")

    def write_report(self) -> Path:
        """Rebuild report.html, summary.json and runs.csv from the records (`scalelab report`);
        a read-only study writes these files too, never its records. Returns report.html."""
        from scalelab.study import write_outputs

        write_outputs(self._storage)
        return self.folder / "report.html"
