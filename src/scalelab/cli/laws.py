"""Commands of the scaling-law engine: fit, predict, optimal."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from scalelab.cli.app import app, console
from scalelab.errors import UserError

FIT_HELP = """Fit a scaling law to runs from a CSV file or a study folder: one engine for both
(`scalelab.laws.engine`), so the same runs give the same fit.json.

A study folder: the study's own fit (`scalelab.study.fit_rungs`), refitted from its rungs with
its own settings: the same weights (each run by its size's seed noise), the same record.
--weights equal weighs every run alike instead; --x, --flops-col, --loss, --delta,
--drop-highest, --compare or another --holdout give a one-form fit (runs alike), and say so.

A CSV over N and D (--x N,D, the default, or --x N --flops-col C with --law frontier): what a
two-axis study gets. IsoFLOP budgets from --budget-col, else recovered from the runs' compute
(--flops-col, else C = k·N·D) when it clusters on a few values (--ladder isoflop: it must;
--ladder grid: no budgets). Approaches 2 and 3 side by side; every candidate law (chinchilla,
chinchilla_shared, frontier) fitted without the largest fitted budget and judged on it (the
inner holdout): the winner answers, and each one's inner and outer holdout go into fit.json
("selection", "candidates") and the table. --holdout largest:K holds out the K largest budgets,
below:C fits only on budgets <= C. --law forces one candidate (alone, without --budget-col,
--ladder or --compute, it keeps the one-form fit of earlier versions). With --flops-col and
two --x columns, that column is each run's measured FLOPs.

A CSV of one input (--x N): power and bnsl, chosen the same way (--law forces one).

Fits in log space (Huber loss on log residuals by default) from a grid of starts, all run as one
batched L-BFGS, then bootstraps the runs for intervals and checks the law by holdout: fit on the
smaller sizes, predict the largest.

Defaults of a one-form fit. Columns of a CSV: --x N,D (the law's inputs in order: N, D for
chinchilla and kaplan, one column for power and bnsl) and --y loss. In a bare table of rungs
(study.db without a study): x = n_nonembed, y = val_loss. With --flops-col and one --x column,
D = C / (k·N) is derived from that compute column.

Holdout rules: largest:K (hold out the K largest sizes; default largest:1), smallest:K (fit on
the K smallest sizes), below:V (fit on sizes < V), loso (leave one size out), none.

The holdout goes into fit.json as "holdout", one record for every rule: rule, n_fit, n_test,
max_fit_size, points (x, measured, predicted, lo, hi, rel_error of every predicted run), folds
(loso: one per size), mean_rel_error, mean_abs_rel_error, params and on_bound of the law fitted
to the kept runs. When the default rule cannot run, "holdout" is null and "holdout_skipped" says
why.

--compare LAW,LAW,... also fits those laws (same inputs as --law) with the same holdout rule,
without a bootstrap, and ranks all of them by mean absolute holdout error; the ranking goes into
fit.json as "comparison": {rule, ranking: [{law, holdout}]}. The fitted law reported is still
--law.

--profile adds the extrapolation profile: for every split size x_k (at most 8, evenly spaced in
log size) with more distinct points below it than the law has parameters, the law fitted to the
runs of size <= x_k predicts every larger size; the table gives each split's signed errors
against the ratio x / x_k, and the trust horizon is the largest ratio up to which every split
stayed within --tolerance (default 2%). Each error has a noise-implied band: the range of errors
the same splits give on --profile-sims synthetic data sets (the full fit plus noise of the size
of its residuals). --profile-by size splits by the law's first input (N), compute by C = k·N·D
(laws in N and D). It goes into fit.json as "profile" (and the noise as "noise"); `scalelab
predict` then warns about predictions beyond the horizon.

Examples (the Chinchilla IsoFLOP runs; Epoch's replication; a study):

    scalelab fit tests/data/chinchilla_isoflops.csv --x params,tokens --out fit.json
    scalelab fit tests/data/chinchilla_isoflops.csv --x params,tokens --holdout below:3e20

    scalelab fit chinchilla.csv --law chinchilla --x "Model Size" --y loss \\
        --flops-col "Training FLOP" --drop-highest 5 --out fit.json --plot fit.svg
    scalelab fit studies/default --law power --out fit.json
    scalelab fit runs.csv --law power --x N --compare bnsl --holdout largest:3
    scalelab fit chinchilla.csv --law chinchilla --x "Model Size" \
        --flops-col "Training FLOP" --drop-highest 5 --profile --out fit.json
    scalelab fit tests/data/gadre_overtraining.csv --law chinchilla_shared --x params,tokens \
        --y c4_val_loss --where dataset=rpj --where "params<1e9" --out rpj.json
"""

WHERE_HELP = ("A CSV: fit only the rows where COL=VALUE (numbers compare as numbers, else as "
              "text), or COL<V, COL<=V, COL>V, COL>=V; repeat for several (all must hold), "
              "e.g. --where dataset=rpj --where 'params<1e9'.")

PREDICT_HELP = """Predict the loss of a fitted law (a fit.json) at given sizes, with its interval.

Values may be comma-separated lists (same length, or one value broadcast). For one-input laws
give --x (or --N).

Example:

    scalelab predict fit.json --N 7e10 --D 1.4e12
"""

OPTIMAL_HELP = """Compute-optimal N and D for a budget C, from a fitted law in N and D or from a
study over N and D.

From a fit.json: C = k·N·D. Prints N*, D*, tokens per parameter and the predicted loss, with
bootstrap intervals when the fit has bootstrap samples; --frontier LO:HI gives the frontier over
a range of budgets.

From a CSV of runs over N and D (columns as `scalelab fit` takes them: --x, --y, --flops-col,
--budget-col): fitted as `scalelab fit` fits it, the answer from the law its inner holdout
chose. From a fit.json, budgets whose N* or D* lie past the runs fitted (or past the trust
horizon of a fit with --profile) are warned about as `scalelab predict` warns.

From a study folder (with study.db) whose rungs vary N and D (a grid or IsoFLOP budgets): fits
L(N, D) = E + A·N^-alpha + B·D^-beta to its finished rungs (Approach 3, and with IsoFLOP budgets
also a parabola per budget, Approach 2), and answers along the measured budget line
C = f(N)·D, f the FLOPs per unit of D its rungs measured; it prints one line per budget ("for C
FLOPs, train N ≈ … on D ≈ … tokens; expected loss … [lo, hi]") and whether the two approaches
agree. A study whose rungs all share one D (or one N) is refused with one line.

Examples:

    scalelab optimal fit.json --compute 5.76e23
    scalelab optimal fit.json --frontier 1e20:1e26 --plot frontier.svg
    scalelab optimal studies/isoflop --compute 1e15
    scalelab optimal tests/data/chinchilla_isoflops.csv --x params,tokens --compute 5.76e23
"""


def _floats(text: str | None, name: str) -> list[float]:
    """Comma-separated positive numbers from a flag, or a UserError naming the flag."""
    if text is None:
        return []
    out = []
    for part in str(text).split(","):
        try:
            v = float(part)
        except ValueError:
            raise UserError(f"{name}: {part.strip()!r} is not a number") from None
        if not math.isfinite(v) or v <= 0:
            raise UserError(f"{name}: values must be positive and finite, got {part.strip()}")
        out.append(v)
    return out


def _g(v: Any) -> str:
    return "-" if v is None else f"{v:.5g}"


def _load_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    except json.JSONDecodeError:
        raise UserError(f"{path} is not JSON (expected a fit.json from `scalelab fit`)") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} is not a fit record")
    return record


TWO_AXIS = "two_axis"  # the law name of a two-axis record (several laws side by side)


def _load_fit(path: Path):
    from scalelab.laws import Law

    record = _load_record(path)
    if record.get("law") == TWO_AXIS:
        raise UserError(f"{path} is a two-axis fit (Approaches 2 and 3 and the candidate laws "
                        f"side by side): ask it with `scalelab optimal {path} --compute C`, or "
                        "fit one form with --law to predict from it")
    return Law.from_summary(record)


def beyond_warnings(record: dict, X) -> list[str | None]:
    """Per point of X (rows in the law's inputs): None where a fit.json's evidence covers it,
    else a plain warning. With an extrapolation profile, beyond its trust horizon; without one,
    beyond the largest run fitted (`x_max`). `predict` and `optimal` both warn through here."""
    from scalelab.laws.profile import RATIO_RTOL, fmt_ratio

    profile = record.get("profile")
    if isinstance(profile, dict) and profile.get("max_x"):
        axis = X[:, 0] if profile.get("k") is None else profile["k"] * X[:, 0] * X[:, 1]
        h = profile.get("horizon")
        out = []
        for ratio in axis / float(profile["max_x"]):
            if ratio <= 1 + RATIO_RTOL or h is not None and ratio <= h * (1 + RATIO_RTOL):
                out.append(None)  # inside the runs fitted, or within the trust horizon
            elif h is not None:
                out.append(f"{fmt_ratio(ratio)} beyond the fitted range, past the trust "
                           f"horizon ({fmt_ratio(h)}): no evidence the law holds there")
            else:
                out.append(f"{fmt_ratio(ratio)} beyond the fitted range; the profile found no "
                           "trust horizon: no evidence the law holds there")
        return out
    x_max = record.get("x_max")
    if not isinstance(x_max, list) or len(x_max) != X.shape[1]:
        return [None] * len(X)  # an older fit.json: nothing known of its range
    names = record.get("x") if isinstance(record.get("x"), list) else [record.get("x")]
    out = []
    for row in X:
        ratios = [v / m for v, m in zip(row, x_max, strict=True)]
        j = max(range(len(ratios)), key=lambda i: ratios[i])
        out.append(None if ratios[j] <= 1 + RATIO_RTOL else
                   f"{fmt_ratio(ratios[j])} beyond the largest {names[j]} fitted, and the fit "
                   "has no extrapolation profile (fit --profile): no evidence the law holds "
                   "there")
    return out


def _write_json(path: Path, data: Any) -> None:
    try:
        path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None


def _run_holdout(law, X, y, rule: str, w=None) -> tuple[Any, str | None]:
    """(Holdout | None, why there is none): the default rule quietly records why it could not
    run; any other rule that cannot run is an error."""
    from scalelab.laws import holdout, leave_one_size_out

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


def _fit_table(summary: dict) -> Table:
    table = Table(title=f"{summary['law']}: {summary['formula']}", title_justify="left")
    for col in ("param", "value", f"{summary['level']:.0%} interval", "note"):
        table.add_column(col, justify="right" if col != "note" else "left")
    for name, value in summary["params"].items():
        iv = summary["intervals"].get(name)
        band = f"[{iv[0]:.5g}, {iv[1]:.5g}]" if iv else "-"
        note = "on a bound" if name in summary["on_bound"] else ""
        table.add_row(name, _g(value), band, note)
    return table


def _print_fit(summary: dict) -> None:
    console.print(_fit_table(summary))
    st = summary["starts"]
    console.print(f"objective {summary['objective']:.6g} over {summary['n_points']} runs; "
                  f"{st['reached_best']}/{st['n']} starts reached the optimum"
                  + ("; [bold red]starts disagree on the optimum[/]" if st["disagree"] else ""))
    if "zero_dof" in (summary.get("flags") or []):
        console.print(f"[bold red]exact fit[/]: {summary['n_points']} runs, "
                      f"{len(summary['params'])} parameters, {summary['dof']} degrees of freedom: "
                      "the law passes through its points and estimates nothing; not a result")
    for line in holdout_lines(summary.get("holdout"), summary.get("holdout_skipped")):
        console.print(line)


def holdout_lines(record: dict | None, skipped: str | None = None) -> list[str]:
    """What a holdout record (any rule, any stored shape) says, in one or two lines."""
    from scalelab.records import Holdout

    if record is None:
        return [f"holdout skipped: {skipped}"] if skipped else []
    ho = Holdout.from_dict(record)
    mean = (f"mean relative error {_pct(ho.mean_rel_error, '+.2f')}, "
            f"mean |error| {_pct(ho.mean_abs_rel_error, '.2f')}")
    if ho.folds:
        return [f"holdout loso: each of {len(ho.folds)} sizes predicted from the others: {mean}"]
    fit_on = f"fit on {ho.n_fit}" if ho.n_fit is not None else "fit on the smaller sizes"
    lines = [f"holdout {ho.rule}: {fit_on}, predict {ho.n_test}: {mean}"]
    top = ho.largest()
    if top is not None and ho.n_test > 1:
        lines.append(f"  largest size predicted {_g(top['predicted'])}, measured "
                     f"{_g(top['measured'])}, error {_pct(top['rel_error'], '+.2f')}")
    return lines


def _pct(v: float | None, spec: str) -> str:
    return "-" if v is None else f"{100 * v:{spec}}%"


def profile_table(profile: dict) -> Table:
    """One row per split of an extrapolation profile (`scalelab.laws.profile`)."""
    from scalelab.laws.profile import fmt_ratio, profile_rows, within_text

    by = profile["by"]
    table = Table(title=f"extrapolation profile over {by}: error of predictions beyond each "
                  f"split (predicted - measured) / measured", title_justify="left")
    for col in (f"fit on {by} <=", "points (runs)", "predicts", "up to", "next size",
                "largest", "band at largest", "mean", f"within {100 * profile['tolerance']:g}%"
                " up to"):
        table.add_column(col, justify="right")
    for r in profile_rows(profile):
        band = r["largest"]["band"]

        def err(p: dict) -> str:
            return f"{100 * p['rel_error']:+.2f}% at {fmt_ratio(p['ratio'])}"

        table.add_row(f"{r['max_fit_x']:.3g}", f"{r['n_points']} ({r['n_fit']})",
                      str(r["predicts"]), fmt_ratio(r["max_ratio"]), err(r["next"]),
                      err(r["largest"]),
                      f"[{100 * band[0]:+.1f}, {100 * band[1]:+.1f}]%" if band else "-",
                      _pct(r["mean_error"], "+.2f"),
                      within_text(r))
    return table


def print_profile(prof: dict | None) -> None:
    """The extrapolation profile's table and its trust-horizon lines, where the record has one."""
    if not prof:
        return
    if prof.get("splits"):
        console.print(profile_table(prof))
    for line in profile_lines(prof):
        console.print(line)


def profile_lines(profile: dict) -> list[str]:
    """The trust horizon and how the errors compare with the noise, in a line or two."""
    from scalelab.laws.profile import horizon_text

    lines = [f"trust horizon: {horizon_text(profile)}"]
    noise = profile.get("noise")
    if noise and profile.get("splits"):
        n_pts = sum(len(s["points"]) for s in profile["splits"])
        lines.append(f"  {profile['outside_band']} of {n_pts} errors outside their "
                     f"{profile['level']:.0%} noise-implied band (noise {100 * noise['sigma']:.2f}%"
                     f" in log L, {noise['sims']} synthetic data sets per split)")
    return lines


@app.command(help=FIT_HELP)
def fit(
    data: Path = typer.Argument(..., help="A CSV of runs, or a study folder (with study.db)."),
    law: str = typer.Option(None, help="Force one law: power, bnsl (one input), chinchilla, "
                            "chinchilla_shared, kaplan, frontier (N and D). Default: chosen by "
                            "the inner holdout (a study: its own fit)."),
    x: str = typer.Option(None, "--x", help="Input column(s), comma-separated, in the law's "
                          "order (N,D)."),
    y: str = typer.Option(None, "--y", help="Loss column (default loss; val_loss in a study, "
                          "or val_error for a classifier's error law)."),
    flops_col: str = typer.Option(None, "--flops-col", help="Compute column: with one --x "
                                  "column D = C/(k·N); with N and D, each run's measured FLOPs."),
    budget_col: str = typer.Option(None, "--budget-col", help="IsoFLOP budget column (runs "
                                   "over N and D); without it budgets are recovered from C."),
    ladder: str = typer.Option(None, "--ladder", help="Runs over N and D: isoflop (budgets "
                               "must be found) or grid (no budgets); default: isoflop when the "
                               "runs' compute clusters into budgets."),
    k: float = typer.Option(6.0, "--k", help="FLOPs per parameter per token in C = k·N·D."),
    drop_highest: int = typer.Option(0, help="Drop the K runs with the highest loss first."),
    bootstrap: int = typer.Option(None, help="Bootstrap resamples of the runs (0: none; "
                                  "default 1000, a study: its own setting)."),
    seed: int = typer.Option(None, help="Seed of the bootstrap (default 0, a study: its own)."),
    level: float = typer.Option(0.95, help="Coverage of the intervals."),
    loss: str = typer.Option(None, help="huber (on log residuals, the default) or lsq."),
    delta: float = typer.Option(None, help="Huber delta (default 1e-3)."),
    holdout: str = typer.Option(None, help="largest:K, smallest:K, below:V, loso, none "
                                "(default largest:1; N and D: largest:K budgets or below:C)."),
    weights: str = typer.Option(None, help="noise: each run weighed by its size's seed noise "
                                "(a study's own fit, the default for a study folder); equal: "
                                "every run alike (the default for a CSV)."),
    compute: str = typer.Option(None, help="Runs over N and D: also answer at these budgets "
                                "C (comma-separated)."),
    out: Path = typer.Option(None, help="Write the fit as JSON here (fit.json)."),
    plot: Path = typer.Option(None, help="Write fit, residual and holdout plots (.svg/.png)."),
    compare: str = typer.Option(None, help="Other laws to rank against --law by holdout error, "
                                "comma-separated (e.g. bnsl)."),
    profile: bool = typer.Option(False, "--profile", help="Also the extrapolation profile and "
                                 "trust horizon (table, and fit.json's \"profile\")."),
    tolerance: float = typer.Option(None, help="Relative error the trust horizon allows "
                                    "(default 0.02; a study: its own)."),
    profile_by: str = typer.Option("size", help="Split the profile by size (the first input) "
                                   "or compute (C = k·N·D, laws in N and D)."),
    profile_sims: int = typer.Option(200, help="Synthetic data sets per split for the "
                                     "noise-implied bands (0: none)."),
    where: list[str] = typer.Option(None, "--where", help=WHERE_HELP),
) -> None:
    if not data.exists():
        raise UserError(f"{data} does not exist")
    opts = FitOptions(law=law, x=[c.strip() for c in x.split(",")] if x else None, y=y,
                      flops_col=flops_col, budget_col=budget_col, ladder=ladder, k=k,
                      drop_highest=drop_highest, bootstrap=bootstrap, seed=seed, level=level,
                      loss=loss, delta=delta, holdout=holdout, weights=weights,
                      compute=_floats(compute, "--compute") or None, out=out, plot=plot,
                      compare=compare, profile=profile, tolerance=tolerance,
                      profile_by=profile_by, profile_sims=profile_sims,
                      where=_where(where))
    opts.check()
    if opts.where and data.is_dir():
        raise UserError(f"--where picks rows of a CSV; {data} is a study folder")
    store_reason = _study_route(data, opts)
    if store_reason is True:
        return _fit_study(data, opts)
    if not data.is_dir() and opts.two_axis_csv():
        return _fit_two_axis_csv(data, opts)
    _fit_one_form(data, opts, note=store_reason if isinstance(store_reason, str) else None)


@dataclass
class FitOptions:
    """`scalelab fit`'s options; None where not given (then the source's default applies)."""

    law: str | None
    x: list[str] | None
    y: str | None
    flops_col: str | None
    budget_col: str | None
    ladder: str | None
    k: float
    drop_highest: int
    bootstrap: int | None
    seed: int | None
    level: float
    loss: str | None
    delta: float | None
    holdout: str | None
    weights: str | None
    compute: list[float] | None
    out: Path | None
    plot: Path | None
    compare: str | None
    profile: bool
    tolerance: float | None
    profile_by: str
    profile_sims: int
    where: list[Any]  # laws.data.Where: the CSV rows fitted

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
            from scalelab.laws.forms import get_form

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
        from scalelab.laws.forms import get_form

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


def _study_route(data: Path, opts: FitOptions) -> bool | str | None:
    """True: fit a study folder as the study does; a note when a study folder gets a one-form
    fit instead (why); None for a CSV or a bare database of rungs."""
    if not data.is_dir() or not (data / "study.db").is_file():
        return None
    from scalelab.store import StudyStore

    try:
        StudyStore.open_readonly(data).close()
    except UserError:
        return None  # a rungs table without a study around it: read as a table of runs
    given = opts.single_form()
    if opts.y not in (None, "val_loss", "val_error"):
        given.append("--y")
    if opts.holdout not in (None, "largest:1") and not _two_axis_study(data):
        given.append("--holdout")
    if not given:
        return True
    if opts.weights == "noise":
        raise UserError(f"--weights noise is the study's own fit, which {', '.join(given)} "
                        "leave(s); drop them, or use --weights equal")
    return (f"not the study's own fit ({', '.join(given)} given): every run weighs alike; "
            "leave those options out for the study's fit")


def _two_axis_study(folder: Path) -> bool:
    """Whether a study folder's ladder is over N and D (its spec says; else its rungs)."""
    return _study_spec(folder)[1]


def _study_spec(folder: Path) -> tuple[Any, bool, list[dict]]:
    """(spec or None, two-axis ladder, rungs) of a study folder, read-only."""
    from scalelab.spec import parse_spec
    from scalelab.store import StudyStore

    with StudyStore.open_readonly(folder) as store:
        info, rungs = store.study(), store.rungs()
    spec = parse_spec(info["spec"], f"{folder}'s spec") if info and info.get("spec") else None
    if spec is not None:
        return spec, spec.ladder.two_axis, rungs
    ds = {r.get("D") for r in rungs if r.get("status") == "done"}
    budgets = any(r.get("budget") for r in rungs)
    return None, budgets or len(ds) > 1, rungs


def _fit_study(folder: Path, opts: FitOptions) -> None:
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
    with console.status(f"fitting {folder} as the study does "
                        f"({settings['bootstrap']} resamples)..."):
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
            _two_axis_profile(record, rungs, opts, settings)
        return _report_two_axis(record, rungs, opts, source=str(folder))
    want = opts.y or "val_loss"
    record = next((r for r in records if r.get("y") == want), None)
    if record is None:
        raise UserError(f"{folder} has no law of {want}: too few finished rungs with a "
                        f"positive {want}")
    record["source"] = str(folder)
    _print_study_fit(record)
    if opts.out:
        _write_json(opts.out, record)
        console.print(f"wrote {opts.out}")
    if opts.plot:
        _plot_study(record, rungs, opts.plot, want)


def _check_study_law(law: str | None, two_axis: bool) -> None:
    from scalelab.laws.candidates import FRONTIER
    from scalelab.laws.forms import get_form

    if law is None:
        return
    two = law == FRONTIER or get_form(law).roles == ("N", "D")
    if two != two_axis:
        kind = "over N and D" if two_axis else "in N alone"
        raise UserError(f"this study's ladder is {kind}; law {law!r} is "
                        + ("a law in N and D" if two else "a law of one input"))


def _print_study_fit(record: dict) -> None:
    """A study's own record: its law, how runs were weighed, holdout, profile, predictions."""
    from scalelab.laws.forms import get_form

    form = get_form(record["law"])
    shim = {"law": form.name, "formula": form.formula, "level": record.get("level") or 0.95,
            "params": record["params"], "intervals": record["intervals"],
            "on_bound": record.get("on_bound") or []}
    console.print(_fit_table(shim))
    noise = record.get("noise") or {}
    if record.get("weights") == "equal":
        console.print("weights: every run alike (--weights equal): not the study's own fit")
    elif noise.get("weighting"):
        console.print(f"weights: each run by its size's seed noise ({noise['weighting']}, "
                      f"pooled noise {100 * noise['sigma']:.2f}%), as the study fits")
    else:
        console.print("weights: every run alike (no seed repeats to weigh by), as the study")
    for line in holdout_lines(record.get("holdout")):
        console.print(line)
    if record.get("candidates"):
        console.print(candidates_table(record["selection"], record["candidates"]))
    print_profile(record.get("profile"))
    for p in record.get("predictions") or []:
        band = f" [{p['lo']:.4g}, {p['hi']:.4g}]" if p.get("lo") is not None else ""
        console.print(f"at {p['factor']:g}x the largest rung ({p['x']:.3g}): "
                      f"{p['predicted']:.4g}{band}"
                      + (f"; [bold red]warning[/]: {p['warning']}" if p.get("warning") else ""))


def _plot_study(record: dict, rungs: list[dict], path: Path, key: str) -> None:
    import numpy as np

    from scalelab.laws import Law
    from scalelab.laws.plots import fit_figure, save_figure

    done = [r for r in rungs if r.get("status") == "done"
            and (r.get(key) if key == "val_loss" else (r.get("metrics") or {}).get("error"))]
    x = np.array([r["n_nonembed"] for r in done], dtype=float)
    yv = np.array([r[key] if key == "val_loss" else r["metrics"]["error"] for r in done])
    save_figure(fit_figure(Law.from_summary(record), x, yv, record.get("holdout"),
                           "no holdout"), path)
    console.print(f"wrote {path}")


def candidates_table(selection: dict, rows: list[dict]) -> Table:
    """Every candidate law's inner holdout (the choice) beside its outer holdout."""
    table = Table(title=f"laws chosen by {selection['rule']}", title_justify="left")
    for col in ("law", "params", "inner: fit on <=", "judged on", "error", "outer: fit on <=",
                "judged on", "error", "N* error", "note"):
        table.add_column(col, justify="left" if col in ("law", "note") else "right")
    for r in rows:
        inner, outer = r.get("inner") or {}, r.get("outer") or {}
        note = "selected" if r["law"] == selection["selected"] else ""
        skipped = r.get("inner_skipped") or r.get("outer_skipped")
        if skipped:
            note = (note + "; " if note else "") + skipped
        table.add_row(r["law"], str(r["n_params"]), _size(inner.get("max_fit_size")),
                      _size(inner.get("x")), _pct(inner.get("rel_error"), "+.2f"),
                      _size(outer.get("max_fit_size")), _size(outer.get("x")),
                      _pct(outer.get("rel_error"), "+.2f"), _pct(outer.get("n_star"), "+.0f"),
                      note)
    return table


def _size(v: Any) -> str:
    if isinstance(v, list | tuple):
        v = v[0] if v else None
    return "-" if v is None else f"{v:.3g}"


def _fit_one_form(data: Path, opts: FitOptions, note: str | None = None) -> None:
    """One law fitted to the runs as given: a CSV (by default the law of one input that wins the
    inner holdout, or chinchilla for N and D), a bare table of rungs, or a study folder with
    options its own fit does not take (`note` says so)."""
    from scalelab.laws import Law
    from scalelab.laws.data import load_dataset
    from scalelab.laws.forms import get_form

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

        with console.status("choosing the law by its inner holdout..."):
            selection = one_axis_selection(ds.X, ds.y, weights=w, tolerance=tolerance,
                                           settings={"loss": loss, "delta": delta,
                                                     "x_names": ds.x_names,
                                                     "y_name": ds.y_name})
        form = get_form(selection["selected"])
    model = Law(form.name, loss=loss, delta=delta, bootstrap=bootstrap, level=opts.level,
                seed=seed, x_names=ds.x_names, y_name=ds.y_name)
    if note:
        console.print(f"[bold]{note}[/]")
    with console.status(f"fitting {form.name} to {len(ds.y)} runs "
                        f"({len(form.grid(*_logs(ds)))} starts, {bootstrap} resamples)..."):
        model.fit(ds.X, ds.y, w)
    with console.status(f"holdout {rule}..."):
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
    _print_fit(summary)
    if selection is not None:
        console.print(candidates_table(selection, summary["candidates"]))
    if opts.profile:
        summary["noise"], summary["profile"] = _profile(model, ds, tolerance, opts.profile_by,
                                                        opts.k, opts.profile_sims, seed, w)
        if summary["profile"]["splits"]:
            console.print(profile_table(summary["profile"]))
        for line in profile_lines(summary["profile"]):
            console.print(line)
    if rivals:
        from scalelab.laws import compare_forms

        with console.status(f"comparing {', '.join(rivals)} by holdout {rule}..."):
            ranked = compare_forms(ds.X, ds.y, rivals, rule, loss=loss, delta=delta,
                                   x_names=ds.x_names, y_name=ds.y_name)
        ranking = [{"law": r["law"], "holdout": r["holdout"].to_dict()} for r in ranked]
        summary["comparison"] = {"rule": rule, "ranking": ranking}
        console.print(_ranking_table(ranking, rule))
    if opts.out:
        _write_json(opts.out, summary)
        console.print(f"wrote {opts.out}")
    if opts.plot:
        from scalelab.laws.plots import fit_figure, save_figure

        save_figure(fit_figure(model, ds.X, ds.y, ho, why_not or "no holdout"), opts.plot)
        console.print(f"wrote {opts.plot}")


@dataclass
class _Defaults:
    """The fit settings of a CSV when none is given (a study's come from its spec)."""

    bootstrap: int = 1000
    seed: int = 0
    tolerance: float = 0.02


def _weights(kind: str | None, form, ds):
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


def _fit_two_axis_csv(path: Path, opts: FitOptions) -> None:
    """A CSV of runs over N and D, fitted as a two-axis study's rungs (the law engine)."""
    from scalelab.laws.engine import fit_ladder, two_axis_rows

    if opts.weights == "noise":
        raise UserError("a fit over N and D weighs every run alike; leave out --weights noise")
    rows = two_axis_rows(path, x=opts.x, y=opts.y, flops=opts.flops_col,
                         budget_col=opts.budget_col,
                         isoflop=None if opts.ladder is None else opts.ladder == "isoflop",
                         k=opts.k, drop_highest=opts.drop_highest, where=opts.where)
    settings = opts.settings(_Defaults())
    with console.status(f"fitting L(N, D) to {len(rows)} runs of {path} "
                        f"({settings['bootstrap']} resamples)..."):
        (record,) = fit_ladder(rows, two_axis=True, **settings, law=opts.law,
                               holdout=opts.holdout or "largest:1", compute=opts.compute,
                               quiet=False)
    if opts.profile:
        _two_axis_profile(record, rows, opts, settings)
    if opts.where:
        record["where"] = [str(w) for w in opts.where]
    _report_two_axis(record, rows, opts, source=str(path))


def _two_axis_profile(record: dict, rows: list[dict], opts: FitOptions,
                      settings: dict) -> None:
    """The extrapolation profile by compute of the answering law, into the record."""
    from scalelab.laws.engine import two_axis_profile

    with console.status("extrapolation profile over compute..."):
        record["noise"], record["profile"] = two_axis_profile(
            record, rows, tolerance=settings["tolerance"], sims=opts.profile_sims,
            seed=settings["seed"])


def _report_two_axis(record: dict, rows: list[dict], opts: FitOptions, source: str) -> None:
    """Print a two-axis record (its answers, the choice of law, the holdout), write it."""
    record["source"] = source
    budgets = (f", {len(record['budgets'])} budgets" if record["ladder"] == "isoflop" else "")
    console.print(f"[bold]{record['formula']}[/] and its rivals over {record['n_rungs']} runs "
                  f"({record['ladder']} ladder{budgets})")
    console.print(_fit_table({"law": "approach3", "formula": record["formula"],
                              "level": record["level"], "params": record["params"],
                              "intervals": record["intervals"],
                              "on_bound": record["on_bound"]}))
    console.print(candidates_table(record["selection"], record["candidates"]))
    answers = record.get("answers") or []
    if record.get("answer"):
        console.print(f"answer: {record['answer']}")
    else:
        console.print(f"[bold red]no usable answer[/]: "
                      f"{record['approach3']['degenerate']}")
    if answers:
        console.print(_allocation_table(answers, "at the budgets asked (--compute)"))
    for line in _study_lines(answers, record):
        console.print(line)
    for skipped in ([record["holdout_skipped"]] if record.get("holdout_skipped") else []):
        console.print(f"holdout skipped: {skipped}")
    print_profile(record.get("profile"))
    if opts.out:
        _write_json(opts.out, record)
        console.print(f"wrote {opts.out}")
    if opts.plot:
        from scalelab.laws.plots import save_figure
        from scalelab.laws.two_axis_plots import two_axis_figure

        save_figure(two_axis_figure(record, rows), opts.plot)
        console.print(f"wrote {opts.plot}")


def _check_profile_options(form, tolerance: float, by: str, sims: int) -> None:
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance must be between 0 and 1 (0.02 is 2%), got {tolerance:g}")
    if by not in ("size", "compute"):
        raise UserError(f"--profile-by must be size or compute, not {by!r}")
    if by == "compute" and form.roles != ("N", "D"):
        raise UserError(f"--profile-by compute needs a law in N and D; law {form.name!r} takes "
                        f"({', '.join(form.roles)})")
    if sims < 0:
        raise UserError(f"--profile-sims must be >= 0, got {sims}")


def _profile(model, ds, tolerance: float, by: str, k: float, sims: int, seed: int, w=None):
    """(noise record | None, profile) of a fitted law, its runs weighed by `w` (None: alike);
    the noise for the bands is read off the law's residuals."""
    import numpy as np

    from scalelab.laws.noise import residual_noise
    from scalelab.laws.profile import extrapolation_profile

    resid = np.log(model.predict(ds.X).point) - np.log(ds.y)
    noise = residual_noise(resid, model.form_.n_params)
    with console.status(f"extrapolation profile over {by}..."):
        prof = extrapolation_profile(model, ds.X, ds.y, tolerance=tolerance, by=by, k=k,
                                     sample_weight=w,
                                     sigma=None if noise is None else noise.sigma, truth=model,
                                     sims=sims, seed=seed)
    return (None if noise is None else noise.record), prof


def _rivals(form, compare: str | None, rule: str) -> list[str]:
    """The laws to rank (--law first, then --compare's), checked before any fitting."""
    from scalelab.laws.forms import get_form

    if not compare:
        return []
    if rule == "none":
        raise UserError("--compare ranks laws by holdout error; give a --holdout rule, not none")
    names = [form.name]
    for name in (c.strip() for c in compare.split(",")):
        other = get_form(name)
        if other.roles != form.roles:
            raise UserError(f"--compare {name}: law {name!r} takes inputs "
                            f"({', '.join(other.roles)}), law {form.name!r} takes "
                            f"({', '.join(form.roles)}); compare laws with the same inputs")
        if name not in names:
            names.append(name)
    return names


def _ranking_table(ranking: list[dict], rule: str) -> Table:
    table = Table(title=f"laws ranked by holdout {rule}", title_justify="left")
    for col in ("rank", "law", "mean |rel. error|", "mean rel. error", "on a bound"):
        table.add_column(col, justify="left" if col in ("law", "on a bound") else "right")
    for i, row in enumerate(ranking, 1):
        ho = row["holdout"]
        table.add_row(str(i), row["law"], f"{100 * ho['mean_abs_rel_error']:.2f}%",
                      f"{100 * ho['mean_rel_error']:+.2f}%", ", ".join(ho["on_bound"] or []))
    return table


def _logs(ds):
    import numpy as np

    return np.log(ds.X), np.log(ds.y)


@app.command(help=PREDICT_HELP)
def predict(
    fit_json: Path = typer.Argument(..., help="A fit.json written by `scalelab fit --out`."),
    n: str = typer.Option(None, "--N", help="Parameters N (comma-separated for several)."),
    d: str = typer.Option(None, "--D", help="Tokens D."),
    xv: str = typer.Option(None, "--x", help="Input of a one-input law (power, bnsl)."),
    level: float = typer.Option(None, help="Interval coverage (default: the fit's)."),
    out: Path = typer.Option(None, help="Write the predictions as JSON here."),
) -> None:
    import numpy as np

    record = _load_record(fit_json)
    model = _load_fit(fit_json)
    roles = model.form_.roles
    given = {"N": _floats(n, "--N"), "D": _floats(d, "--D"), "x": _floats(xv, "--x")}
    if roles == ("x",):
        if given["x"] and given["N"]:
            raise UserError("give --x or --N for a one-input law, not both")
        given["x"] = given["x"] or given["N"]
    cols = []
    for role in roles:
        if not given[role]:
            raise UserError(f"law {model.form_.name!r} needs --{role}")
        cols.append(given[role])
    size = max(len(c) for c in cols)
    if any(len(c) not in (1, size) for c in cols):
        raise UserError("--N and --D must have the same number of values (or one)")
    X = np.column_stack([np.resize(np.asarray(c), size) for c in cols])
    if level is not None and not 0 < level < 1:
        raise UserError("--level must be in (0, 1)")
    pred = model.predict(X, level=level)
    warnings = beyond_warnings(record, X)
    table = Table(title=f"{model.form_.name} prediction of {model.y_name}", title_justify="left")
    for col in (*roles, "predicted", f"{pred.level:.0%} interval"):
        table.add_column(col, justify="right")
    rows = []
    for i in range(size):
        iv = None if pred.lo is None else [float(pred.lo[i]), float(pred.hi[i])]
        table.add_row(*[f"{v:.4g}" for v in X[i]], f"{pred.point[i]:.5g}",
                      f"[{iv[0]:.5g}, {iv[1]:.5g}]" if iv else "- (fit has no bootstrap)")
        rows.append({**dict(zip(roles, map(float, X[i]), strict=True)),
                     "predicted": float(pred.point[i]), "interval": iv, "level": pred.level,
                     "warning": warnings[i]})
    console.print(table)
    for row, warning in zip(rows, warnings, strict=True):
        if warning:
            where = ", ".join(f"{r}={row[r]:.4g}" for r in roles)
            console.print(f"[bold red]warning[/] ({where}): {warning}")
    if out:
        _write_json(out, rows)


@app.command(help=OPTIMAL_HELP)
def optimal(
    fit_json: Path = typer.Argument(..., help="A fit.json of a law in N and D, a study folder "
                                    "whose rungs vary N and D, or a CSV of such runs."),
    compute: str = typer.Option(None, help="Budget(s) C in FLOPs, comma-separated."),
    frontier_range: str = typer.Option(None, "--frontier", help="LO:HI budgets for a frontier."),
    points: int = typer.Option(25, help="Budgets on the frontier."),
    k: float = typer.Option(None, "--k", help="C = k·N·D (default: the fit's k, else 6); a "
                            "study uses its measured FLOPs instead."),
    bootstrap: int = typer.Option(1000, help="A study or CSV: bootstrap resamples of its runs."),
    seed: int = typer.Option(0, help="A study or CSV: seed of the bootstrap."),
    law: str = typer.Option(None, help="A study or CSV: force one law (default: chosen by the "
                            "inner holdout)."),
    x: str = typer.Option(None, "--x", help="A CSV: the N and D columns (default N,D)."),
    y: str = typer.Option(None, "--y", help="A CSV: the loss column (default loss)."),
    flops_col: str = typer.Option(None, "--flops-col", help="A CSV: measured FLOPs column."),
    budget_col: str = typer.Option(None, "--budget-col", help="A CSV: IsoFLOP budget column."),
    where: list[str] = typer.Option(None, "--where", help=WHERE_HELP),
    out: Path = typer.Option(None, help="Write the allocations as JSON here."),
    plot: Path = typer.Option(None, help="Write the frontier plot (.svg/.png)."),
) -> None:
    budgets = _budgets(compute, frontier_range, points)
    picked = _where(where)
    if picked and fit_json.suffix.lower() != ".csv":
        raise UserError("--where picks rows of a CSV; give a CSV of runs")
    if bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {bootstrap}")
    warnings: list[str | None] = [None] * len(budgets)
    if fit_json.is_dir() or fit_json.suffix.lower() == ".csv":
        if k is not None:
            raise UserError("--k applies to a fit.json; a study or CSV uses the FLOPs its runs "
                            "measured (else 6·N·D)")
        if fit_json.is_dir():
            rows, record = _optimal_from_study(fit_json, budgets, bootstrap, seed, law)
        else:
            rows, record = _optimal_from_csv(fit_json, budgets, bootstrap, seed, law,
                                             x=x, y=y, flops=flops_col, budget_col=budget_col,
                                             where=picked)
        title = "compute-optimal allocation, C = measured FLOPs per unit × D"
    elif _load_record(fit_json).get("law") == TWO_AXIS:
        rows, record = _optimal_from_two_axis_fit(fit_json, budgets, k)
        title = "compute-optimal allocation, C = measured FLOPs per unit × D"
    else:
        rows, record, k = _optimal_from_fit(fit_json, budgets, k)
        title = f"compute-optimal allocation, C = {k:g}·N·D"
        warnings = _allocation_warnings(_load_record(fit_json), rows)
    console.print(_allocation_table(rows, title))
    if record is not None:
        for line in _study_lines(rows, record):
            console.print(line)
    for row, warning in zip(rows, warnings, strict=True):
        row["warning"] = row.get("warning") or warning
        if warning:
            console.print(f"[bold red]warning[/] (C={row['compute']:.3g}): {warning}")
    if out:
        _write_json(out, rows)
    if plot:
        from scalelab.laws.plots import frontier_figure, save_figure

        save_figure(frontier_figure(sorted(rows, key=lambda r: r["compute"])), plot)


def _allocation_warnings(record: dict, rows: list[dict]) -> list[str | None]:
    """`predict`'s warnings for the optimal points (N*, D*) of a fit.json's law."""
    import numpy as np

    X = np.array([[r["N"], r["D"]] for r in rows])
    return beyond_warnings(record, X)


def _optimal_from_csv(path: Path, budgets: list[float], bootstrap: int, seed: int,
                      law: str | None, **columns: Any):
    """(rows, record): a CSV of runs over N and D, fitted as `scalelab fit` does."""
    from scalelab.laws.engine import two_axis_rows
    from scalelab.laws.two_axis import fit_two_axis

    cols = columns.pop("x")
    runs = two_axis_rows(path, x=[c.strip() for c in cols.split(",")] if cols else None,
                         **columns)
    with console.status(f"fitting L(N, D) to {len(runs)} runs of {path} ({bootstrap} "
                        "resamples)..."):
        record = fit_two_axis(runs, bootstrap=bootstrap, seed=seed, compute=budgets, law=law)
    if not record.get("chosen"):
        raise UserError(f"{path}: no usable law: {record['approach3']['degenerate']}")
    return record["answers"], record


def _where(texts: list[str] | None) -> list[Any]:
    """--where conditions (`laws.data.Where`), each checked before anything is read."""
    from scalelab.laws.data import Where

    return [Where.parse(t) for t in texts or []]


def _budgets(compute: str | None, frontier_range: str | None, points: int) -> list[float]:
    """The budgets asked for: --compute's list, then --frontier's log-spaced range."""
    import numpy as np

    budgets = _floats(compute, "--compute")
    if frontier_range:
        lo_hi = frontier_range.split(":")
        if len(lo_hi) != 2:
            raise UserError("--frontier takes LO:HI, e.g. 1e20:1e26")
        lo, hi = (_floats(v, "--frontier")[0] for v in lo_hi)
        if not lo < hi or points < 2:
            raise UserError("frontier needs 0 < C_min < C_max and at least 2 points")
        budgets += [float(c) for c in np.geomspace(lo, hi, points)]
    if not budgets:
        raise UserError("give --compute C (or --frontier LO:HI)")
    return budgets


def _optimal_from_two_axis_fit(path: Path, budgets: list[float], k: float | None):
    """(rows, record): a two-axis fit.json (a CSV's or a study's runs over N and D) answered
    at the budgets by the law it chose, as `optimal` on those runs would."""
    from scalelab.laws.two_axis import answer_for

    if k is not None:
        raise UserError("--k applies to a one-form fit.json; a two-axis fit uses the FLOPs its "
                        "runs measured (else 6·N·D)")
    record = _load_record(path)
    return answer_for(record, budgets), record


def _optimal_from_fit(path: Path, budgets: list[float], k: float | None):
    from scalelab.laws import optimal_allocation

    record = _load_record(path)
    model = _load_fit(path)
    record_k = 6.0
    try:
        record_k = float((record.get("flops") or {}).get("k", 6.0))
    except (AttributeError, TypeError, ValueError):
        pass
    k = record_k if k is None else k
    if not k > 0:
        raise UserError("--k must be positive")
    return optimal_allocation(model, budgets, k=k), None, k


def _optimal_from_study(folder: Path, budgets: list[float], bootstrap: int, seed: int,
                        law: str | None = None):
    """(rows, record): the two-axis fit of a study's rungs, answered at the budgets."""
    from scalelab.laws.two_axis import fit_two_axis
    from scalelab.store import StudyStore

    if not (folder / "study.db").is_file():
        raise UserError(f"{folder} is a folder without study.db; pass a study folder or a "
                        "fit.json")
    with StudyStore.open_readonly(folder) as store:
        rungs = store.rungs()
    try:
        with console.status(f"fitting L(N, D) to {folder} ({bootstrap} resamples)..."):
            record = fit_two_axis(rungs, bootstrap=bootstrap, seed=seed, compute=budgets,
                                  law=law)
    except UserError as err:
        raise UserError(f"{folder} is not a two-axis study: {err}") from None
    return record["answers"], record


def _allocation_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("C", "N*", "D*", "D*/N*", "loss"):
        table.add_column(col, justify="right")
    for r in rows:
        iv = r["intervals"] or {}
        cells = [f"{r[key]:.4g}" + (f" [{iv[key][0]:.3g}, {iv[key][1]:.3g}]"
                                    if iv.get(key) else "")
                 for key in ("N", "D", "tokens_per_param", "loss")]
        table.add_row(f"{r['compute']:.3g}", *cells)
    return table


def _study_lines(rows: list[dict], record: dict) -> list[str]:
    """The answers in words, where they come from, and whether the two approaches agree."""
    source = {"approach3": "Approach 3, L(N, D) = E + A·N^-alpha + B·D^-beta",
              "approach2": "Approach 2, power laws in C through the IsoFLOP parabolas' minima"}
    lines = [r["answer"] for r in rows]
    chosen = record.get("chosen")
    if chosen:
        fit = record.get("selected_fit") or {}
        where = source.get(chosen) or f"{chosen}, {fit.get('formula', '')}"
        lines.append(f"from {where}, fitted to {record['n_rungs']} rungs "
                     f"({record['ladder']} ladder)")
    if record.get("agree") is True:
        lines.append("Approach 2 and Approach 3 agree on N* at the largest budget (their "
                     "intervals overlap)")
    elif record.get("agree") is False:
        lines.append(f"[bold red]Approach 2 and Approach 3 disagree[/] on N* at the largest "
                     f"budget: {record['why']}")
    ho = record.get("holdout")
    if ho is not None and ho.get("rel_error") is not None:
        held = "budget" if ho.get("x_name") == "C" else "N"
        how = (f"fitted without the largest {held}" if ho["rule"] in ("largest_budget",
                                                                       "largest:1")
               else f"fitted on {held}s <= {ho['max_fit_size']:.3g} ({ho['rule']})")
        star = ho.get("n_star") or {}
        lines.append(f"holdout: {how}, best loss at {_size(ho['x'])} predicted "
                     f"{ho['predicted']:.4g}, measured {ho['measured']:.4g} "
                     f"({100 * ho['rel_error']:+.2f}%)"
                     + (f"; N* {star['predicted']:.3g} against {star['measured']:.3g} "
                        f"({100 * star['rel_error']:+.0f}%)" if star.get("rel_error") is not None
                        else ""))
        if star.get("note"):
            lines.append(f"  {star['note']}")
    largest = max(record.get("budgets") or [0.0])
    for r in rows:
        if largest and r["compute"] > largest * (1 + 1e-9):
            lines.append(f"[bold red]warning[/]: C = {r['compute']:.3g} is "
                         f"{r['compute'] / largest:.3g}x the largest budget trained; no "
                         "evidence beyond the holdout's step")
    return lines
