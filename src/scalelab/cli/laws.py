"""Commands of the scaling-law engine: fit, predict, optimal. Each parses its options, calls
`scalelab.laws` (`fit_runs`, `predict_rows`, `optimal_rows`) and prints what it returns
(`cli.laws_output`); the fitting itself lives in the library."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from scalelab.cli.app import app, console
from scalelab.cli.laws_output import print_allocation, print_fit, print_predictions
from scalelab.errors import UserError

FIT_HELP = """Fit a scaling law to runs from a CSV file or a study folder: one engine for both
(`scalelab.laws.engine`), so the same runs give the same fit.json. From Python,
`scalelab.laws.fit_runs(data, FitOptions(...))` gives the same record.

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


def _columns(text: str | None) -> list[str] | None:
    """--x's comma-separated column names, or None where not given."""
    return [c.strip() for c in text.split(",")] if text else None


def _save_plot(figure, path: Path) -> None:
    from scalelab.laws.plots import save_figure

    save_figure(figure, path)


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
    from scalelab.laws.fitfile import FitOptions, fit_runs

    opts = FitOptions(law=law, x=_columns(x), y=y, flops_col=flops_col, budget_col=budget_col,
                      ladder=ladder, k=k, drop_highest=drop_highest, bootstrap=bootstrap,
                      seed=seed, level=level, loss=loss, delta=delta, holdout=holdout,
                      weights=weights, compute=_floats(compute, "--compute") or None,
                      compare=_columns(compare), profile=profile, tolerance=tolerance,
                      profile_by=profile_by, profile_sims=profile_sims, where=where or [])
    with console.status(f"fitting {data}...") as status:
        result = fit_runs(data, opts, progress=status.update)
    print_fit(result)
    if out:
        result.write(out)
        console.print(f"wrote {out}")
    if plot:
        _save_plot(result.figure(), plot)
        console.print(f"wrote {plot}")


@app.command(help=PREDICT_HELP)
def predict(
    fit_json: Path = typer.Argument(..., help="A fit.json written by `scalelab fit --out`."),
    n: str = typer.Option(None, "--N", help="Parameters N (comma-separated for several)."),
    d: str = typer.Option(None, "--D", help="Tokens D."),
    xv: str = typer.Option(None, "--x", help="Input of a one-input law (power, bnsl)."),
    level: float = typer.Option(None, help="Interval coverage (default: the fit's)."),
    out: Path = typer.Option(None, help="Write the predictions as JSON here."),
) -> None:
    from scalelab.laws.answers import predict_rows, read_fit
    from scalelab.laws.fitfile import write_json

    table = predict_rows(read_fit(fit_json), N=_floats(n, "--N"), D=_floats(d, "--D"),
                         x=_floats(xv, "--x"), level=level, name=str(fit_json))
    print_predictions(table)
    if out:
        write_json(out, table.rows)


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
    from scalelab.laws.answers import budgets_for, optimal_rows
    from scalelab.laws.fitfile import write_json

    budgets = budgets_for(_floats(compute, "--compute"), _frontier(frontier_range), points)
    with console.status(f"answering from {fit_json}...") as status:
        answer = optimal_rows(fit_json, budgets, k=k, bootstrap=bootstrap, seed=seed, law=law,
                              x=_columns(x), y=y, flops_col=flops_col, budget_col=budget_col,
                              where=where or [], progress=status.update)
    print_allocation(answer)
    if out:
        write_json(out, answer.rows)
    if plot:
        _save_plot(answer.figure(), plot)


def _frontier(text: str | None) -> tuple[float, float] | None:
    """--frontier LO:HI as two positive numbers."""
    if not text:
        return None
    lo_hi = text.split(":")
    if len(lo_hi) != 2:
        raise UserError("--frontier takes LO:HI, e.g. 1e20:1e26")
    lo, hi = (_floats(v, "--frontier")[0] for v in lo_hi)
    return lo, hi
