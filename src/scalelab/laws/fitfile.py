"""The fit.json of `scalelab fit`, from Python: a CSV of runs or a study folder, fitted with the
command's options (`FitOptions`) into the same record, byte for byte.

    from scalelab.laws import FitOptions, fit_runs
    result = fit_runs("runs.csv", FitOptions(x=["params", "tokens"], bootstrap=200))
    result.to_dict()            # the fit.json record; result.write("fit.json") writes it
    result.figure()             # the plot of `scalelab fit --plot`

Three routes, chosen from the source and the options, as the command chooses them:

- "study": a study folder fitted as the study fits itself (`study.fit_rungs`, or
  `engine.fit_ladder` without a spec): its weights, its settings unless given.
- "two_axis": runs over N and D (a CSV, or a two-axis study) through `engine.fit_ladder`
  (Approaches 2 and 3 and the candidate laws side by side).
- "one_form": one law fitted to the runs as given (a CSV of one input, where the inner holdout
  chooses the law; a forced --law; a study folder with options its own fit does not take),
  with its holdout, and on request the extrapolation profile and a ranking of rival laws.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.data import Dataset, Where, load_dataset
from scalelab.laws.fit import Law
from scalelab.laws.forms import Form, get_form
from scalelab.records import Holdout

Progress = Callable[[str], None]  # told what is being fitted now (the CLI shows it as a spinner)
HOLDOUT_RULES = "largest:K, smallest:K, below:V, loso, none"


def no_progress(_: str) -> None:
    """No progress to show (a Python caller that did not ask)."""


@dataclass
class FitOptions:
    """`scalelab fit`'s options; None where not given (then the source's default applies).

    `x`: input columns in the law's order (N, D); `compare`: rival laws to rank against `law`;
    `where`: conditions on a CSV's rows (`laws.data.Where`, or its text such as "params<1e9").
    """

    law: str | None = None
    x: list[str] | None = None
    y: str | None = None
    flops_col: str | None = None
    budget_col: str | None = None
    ladder: str | None = None
    k: float = 6.0
    drop_highest: int = 0
    bootstrap: int | None = None
    seed: int | None = None
    level: float = 0.95
    loss: str | None = None
    delta: float | None = None
    holdout: str | None = None
    weights: str | None = None
    compute: list[float] | None = None
    compare: list[str] | None = None
    profile: bool = False
    tolerance: float | None = None
    profile_by: str = "size"
    profile_sims: int = 200
    where: list[Where | str] = field(default_factory=list)  # the CSV rows fitted (parsed)

    def __post_init__(self) -> None:
        # Text conditions are parsed here, so a bad one is refused before anything is read.
        self.where = [w if isinstance(w, Where) else Where.parse(w) for w in self.where or []]

    def check(self) -> None:
        """Every option checked before anything is read or fitted."""
        if self.loss not in (None, "huber", "lsq"):
            raise UserError(f"--loss must be huber or lsq, not {self.loss!r}")
        if (self.bootstrap or 0) < 0 or not 0 < self.level < 1 or not (self.delta or 1) > 0:
            raise UserError("--bootstrap must be >= 0, --level in (0, 1) and --delta > 0")
        if self.weights not in (None, "noise", "equal"):
            raise UserError(f"--weights must be noise or equal, not {self.weights!r}")
        if self.ladder not in (None, "isoflop", "grid"):
            raise UserError(f"--ladder must be isoflop or grid, not {self.ladder!r}")
        if self.tolerance is not None and not 0 < self.tolerance < 1:
            raise UserError(f"--tolerance must be between 0 and 1 (0.02 is 2%), got "
                            f"{self.tolerance:g}")
        if self.law is not None:
            from scalelab.laws.candidates import FRONTIER

            if self.law != FRONTIER:
                get_form(self.law)

    def single_form(self) -> list[str]:
        """The options only a one-form fit honours (a study's own fit and a fit over N and D
        take none of them)."""
        given = {"--x": self.x, "--flops-col": self.flops_col, "--loss": self.loss,
                 "--delta": self.delta, "--drop-highest": self.drop_highest or None,
                 "--compare": self.compare}
        return [name for name, v in given.items() if v is not None]

    def two_axis_csv(self) -> bool:
        """A CSV fitted over N and D by the two-axis engine: no one-form option, no --law of
        one input, and two input columns (N, D) or N with a compute column."""
        from scalelab.laws.candidates import FRONTIER

        if self.budget_col or self.ladder:
            return True  # asked for budgets or a grid: only the two-axis engine has them
        if self.compare or self.loss or self.delta:
            return False
        if self.law is not None and self.law != FRONTIER and (
                get_form(self.law).roles != ("N", "D") or self.compute is None):
            return False  # --law alone keeps the one-form fit (Epoch's replication)
        if self.holdout is not None and self.holdout.partition(":")[0] not in ("largest",
                                                                                "below"):
            return False
        cols = self.x or ["N", "D"]
        return len(cols) == 2 or (len(cols) == 1 and self.flops_col is not None
                                  and self.law == FRONTIER)

    def settings(self, fit: Any) -> dict[str, Any]:
        """bootstrap, seed, tolerance: given, else from `fit` (a study's FitSpec or defaults)."""
        return {"bootstrap": fit.bootstrap if self.bootstrap is None else self.bootstrap,
                "seed": fit.seed if self.seed is None else self.seed,
                "tolerance": fit.tolerance if self.tolerance is None else self.tolerance}


@dataclass
class _Defaults:
    """The fit settings of a CSV when none is given (a study's come from its spec)."""

    bootstrap: int = 1000
    seed: int = 0
    tolerance: float = 0.02


@dataclass
class FitResult:
    """What `fit_runs` fitted: the fit.json record and the runs its plot draws.

    kind: "one_form", "study" (a study's own fit in N) or "two_axis"; `note` says why a study
    folder got a one-form fit. `law`, `X`, `y`, `holdout`: the law fitted (one form; a study's
    is read off its record) and its runs; `rows`: the runs as study rows (two axes).
    """

    record: dict[str, Any]
    kind: str
    note: str | None = None
    law: Law | None = None
    X: np.ndarray | None = None
    y: np.ndarray | None = None
    holdout: Holdout | dict[str, Any] | None = None
    no_holdout: str = "no holdout"  # the plot's words where there is no holdout
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The fit.json record (what `write` writes)."""
        return self.record

    def write(self, path: str | Path) -> None:
        """Write the fit.json, as `scalelab fit --out` does."""
        write_json(path, self.record)

    def figure(self) -> Any:
        """The plot of `scalelab fit --plot`: a Matplotlib Figure (`laws.plots.save_figure`)."""
        if self.kind == "two_axis":
            from scalelab.laws.two_axis_plots import two_axis_figure

            return two_axis_figure(self.record, self.rows)
        from scalelab.laws.plots import fit_figure

        law = self.law or Law.from_summary(self.record)  # a study's law, from its record
        return fit_figure(law, self.X, self.y, self.holdout, self.no_holdout)


def write_json(path: str | Path, data: Any) -> None:
    """A record as the commands write it (indented JSON and a newline), or one line why not."""
    try:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None


def fit_runs(data: str | Path, options: FitOptions | None = None, *,
             progress: Progress | None = None) -> FitResult:
    """Fit the runs of a CSV or a study folder as `scalelab fit` does (see the module
    docstring); `progress` is told what is being fitted now."""
    data, opts, progress = Path(data), options or FitOptions(), progress or no_progress
    if not data.exists():
        raise UserError(f"{data} does not exist")
    opts.check()
    if opts.where and data.is_dir():
        raise UserError(f"--where picks rows of a CSV; {data} is a study folder")
    store_reason = _study_route(data, opts)
    if store_reason is True:
        return _fit_study(data, opts, progress)
    if not data.is_dir() and opts.two_axis_csv():
        return _fit_two_axis_csv(data, opts, progress)
    return _fit_one_form(data, opts, progress,
                         note=store_reason if isinstance(store_reason, str) else None)


def _study_route(data: Path, opts: FitOptions) -> bool | str | None:
    """True: fit a study folder as the study does; a note when a study folder gets a one-form
    fit instead (why); None for a CSV or a bare database of rungs."""
    if not data.is_dir() or not (data / "study.db").is_file():
        return None
    from scalelab.storage import StudyStore

    try:
        StudyStore.open_readonly(data).close()
    except UserError:
        return None  # a rungs table without a study around it: read as a table of runs
    given = opts.single_form()
    if opts.y not in (None, "val_loss", "val_error"):
        given.append("--y")
    if opts.holdout not in (None, "largest:1") and not _study_spec(data)[1]:
        given.append("--holdout")
    if not given:
        return True
    if opts.weights == "noise":
        raise UserError(f"--weights noise is the study's own fit, which {', '.join(given)} "
                        "leave(s); drop them, or use --weights equal")
    return (f"not the study's own fit ({', '.join(given)} given): every run weighs alike; "
            "leave those options out for the study's fit")


def _study_spec(folder: Path) -> tuple[Any, bool, list[dict]]:
    """(spec or None, two-axis ladder, rungs) of a study folder, read-only: whether the ladder
    is over N and D its spec says, else its rungs (several D, or budgets)."""
    from scalelab.spec import parse_spec
    from scalelab.storage import StudyStore

    with StudyStore.open_readonly(folder) as store:
        info, rungs = store.study(), store.rungs()
    spec = parse_spec(info["spec"], f"{folder}'s spec") if info and info.get("spec") else None
    if spec is not None:
        return spec, spec.ladder.two_axis, rungs
    ds = {r.get("D") for r in rungs if r.get("status") == "done"}
    budgets = any(r.get("budget") for r in rungs)
    return None, budgets or len(ds) > 1, rungs


def _fit_study(folder: Path, opts: FitOptions, progress: Progress) -> FitResult:
    """The study's own fit (`scalelab.study.fit_rungs`: the same weights, the same record),
    refitted from its rungs with its own settings unless given."""
    from scalelab.laws.engine import fit_ladder
    from scalelab.spec import FitSpec

    spec, two_axis, rungs = _study_spec(folder)
    settings = opts.settings(spec.fit if spec is not None else FitSpec())
    options = {"weights": opts.weights or "noise", "law": opts.law,
               "holdout": opts.holdout or "largest:1", "compute": opts.compute,
               "quiet": False}
    _check_study_law(opts.law, two_axis)
    progress(f"fitting {folder} as the study does ({settings['bootstrap']} resamples)...")
    if spec is not None:
        from scalelab.study import fit_rungs

        spec = spec.model_copy(update={"fit": spec.fit.model_copy(update=settings)})
        records = fit_rungs(rungs, spec, **options)
    else:
        records = fit_ladder(rungs, two_axis=two_axis, **settings, **options)
    if two_axis:
        if not records:
            from scalelab.laws.two_axis import fit_two_axis

            fit_two_axis(rungs, bootstrap=0)  # says in one line what the rungs lack
        record = records[0]
        if opts.profile:
            _two_axis_profile(record, rungs, opts, settings, progress)
        record["source"] = str(folder)
        return FitResult(record, "two_axis", rows=rungs)
    want = opts.y or "val_loss"
    record = next((r for r in records if r.get("y") == want), None)
    if record is None:
        raise UserError(f"{folder} has no law of {want}: too few finished rungs with a "
                        f"positive {want}")
    record["source"] = str(folder)
    done = [r for r in rungs if r.get("status") == "done" and _study_y(r, want)]
    return FitResult(record, "study",
                     X=np.array([r["n_nonembed"] for r in done], dtype=float),
                     y=np.array([_study_y(r, want) for r in done]),
                     holdout=record.get("holdout"))


def _study_y(rung: dict, key: str) -> Any:
    """A rung's loss (`val_loss`) or its error rate (`val_error`, kept under metrics)."""
    return rung.get(key) if key == "val_loss" else (rung.get("metrics") or {}).get("error")


def _check_study_law(law: str | None, two_axis: bool) -> None:
    from scalelab.laws.candidates import FRONTIER

    if law is None:
        return
    two = law == FRONTIER or get_form(law).roles == ("N", "D")
    if two != two_axis:
        kind = "over N and D" if two_axis else "in N alone"
        raise UserError(f"this study's ladder is {kind}; law {law!r} is "
                        + ("a law in N and D" if two else "a law of one input"))


def _fit_one_form(data: Path, opts: FitOptions, progress: Progress,
                  note: str | None = None) -> FitResult:
    """One law fitted to the runs as given: a CSV (by default the law of one input that wins the
    inner holdout, or chinchilla for N and D), a bare table of rungs, or a study folder with
    options its own fit does not take (`note` says so)."""
    one_input = opts.x is not None and len(opts.x) == 1 and not opts.flops_col
    default = "power" if data.is_dir() or one_input else "chinchilla"
    form = get_form(opts.law or default)
    loss, delta = opts.loss or "huber", opts.delta or 1e-3
    rule = opts.holdout or "largest:1"
    bootstrap, seed = opts.settings(_Defaults())["bootstrap"], opts.seed or 0
    tolerance = opts.tolerance or 0.02
    rivals = _rivals(form, opts.compare, rule)
    if opts.profile:
        _check_profile_options(form, tolerance, opts.profile_by, opts.profile_sims)
    ds = load_dataset(data, form, x=opts.x, y=opts.y, flops=opts.flops_col, k=opts.k,
                      drop_highest=opts.drop_highest, where=opts.where)
    w = _weights(opts.weights, form, ds)
    selection = None
    if opts.law is None and form.n_inputs == 1:
        from scalelab.laws.selection import one_axis_selection

        progress("choosing the law by its inner holdout...")
        selection = one_axis_selection(ds.X, ds.y, weights=w, tolerance=tolerance,
                                       settings={"loss": loss, "delta": delta,
                                                 "x_names": ds.x_names, "y_name": ds.y_name})
        form = get_form(selection["selected"])
    model = Law(form.name, loss=loss, delta=delta, bootstrap=bootstrap, level=opts.level,
                seed=seed, x_names=ds.x_names, y_name=ds.y_name)
    logs = np.log(ds.X), np.log(ds.y)
    progress(f"fitting {form.name} to {len(ds.y)} runs ({len(form.grid(*logs))} starts, "
             f"{bootstrap} resamples)...")
    model.fit(ds.X, ds.y, w)
    progress(f"holdout {rule}...")
    ho, why_not = _run_holdout(model, ds.X, ds.y, rule, w)
    summary = model.summary()
    summary.update({"holdout": None if ho is None else ho.to_dict(), "source": ds.source,
                    "dropped_highest": ds.dropped, "weights": opts.weights or "equal",
                    "x_max": [float(v) for v in ds.X.max(axis=0)]})
    if opts.where:
        summary["where"] = [str(w) for w in opts.where]
    if selection is not None:
        summary["candidates"] = selection.pop("candidates")
        summary["selection"] = selection
    if why_not:
        summary["holdout_skipped"] = why_not
    if opts.flops_col:
        summary["flops"] = {"column": opts.flops_col, "k": opts.k}
    if opts.profile:
        progress(f"extrapolation profile over {opts.profile_by}...")
        summary["noise"], summary["profile"] = _profile(model, ds, tolerance, opts, seed, w)
    if rivals:
        from scalelab.laws.validate import compare_forms

        progress(f"comparing {', '.join(rivals)} by holdout {rule}...")
        ranked = compare_forms(ds.X, ds.y, rivals, rule, loss=loss, delta=delta,
                               x_names=ds.x_names, y_name=ds.y_name)
        ranking = [{"law": r["law"], "holdout": r["holdout"].to_dict()} for r in ranked]
        summary["comparison"] = {"rule": rule, "ranking": ranking}
    return FitResult(summary, "one_form", note=note, law=model, X=ds.X, y=ds.y, holdout=ho,
                     no_holdout=why_not or "no holdout")


def _run_holdout(law: Law, X: np.ndarray, y: np.ndarray, rule: str,
                 w: np.ndarray | None = None) -> tuple[Holdout | None, str | None]:
    """(Holdout | None, why there is none): the default rule quietly records why it could not
    run; any other rule that cannot run is an error."""
    from scalelab.laws.validate import holdout, leave_one_size_out

    if rule == "none":
        return None, None
    if rule == "loso":
        return leave_one_size_out(law, X, y, w), None
    try:
        return holdout(law, X, y, rule, w), None
    except UserError as err:
        if rule != "largest:1":
            raise
        return None, str(err)


def _rivals(form: Form, compare: Sequence[str] | None, rule: str) -> list[str]:
    """The laws to rank (--law first, then --compare's), checked before any fitting."""
    if not compare:
        return []
    if rule == "none":
        raise UserError("--compare ranks laws by holdout error; give a --holdout rule, not none")
    names = [form.name]
    for name in (c.strip() for c in compare):
        other = get_form(name)
        if other.roles != form.roles:
            raise UserError(f"--compare {name}: law {name!r} takes inputs "
                            f"({', '.join(other.roles)}), law {form.name!r} takes "
                            f"({', '.join(form.roles)}); compare laws with the same inputs")
        if name not in names:
            names.append(name)
    return names


def _weights(kind: str | None, form: Form, ds: Dataset) -> np.ndarray | None:
    """Per-run weights: None (alike), or by the seed noise of each size (--weights noise)."""
    if kind != "noise":
        return None
    from scalelab.laws.noise import repeat_noise

    if form.n_inputs != 1:
        raise UserError(f"--weights noise weighs the seed repeats of a size; law {form.name!r} "
                        "has several inputs: use a law of one input or --weights equal")
    noise = repeat_noise(ds.X[:, 0], ds.y)
    if noise is None:
        raise UserError("--weights noise needs seed repeats (several runs of one size); these "
                        "runs have one per size")
    return noise.weights


def _check_profile_options(form: Form, tolerance: float, by: str, sims: int) -> None:
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance must be between 0 and 1 (0.02 is 2%), got {tolerance:g}")
    if by not in ("size", "compute"):
        raise UserError(f"--profile-by must be size or compute, not {by!r}")
    if by == "compute" and form.roles != ("N", "D"):
        raise UserError(f"--profile-by compute needs a law in N and D; law {form.name!r} takes "
                        f"({', '.join(form.roles)})")
    if sims < 0:
        raise UserError(f"--profile-sims must be >= 0, got {sims}")


def _profile(model: Law, ds: Dataset, tolerance: float, opts: FitOptions, seed: int,
             w: np.ndarray | None = None) -> tuple[dict | None, dict]:
    """(noise record | None, profile) of a fitted law, its runs weighed by `w` (None: alike);
    the noise for the bands is read off the law's residuals."""
    from scalelab.laws.noise import residual_noise
    from scalelab.laws.profile import extrapolation_profile

    resid = np.log(model.predict(ds.X).point) - np.log(ds.y)
    noise = residual_noise(resid, model.form_.n_params)
    prof = extrapolation_profile(model, ds.X, ds.y, tolerance=tolerance, by=opts.profile_by,
                                 k=opts.k, sample_weight=w,
                                 sigma=None if noise is None else noise.sigma, truth=model,
                                 sims=opts.profile_sims, seed=seed)
    return (None if noise is None else noise.record), prof


def _fit_two_axis_csv(path: Path, opts: FitOptions, progress: Progress) -> FitResult:
    """A CSV of runs over N and D, fitted as a two-axis study's rungs (the law engine)."""
    from scalelab.laws.engine import fit_ladder, two_axis_rows

    if opts.weights == "noise":
        raise UserError("a fit over N and D weighs every run alike; leave out --weights noise")
    rows = two_axis_rows(path, x=opts.x, y=opts.y, flops=opts.flops_col,
                         budget_col=opts.budget_col,
                         isoflop=None if opts.ladder is None else opts.ladder == "isoflop",
                         k=opts.k, drop_highest=opts.drop_highest, where=opts.where)
    settings = opts.settings(_Defaults())
    progress(f"fitting L(N, D) to {len(rows)} runs of {path} "
             f"({settings['bootstrap']} resamples)...")
    (record,) = fit_ladder(rows, two_axis=True, **settings, law=opts.law,
                           holdout=opts.holdout or "largest:1", compute=opts.compute,
                           quiet=False)
    if opts.profile:
        _two_axis_profile(record, rows, opts, settings, progress)
    if opts.where:
        record["where"] = [str(w) for w in opts.where]
    record["source"] = str(path)
    return FitResult(record, "two_axis", rows=rows)


def _two_axis_profile(record: dict, rows: list[dict], opts: FitOptions, settings: dict,
                      progress: Progress) -> None:
    """The extrapolation profile by compute of the answering law, into the record."""
    from scalelab.laws.engine import two_axis_profile

    progress("extrapolation profile over compute...")
    record["noise"], record["profile"] = two_axis_profile(
        record, rows, tolerance=settings["tolerance"], sims=opts.profile_sims,
        seed=settings["seed"])
