"""`scalelab plan`: the ladder to train for a target, chosen by simulation (`scalelab.plan`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml
from rich.table import Table

from scalelab.cli.app import app, console
from scalelab.cli.study import ADDRESS_OPTION, EXECUTOR_OPTION, STORAGE_OPTION
from scalelab.errors import UserError
from scalelab.values import fmt_count, fmt_flops, fmt_seconds

PLAN_HELP = """Choose the ladder to train before anything trains: the sizes and seeds per size
whose law most likely lands within --tolerance of the loss at --target, within a budget.

The truth it simulates from: `--from STUDY`, a study's fitted power law and the noise of its
seed repeats (each size's spread, as its fit weighs them), its measured FLOPs per unit of data
and its spec; or a prior, `--law FIT.json` (a study folder's law, or a published law's
parameters written out: `--law E=1.69,A=406.4,alpha=0.34`) with `--noise 1%` assumed for every
run and the `--preset`'s spec (cost 6·N·D). `--noise` with `--from` replaces
the study's measured noise.

Every candidate ladder (4 to 8 sizes from the smallest measured size up to target / 3, 4, 6, 8
or 12, on the family's real shapes; 1 to 8 seeds per size, at every size or the smaller half)
is drawn many times from the law plus that noise and fitted as the study fits its runs (the
same weights, objective and choice of law, one batched fit for all). A candidate's row: the
probability P(|error| <= tolerance) at the target, the mean error, the range of 95% of the
errors, and its cost (FLOPs of its runs plus one run at the target, which checks the forecast).

Writes, in --out: plan.json (every candidate), plan.yaml (the chosen ladder in the source's
spec: give it to `scalelab run` as it is) and plan.png (probability against cost). The chosen
ladder is the most probable within the budget (of those within 0.02 of it, the cheapest;
without --budget, the cheapest about as sure as any).

`--compute C` instead plans an IsoFLOP ladder (3 to 5 budgets, the largest C/3 to C/30; 4, 5
or 7 sizes a budget; 1 to 3 seeds) whose two-axis law predicts the best loss at C, L*(C).
The truth: `--from` a two-axis study (its Approach-3 law and the spread of its runs about it),
`--law` a two-axis fit.json with `--noise`, or with neither Chinchilla's published Approach-3
law with `--noise`. Each draw is fitted as the study's Approach 3 (one batched fit); the
chosen ladder is also fitted by the study's whole two-axis fit on a few draws. plan.yaml is
an IsoFLOP spec for `scalelab run`.
"""


def _fraction(text: str, name: str) -> float:
    """'2%' or '0.02' as 0.02; one line otherwise."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UserError(f"{name} must be a fraction or a percentage (2% or 0.02), "
                        f"got {text!r}") from None
    if not 0 < value < 1:
        raise UserError(f"{name} must be between 0 and 100%, got {text}")
    return value


def _flops_budget(budget: float | None, seconds: float | None,
                  flops_per_s: float | None) -> float | None:
    """The budget in FLOPs: --budget, or --seconds at the source's measured rate."""
    if seconds is None:
        return budget
    if budget is not None:
        raise UserError("give --budget (FLOPs) or --seconds, not both")
    if not flops_per_s:
        raise UserError("--seconds needs a measured rate (--from a study with training times); "
                        "give --budget in FLOPs")
    return seconds * flops_per_s


def _table(plan: dict, rows: int) -> Table:
    tol = f"{100 * plan['tolerance']:g}%"
    what = plan.get("label") or f"N = {fmt_count(plan['target'])}"
    table = Table(title=f"Candidate ladders for {what}, by probability per FLOP",
                  title_justify="left")
    for col in ("ladder", "runs", "reach", "FLOPs", f"P(|err| <= {tol})", "mean err",
                "95% of errors", "P per PFLOP fitted"):
        table.add_column(col, justify="left" if col == "ladder" else "right")
    chosen = plan["chosen"]
    for r in plan["candidates"][:rows]:
        mark = " (chosen)" if r is chosen or r["describe"] == chosen["describe"] else ""
        table.add_row(r["describe"] + mark, str(r["runs"]), f"{r['ratio']:.1f}×",
                      fmt_flops(r["flops"]), f"{r['p_within']:.2f}",
                      f"{100 * r['mean_error']:+.1f}%",
                      f"[{100 * r['spread'][0]:+.1f}%, {100 * r['spread'][1]:+.1f}%]",
                      f"{r['p_per_pflop']:.3g}")
    return table


@app.command(help=PLAN_HELP)
def plan(
    target: float | None = typer.Option(None, "--target", help="the size N (non-embedding "
                                        "parameters) the law must predict"),
    compute: float | None = typer.Option(None, "--compute", help="a compute target C "
                                         "(FLOPs): plan an IsoFLOP ladder whose two-axis law "
                                         "predicts the best loss at C (instead of --target)"),
    source: Path | None = typer.Option(None, "--from", help="a study folder: its law, seed "
                                       "noise, cost and spec"),
    law: str | None = typer.Option(None, "--law", help="a prior law: a fit.json of the power "
                                   "law (with --compute: of a two-axis law), a study folder, "
                                   "or its parameters, E=1.69,A=406.4,alpha=0.34 (with "
                                   "--noise)"),
    noise: str | None = typer.Option(None, "--noise", help="noise of one run, sd of log loss "
                                     "(1% or 0.01), assumed at every size"),
    tolerance: str = typer.Option("2%", "--tolerance", help="the error allowed at the target"),
    budget: float | None = typer.Option(None, "--budget", help="the most FLOPs to spend"),
    seconds: float | None = typer.Option(None, "--seconds", help="the most training seconds, "
                                         "at the study's measured FLOPs per second"),
    reach: float = typer.Option(3.0, "--reach", help="the target at least this many times "
                                "the largest fitted size (with --compute: budget)"),
    preset: str = typer.Option("default", "--preset", help="the spec a prior law's plan "
                               "starts from"),
    check: bool = typer.Option(True, "--check/--no-check", help="one run at the target in the "
                               "spec, which tests the forecast (--target only)"),
    seed: int = typer.Option(0, "--seed", help="seed of the synthetic ladders"),
    sims: int = typer.Option(200, "--sims", min=10, help="synthetic ladders per candidate "
                             "(the finalists get 5 times as many)"),
    out: Path = typer.Option(Path("plan"), "--out", help="folder for plan.json, plan.yaml, "
                             "plan.png"),
    rows: int = typer.Option(15, "--rows", help="candidates shown in the table"),
) -> None:
    from scalelab.plan import from_prior, from_study, make_plan, plan_spec, shape_realizer
    from scalelab.plan.plot import save_plan_figure
    from scalelab.spec import load_spec

    if compute is not None and target is not None:
        raise UserError("give --target N (a ladder in N) or --compute C (IsoFLOP budgets), "
                        "not both")
    tol = _fraction(tolerance, "--tolerance")
    sigma = None if noise is None else _fraction(noise, "--noise")
    if compute is not None:
        _plan_compute(compute, source, law, sigma, tol, budget, seconds, reach, preset, seed,
                      sims, out, rows)
        return
    if target is None or target <= 0:
        raise UserError("give --target N, the size the law must predict (e.g. --target 6e6), "
                        "or --compute C")
    if source is not None and law is not None:
        raise UserError("give --from STUDY or --law FIT, not both")
    if source is not None:
        src = from_study(source, sigma)
    elif law is not None:
        if sigma is None:
            raise UserError("--law needs --noise (a prior law has no seeds to measure it from)")
        src = from_prior(law, sigma, preset)
    else:
        raise UserError("give --from STUDY (its law and seed noise), or --law FIT --noise 1%")
    if src.measured and target <= max(src.measured):
        raise UserError(f"--target {target:.4g} is inside the measured range of {src.name} "
                        f"({fmt_count(min(src.measured))} to {fmt_count(max(src.measured))}): "
                        f"its loss is measured, not predicted; plan a target above "
                        f"{fmt_count(max(src.measured))}")
    budget = _flops_budget(budget, seconds, src.cost.flops_per_s)
    realize = shape_realizer(src.spec)
    smallest = min(src.measured) if src.measured else realize(1e4)
    result = make_plan(src.noise, target, tolerance=tol, budget=budget, cost=src.cost,
                       smallest=smallest, realize=realize, own=src.measured, check=check,
                       seed=seed, reach=reach, screen_sims=sims,
                       final_sims=5 * sims).to_dict()
    out.mkdir(parents=True, exist_ok=True)
    spec = plan_spec(src.spec, result["chosen"], target, realize, check)
    (out / "plan.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    load_spec(out / "plan.yaml")  # what `scalelab run` reads: refused here, not there
    (out / "plan.json").write_text(json.dumps(result, indent=1))
    save_plan_figure(result, out / "plan.png")
    console.print(_table(result, rows))
    c = result["chosen"]
    width = c.get("interval_width")
    secs = f", {fmt_seconds(c['seconds'])} of training" if c.get("seconds") else ""
    at_target = " + 1 at the target" if check else ""
    console.print(f"chosen: {c['describe']} ({c['runs']} runs{at_target}, "
                  f"{fmt_flops(c['flops'])}{secs}): P(|error| <= {100 * tol:g}%) = "
                  f"{c['p_within']:.2f} ± {c['p_se']:.2f} over {c['sims']} draws, mean error "
                  f"{100 * c['mean_error']:+.2f}%"
                  + (f", 95% interval at the target {100 * width:.1f}% wide" if width else ""),
                  highlight=False, soft_wrap=True)
    console.print(f"noise: {src.noise.source} ({100 * src.noise.record['sigma']:.2f}% pooled); "
                  f"cost: {result['cost']}", highlight=False, soft_wrap=True)
    shapes = src.noise.record.get("shapes")
    if shapes and shapes["sigma"] > 2 * shapes["seed_se"]:
        worst = max(shapes["sizes"], key=lambda s: abs(s["offset"]))
        console.print(f"note: the source's sizes sit off its law by {100 * shapes['sigma']:.1f}% "
                      f"(up to {100 * worst['offset']:+.1f}% at {fmt_count(worst['x'])}) beyond "
                      f"what their seeds explain ({100 * shapes['seed_se']:.2f}%): each shape's "
                      "own offset, which more seeds do not average away and this plan's noise "
                      "leaves out, so read its P as an upper bound (docs/plan.md, 'Checked "
                      "against real ladders')",
                      highlight=False, soft_wrap=True)
    console.print(f"wrote {out / 'plan.yaml'}, {out / 'plan.json'}, {out / 'plan.png'}")


def _plan_compute(compute: float, source: Path | None, law: str | None, sigma: float | None,
                  tol: float, budget: float | None, seconds: float | None, reach: float,
                  preset: str, seed: int, sims: int, out: Path, rows: int) -> None:
    """`scalelab plan --compute C`: an IsoFLOP ladder for a two-axis target (`plan.two_axis`)."""
    from scalelab.plan import shape_realizer
    from scalelab.plan.plot import save_plan_figure
    from scalelab.plan.two_axis import (
        isoflop_settings,
        isoflop_spec,
        make_two_axis_plan,
        refusal,
        two_axis_source,
        wsd_decay,
    )
    from scalelab.spec import load_spec

    if not compute > 0:
        raise UserError(f"--compute must be a positive number of FLOPs, got {compute:g}")
    src = two_axis_source(source, law, sigma, preset)
    if src.budgets and compute <= max(src.budgets):
        raise UserError(f"--compute {compute:.3g} is inside the measured budgets of {src.name} "
                        f"({min(src.budgets):.3g} to {max(src.budgets):.3g} FLOPs): its best "
                        f"loss is measured, not predicted; plan a compute above "
                        f"{max(src.budgets):.3g}")
    budget = _flops_budget(budget, seconds, src.flops_per_s)
    span, tokens_per_param = isoflop_settings(src.spec)
    result = make_two_axis_plan(
        src.truth, compute, tolerance=tol, budget=budget, span=span,
        tokens_per_param=tokens_per_param, reach=reach, realize=shape_realizer(src.spec),
        refused=refusal(src.spec), flops_per_s=src.flops_per_s,
        decay_frac=wsd_decay(src.spec), seed=seed, screen_sims=sims, final_sims=5 * sims,
        study_draws=max(1, sims // 10)).to_dict()
    out.mkdir(parents=True, exist_ok=True)
    spec = isoflop_spec(src.spec, result["chosen"])
    (out / "plan.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    load_spec(out / "plan.yaml")  # what `scalelab run` reads: refused here, not there
    (out / "plan.json").write_text(json.dumps(result, indent=1))
    save_plan_figure(result, out / "plan.png")
    console.print(_table(result, rows))
    c, opt = result["chosen"], result["settings"]["optimum"]
    secs = f", {fmt_seconds(c['seconds'])} of training" if c.get("seconds") else ""
    console.print(f"chosen: {c['describe']} ({c['runs']} runs, {fmt_flops(c['flops'])}{secs}): "
                  f"P(|error of L*(C)| <= {100 * tol:g}%) = {c['p_within']:.2f} ± "
                  f"{c['p_se']:.2f} over {c['sims']} draws, mean error "
                  f"{100 * c['mean_error']:+.2f}%", highlight=False, soft_wrap=True)
    fit = c.get("study_fit")
    if fit and fit["p_within"] is not None:
        laws = ", ".join(f"{k} {v}" for k, v in sorted(fit["chosen_laws"].items()))
        console.print(f"the study's own fit (fit_two_axis, its choice of law: {laws}) on "
                      f"{fit['draws']} draws: P = {fit['p_within']:.2f}, mean error "
                      f"{100 * fit['mean_error']:+.2f}%", highlight=False, soft_wrap=True)
    console.print(f"truth at C: N* ≈ {fmt_count(opt['N'])}, D* ≈ {fmt_count(opt['D'])}, "
                  f"L* = {opt['loss']:.4g}, from {src.name}; noise: {src.truth.source} "
                  f"({100 * src.truth.sigma:.2f}% a run); cost: {result['cost']}",
                  highlight=False, soft_wrap=True)
    console.print(f"wrote {out / 'plan.yaml'}, {out / 'plan.json'}, {out / 'plan.png'}")


GROW_HELP = """Grow a study toward --target N, one step at a time, each step's forecast recorded
before it trains: progressive scaling that checks itself.

Each step proposes the next rung: of 1 to 3 seeds at a new size (the largest measured times 1.5
to 4, at least 2 times below the target) or at a size the study has, the one that most narrows
the spread of the law's prediction at the target per FLOP (by more than the simulation's noise;
if none does, the one leaving the narrowest spread), by the plan's simulation (the study's law
plus its seed noise; a study without repeats takes its law's residual noise, or --noise).
It records the law's prediction for each of the step's rungs, with the 95% interval of one run
there (the law's bootstrap interval widened by one run's noise: its seed noise and the
spread of the study's sizes about its law beyond it), in study.db BEFORE
training them; trains them as rungs of the study (through --executor, as `scalelab run`
does: D, learning rate and shape by the study's rules); records what they measured; refits.
It stops after --steps steps toward the target, when the study's 95% interval at the target is
within --tolerance, or when no further step fits the budget.

A rerun of the same command resumes: a step a kill cut short trains its rungs from their
checkpoints, and its forecasts stay as recorded. summary.json (`forecasts`) and report.html
("Forecast record") show every forecast against what was measured.
"""


@app.command(help=GROW_HELP)
def grow(
    folder: Path = typer.Argument(..., help="study folder (a ladder in N with a fitted law)"),
    target: float = typer.Option(..., "--target", help="the size N (non-embedding "
                                 "parameters) to grow toward; beyond every measured size"),
    tolerance: str = typer.Option("2%", "--tolerance", help="stop once the interval at the "
                                  "target is within this"),
    steps: int = typer.Option(3, "--steps", help="the most steps toward the target (counting "
                              "steps of earlier runs of this grow)"),
    budget: float | None = typer.Option(None, "--budget", help="the most FLOPs the grown rungs "
                                        "may spend"),
    seconds: float | None = typer.Option(None, "--seconds", help="the most training seconds, "
                                         "at the study's measured FLOPs per second"),
    noise: str | None = typer.Option(None, "--noise", help="noise of one run, sd of log loss "
                                     "(1% or 0.01), instead of the study's"),
    sims: int = typer.Option(200, "--sims", min=10, help="synthetic ladders per candidate step"),
    seed: int = typer.Option(0, "--seed", help="seed of the synthetic ladders"),
    executor: str = EXECUTOR_OPTION,
    address: str | None = ADDRESS_OPTION,
    storage: str | None = STORAGE_OPTION,
) -> None:
    from scalelab.cli.study import (
        ResumeNote,
        execute_options,
        incomplete_is_exit_1,
        interrupted_is_exit_130,
    )
    from scalelab.plan.grow import grow as grow_study

    tol = _fraction(tolerance, "--tolerance")
    sigma = None if noise is None else _fraction(noise, "--noise")
    note = ResumeNote()

    def done(plan, row: dict) -> None:
        console.print(f"rung {plan.rung} (N = {plan.n_nonembed:,}): {row['status']}, "
                      f"val_loss {row['val_loss']}", highlight=False)

    with interrupted_is_exit_130(folder, note), incomplete_is_exit_1():
        out = grow_study(folder, target, tolerance=tol, steps=steps, budget=budget,
                         seconds=seconds, noise=sigma, sims=sims, seed=seed,
                         execute=execute_options(executor, address, storage), observers=[note],
                         say=lambda line: console.print(line, highlight=False, soft_wrap=True),
                         on_rung_done=done)
    for f in out.forecasts:
        inside = "-" if f["measured"] is None else \
            ("inside" if f["lo"] <= f["measured"] <= f["hi"] else "OUTSIDE")
        measured = "-" if f["measured"] is None else f"{f['measured']:.4f}"
        console.print(f"step {f['step']} rung {f['rung']} N = {f['n']:,.0f}: forecast "
                      f"{f['predicted']:.4f} [{f['lo']:.4f}, {f['hi']:.4f}], measured "
                      f"{measured} ({inside})", highlight=False)
    interval = "" if out.lo is None else f" [{out.lo:.4f}, {out.hi:.4f}]"
    console.print(f"stopped: {out.stop}; law at N = {fmt_count(target)}: {out.point:.4f}"
                  f"{interval}", highlight=False, soft_wrap=True)
    console.print(f"report: {folder / 'report.html'}")
