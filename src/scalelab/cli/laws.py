"""Commands of the scaling-law engine: fit, predict, optimal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from scalelab.cli.app import app, console
from scalelab.errors import UserError

FIT_HELP = """Fit a scaling law to runs from a CSV file or a study folder.

Fits in log space (Huber loss on log residuals by default) from a grid of starts, all run as one
batched L-BFGS, then bootstraps the runs for intervals and checks the law by holdout: fit on the
smaller sizes, predict the largest.

Defaults. Law: chinchilla for a CSV, power for a study folder. Columns of a CSV: --x N,D (the
law's inputs in order: N, D for chinchilla and kaplan, one column for power and bnsl, default N)
and --y loss. In a study folder (study.db, finished rungs only): x = n_nonembed (D = tokens),
y = val_loss. With --flops-col, D = C / (k·N) is derived from that compute column and --x names
only the N column.

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

Examples (the Chinchilla data of Epoch's replication; a study):

    scalelab fit chinchilla.csv --law chinchilla --x "Model Size" --y loss \\
        --flops-col "Training FLOP" --drop-highest 5 --out fit.json --plot fit.svg
    scalelab fit studies/default --law power --out fit.json
    scalelab fit runs.csv --law power --x N --compare bnsl --holdout largest:3
    scalelab fit chinchilla.csv --law chinchilla --x "Model Size" \
        --flops-col "Training FLOP" --drop-highest 5 --profile --out fit.json
"""

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


def _load_fit(path: Path):
    from scalelab.laws import Law

    return Law.from_summary(_load_record(path))


def _beyond(profile: dict | None, X) -> list[str | None]:
    """Per prediction: None within the fit's trust horizon, else a plain warning (no profile
    in the fit.json: None for all, nothing to say)."""
    from scalelab.laws.profile import RATIO_RTOL, fmt_ratio

    if not isinstance(profile, dict) or not profile.get("max_x"):
        return [None] * len(X)
    axis = X[:, 0] if profile.get("k") is None else profile["k"] * X[:, 0] * X[:, 1]
    h = profile.get("horizon")
    out = []
    for ratio in axis / float(profile["max_x"]):
        if h is not None and ratio <= h * (1 + RATIO_RTOL):
            out.append(None)
        elif h is not None:
            out.append(f"{fmt_ratio(ratio)} beyond the fitted range, past the trust horizon "
                       f"({fmt_ratio(h)}): no evidence the law holds there")
        else:
            out.append(f"{fmt_ratio(ratio)} beyond the fitted range; the profile found no "
                       "trust horizon: no evidence the law holds there")
    return out


def _write_json(path: Path, data: Any) -> None:
    try:
        path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None


def _run_holdout(law, X, y, rule: str) -> tuple[Any, str | None]:
    """(Holdout | None, why there is none): the default rule quietly records why it could not
    run; any other rule that cannot run is an error."""
    from scalelab.laws import holdout, leave_one_size_out

    if rule == "none":
        return None, None
    if rule == "loso":
        return leave_one_size_out(law, X, y), None
    try:
        return holdout(law, X, y, rule), None
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
    from scalelab.laws.profile import fmt_ratio, profile_rows

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
                      fmt_ratio(r["within"]) if r["within"] is not None else "not at first")
    return table


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
    law: str = typer.Option(None, help="power, chinchilla, kaplan or bnsl (default: chinchilla "
                            "for a CSV, power for a study folder)."),
    x: str = typer.Option(None, "--x", help="Input column(s), comma-separated, in the law's "
                          "order (N,D)."),
    y: str = typer.Option(None, "--y", help="Loss column (default loss; val_loss in a study)."),
    flops_col: str = typer.Option(None, "--flops-col", help="Compute column: D = C/(k·N)."),
    k: float = typer.Option(6.0, "--k", help="FLOPs per parameter per token in C = k·N·D."),
    drop_highest: int = typer.Option(0, help="Drop the K runs with the highest loss first."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples of the runs (0: none)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    level: float = typer.Option(0.95, help="Coverage of the intervals."),
    loss: str = typer.Option("huber", help="huber (on log residuals) or lsq (least squares)."),
    delta: float = typer.Option(1e-3, help="Huber delta."),
    holdout: str = typer.Option("largest:1", help="largest:K, smallest:K, below:V, loso, none."),
    out: Path = typer.Option(None, help="Write the fit as JSON here (fit.json)."),
    plot: Path = typer.Option(None, help="Write fit, residual and holdout plots (.svg/.png)."),
    compare: str = typer.Option(None, help="Other laws to rank against --law by holdout error, "
                                "comma-separated (e.g. bnsl)."),
    profile: bool = typer.Option(False, "--profile", help="Also the extrapolation profile and "
                                 "trust horizon (table, and fit.json's \"profile\")."),
    tolerance: float = typer.Option(0.02, help="Relative error the trust horizon allows."),
    profile_by: str = typer.Option("size", help="Split the profile by size (the first input) "
                                   "or compute (C = k·N·D, laws in N and D)."),
    profile_sims: int = typer.Option(200, help="Synthetic data sets per split for the "
                                     "noise-implied bands (0: none)."),
) -> None:
    from scalelab.laws import Law
    from scalelab.laws.data import load_dataset
    from scalelab.laws.forms import get_form

    if not data.exists():
        raise UserError(f"{data} does not exist")
    form = get_form(law or ("power" if data.is_dir() else "chinchilla"))
    if loss not in ("huber", "lsq"):
        raise UserError(f"--loss must be huber or lsq, not {loss!r}")
    if bootstrap < 0 or not 0 < level < 1 or not delta > 0:
        raise UserError("--bootstrap must be >= 0, --level in (0, 1) and --delta > 0")
    rivals = _rivals(form, compare, holdout)
    if profile:
        _check_profile_options(form, tolerance, profile_by, profile_sims)
    cols = [c.strip() for c in x.split(",")] if x else None
    ds = load_dataset(data, form, x=cols, y=y, flops=flops_col, k=k, drop_highest=drop_highest)
    model = Law(form.name, loss=loss, delta=delta, bootstrap=bootstrap, level=level, seed=seed,
                x_names=ds.x_names, y_name=ds.y_name)
    with console.status(f"fitting {form.name} to {len(ds.y)} runs "
                        f"({len(form.grid(*_logs(ds)))} starts, {bootstrap} resamples)..."):
        model.fit(ds.X, ds.y)
    with console.status(f"holdout {holdout}..."):
        ho, why_not = _run_holdout(model, ds.X, ds.y, holdout)
    summary = model.summary()
    summary.update({"holdout": None if ho is None else ho.to_dict(), "source": ds.source,
                    "dropped_highest": ds.dropped})
    if why_not:
        summary["holdout_skipped"] = why_not
    if flops_col:
        summary["flops"] = {"column": flops_col, "k": k}
    _print_fit(summary)
    if profile:
        summary["noise"], summary["profile"] = _profile(model, ds, tolerance, profile_by, k,
                                                        profile_sims, seed)
        if summary["profile"]["splits"]:
            console.print(profile_table(summary["profile"]))
        for line in profile_lines(summary["profile"]):
            console.print(line)
    if rivals:
        from scalelab.laws import compare_forms

        with console.status(f"comparing {', '.join(rivals)} by holdout {holdout}..."):
            ranked = compare_forms(ds.X, ds.y, rivals, holdout, loss=loss, delta=delta,
                                   x_names=ds.x_names, y_name=ds.y_name)
        ranking = [{"law": r["law"], "holdout": r["holdout"].to_dict()} for r in ranked]
        summary["comparison"] = {"rule": holdout, "ranking": ranking}
        console.print(_ranking_table(ranking, holdout))
    if out:
        _write_json(out, summary)
        console.print(f"wrote {out}")
    if plot:
        from scalelab.laws.plots import fit_figure, save_figure

        save_figure(fit_figure(model, ds.X, ds.y, ho, why_not or "no holdout"), plot)
        console.print(f"wrote {plot}")


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


def _profile(model, ds, tolerance: float, by: str, k: float, sims: int, seed: int):
    """(noise record | None, profile) of a fitted law: runs weigh alike, the noise for the
    bands is read off the law's residuals."""
    import numpy as np

    from scalelab.laws.noise import residual_noise
    from scalelab.laws.profile import extrapolation_profile

    resid = np.log(model.predict(ds.X).point) - np.log(ds.y)
    noise = residual_noise(resid, model.form_.n_params)
    with console.status(f"extrapolation profile over {by}..."):
        prof = extrapolation_profile(model, ds.X, ds.y, tolerance=tolerance, by=by, k=k,
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

    from scalelab.laws import Law

    record = _load_record(fit_json)
    model = Law.from_summary(record)
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
    warnings = _beyond(record.get("profile"), X)
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
    fit_json: Path = typer.Argument(..., help="A fit.json of a law in N and D, or a study "
                                    "folder whose rungs vary N and D."),
    compute: str = typer.Option(None, help="Budget(s) C in FLOPs, comma-separated."),
    frontier_range: str = typer.Option(None, "--frontier", help="LO:HI budgets for a frontier."),
    points: int = typer.Option(25, help="Budgets on the frontier."),
    k: float = typer.Option(None, "--k", help="C = k·N·D (default: the fit's k, else 6); a "
                            "study uses its measured FLOPs instead."),
    bootstrap: int = typer.Option(1000, help="A study: bootstrap resamples of its rungs."),
    seed: int = typer.Option(0, help="A study: seed of the bootstrap."),
    out: Path = typer.Option(None, help="Write the allocations as JSON here."),
    plot: Path = typer.Option(None, help="Write the frontier plot (.svg/.png)."),
) -> None:
    budgets = _budgets(compute, frontier_range, points)
    if fit_json.is_dir():
        if k is not None:
            raise UserError("--k applies to a fit.json; a study uses the FLOPs its rungs measured")
        if bootstrap < 0:
            raise UserError(f"--bootstrap must be >= 0, got {bootstrap}")
        rows, record = _optimal_from_study(fit_json, budgets, bootstrap, seed)
        title = "compute-optimal allocation, C = measured FLOPs per unit × D"
    else:
        rows, record, k = _optimal_from_fit(fit_json, budgets, k)
        title = f"compute-optimal allocation, C = {k:g}·N·D"
    console.print(_allocation_table(rows, title))
    if record is not None:
        for line in _study_lines(rows, record):
            console.print(line)
    if out:
        _write_json(out, rows)
    if plot:
        from scalelab.laws.plots import frontier_figure, save_figure

        save_figure(frontier_figure(sorted(rows, key=lambda r: r["compute"])), plot)


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


def _optimal_from_study(folder: Path, budgets: list[float], bootstrap: int, seed: int):
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
            record = fit_two_axis(rungs, bootstrap=bootstrap, seed=seed, compute=budgets)
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
    if record.get("chosen"):
        lines.append(f"from {source[record['chosen']]}, fitted to {record['n_rungs']} rungs "
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
        lines.append(f"holdout: fitted without the largest {held}, best loss there predicted "
                     f"{ho['predicted']:.4g}, measured "
                     f"{ho['measured']:.4g} ({100 * ho['rel_error']:+.2f}%)")
    largest = max(record.get("budgets") or [0.0])
    for r in rows:
        if largest and r["compute"] > largest * (1 + 1e-9):
            lines.append(f"[bold red]warning[/]: C = {r['compute']:.3g} is "
                         f"{r['compute'] / largest:.3g}x the largest budget trained; no "
                         "evidence beyond the holdout's step")
    return lines
