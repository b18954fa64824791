"""Plan an IsoFLOP ladder for a compute target C (`scalelab plan --compute C`).

The question: which IsoFLOP ladder (how many budgets, how far below C the largest one lies,
how many sizes a budget, how many seeds a size) lets the study's two-axis law predict the best
loss reachable with C FLOPs, L*(C), within a tolerance, for the fewest FLOPs?

The truth is a law in N and D, L(N, D) = E + A·N^-alpha + B·D^-beta (`Truth`), from one of:

- a two-axis study (`--from STUDY`): its Approach-3 law (the `approach3` of its fit record, the
  law the study answers with by default), its FLOPs per unit of D as measured, and as the noise
  of one run the spread of its runs about that law (the law's residual sigma: the study's
  IsoFLOP runs have no seed repeats to measure it from, and the residuals carry the law's misfit
  as well, so this errs on the side of more noise); `--noise` replaces it.
- a prior (`--law FIT.json`: a two-axis fit record, or a fit of the chinchilla form) with an
  assumed `--noise`, cost 6·N·D.
- with neither, Chinchilla's published Approach-3 fit (Hoffmann et al. 2022, their eq. 10:
  E = 1.69, A = 406.4, B = 410.7, alpha = 0.34, beta = 0.28) with an assumed `--noise`, cost
  6·N·D. Decision: taken as published, not rescaled. Its loss level is MassiveText's in nats a
  token, not this task's, and no rescaling could be justified without a measurement; what a
  plan depends on is the shape (the exponents, the balance of the N and D terms, and the share
  of the loss that is reducible), and for that a published fit is the honest prior. A study of
  the task itself (`--from`) replaces it.

Every run's log loss is the law's plus Gaussian noise of one sigma (the same at every N and D).
Each synthetic ladder is fitted as `laws.two_axis` fits a study's rungs with Approach 3: the
chinchilla form over every run, unweighted, Huber (delta 1e-3) on log loss, and its answer at C
is the optimum along the budget line C = f(N)·D (`laws.optimal`, f the FLOPs per unit of D). The
error is that L*(C) over the truth's own L*(C), minus 1. All synthetic ladders of all candidates
are fitted in one batched L-BFGS by the law engine (`plan.simulation.fit_designs`, from the truth
and from E at either end of its range), not one `Law.fit` (4,500 starts) each: the batch and
`Law.fit` agree (tests/plan/test_plan_two_axis.py), and 80 candidates × 200 draws through
`fit_two_axis` (about 1.5 s a fit on 2 cores) would take hours.

What the batch leaves out is the study's choice of law (`laws.selection`: chinchilla_shared or
the frontier answer instead when their inner holdout is better by a margin). So the chosen
ladder is also drawn `study_draws` times and fitted by `fit_two_axis` itself, choice of law
included, and its P and mean error that way are reported beside the batch's (`study_fit`): few
draws, as each costs a full fit.

Candidates (`isoflop_ladders`): 3, 4 or 5 budgets half a decade apart (the ratio of the example
spec's 1e12, 3e12, 1e13), the largest C/3, C/10 or C/30 (and at least `reach` below C); 4, 5 or
7 sizes a budget, placed as the study places them (`ladder.isoflop_sizes`, the base spec's span
and tokens-per-parameter guess, each size mapped to the family's shape; a budget whose sizes
share a shape is not a candidate); 1, 2 or 3 seeds a size. Cost: every run spends its budget
(D = C_b / f(N)), so with a cosine schedule a ladder costs seeds × sizes × the sum of its
budgets; with WSD (the default on an IsoFLOP ladder) the runs of one size share a trunk and its
smaller budgets cost only their cool-down (`IsoLadder.wsd_flops`). There is no run at C itself:
checking the forecast there is an IsoFLOP budget of C, the very cost being planned.

The choice is the one-axis plan's (`plan.search.choose`): screened with `screen_sims` draws, the
cheapest near the best given `final_sims`, the most probable of those (within 0.02: the
cheapest), within the budget; without one, within C itself (a ladder that costs more than the
run it forecasts is no forecast). The chosen candidate's spec is then planned by the ladder
planner that `scalelab run` uses (`refusal`: it measures each shape's FLOPs a step, so only
the chosen one is asked); one it would refuse (a budget too small for a size's steps, sizes
sharing a shape) is dropped and the choice made again.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import Law
from scalelab.laws.isoflop import FlopsPerUnit
from scalelab.laws.optimal import optimal_allocation, optimum_along_budgets
from scalelab.plan.search import SCREEN_SIMS, Plan, check_budget, choose, measured_rate
from scalelab.plan.simulation import Outcome, fit_designs

FORM = "chinchilla"  # Approach 3: the law a two-axis study answers with by default
X_NAMES = ("n_nonembed", "D")
# Hoffmann et al. 2022, Approach 3 (their eq. 10), nats per token on MassiveText.
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
PRIOR_NAME = "Chinchilla's Approach 3 (Hoffmann et al. 2022), as published"
BUDGET_COUNTS = (3, 4, 5)
TOP_RATIOS = (3.0, 10.0, 30.0)  # C / the largest budget
POINTS = (4, 5, 7)  # sizes a budget
REPEATS = (1, 2, 3)  # seeds a size
BUDGET_STEP = math.sqrt(10.0)  # budgets half a decade apart
FINAL_SIMS = 500
STUDY_DRAWS = 20
STUDY_BOOTSTRAP = 2  # fit_two_axis's answer needs a bootstrap to exist, not its width


@dataclass(frozen=True)
class IsoLadder:
    """A candidate IsoFLOP ladder: its budgets (FLOPs, ascending), sizes a budget, seeds a size,
    and where the sizes sit (the spec's span and tokens-per-parameter guess of the optimum)."""

    budgets: tuple[float, ...]
    points: int
    repeats: int = 1
    span: float = 4.0
    tokens_per_param: float = 20.0

    def sizes(self, budget: float, realize: Callable[[float], float] = float) -> list[float]:
        from scalelab.ladder import isoflop_sizes

        return [realize(n) for n in isoflop_sizes(budget, self.points, self.span,
                                                  self.tokens_per_param)]

    def design(self, per_unit: FlopsPerUnit, realize: Callable[[float], float] = float
               ) -> tuple[np.ndarray, np.ndarray]:
        """(N and D of every run as two columns, each run's budget): each size once per seed."""
        n = np.array([s for c in self.budgets for s in self.sizes(c, realize)
                      for _ in range(self.repeats)])
        budget = np.repeat(np.asarray(self.budgets), self.points * self.repeats)
        return np.column_stack([n, budget / per_unit(n)]), budget

    @property
    def runs(self) -> int:
        return len(self.budgets) * self.points * self.repeats

    @property
    def flops(self) -> float:
        """Every run trained whole (a cosine schedule): seeds × sizes × the sum of budgets."""
        return float(sum(self.budgets) * self.points * self.repeats)

    def wsd_flops(self, decay_frac: float, realize: Callable[[float], float] = float) -> float:
        """The cost under a WSD schedule, as `ladder.wsd_branches` trains it: the runs of one
        size (one shape and seed) share a trunk, so the size's largest budget is trained whole
        and each smaller budget only over its cool-down, its last `decay_frac` of steps."""
        by_size: dict[float, list[float]] = {}
        for c in self.budgets:
            for n in self.sizes(c, realize):
                by_size.setdefault(n, []).append(c)
        per_seed = sum(max(cs) + decay_frac * (sum(cs) - max(cs)) for cs in by_size.values())
        return float(per_seed * self.repeats)

    def describe(self) -> str:
        seeds = "1 seed" if self.repeats == 1 else f"{self.repeats} seeds"
        return (f"{len(self.budgets)} budgets {self.budgets[0]:.2g}-{self.budgets[-1]:.2g}, "
                f"{self.points} sizes, {seeds}")


@dataclass
class Truth:
    """What a two-axis plan simulates from: a law in the chinchilla form, the noise of one run
    (sigma, sd of log L, at every N and D) and the FLOPs one unit of D costs at size N."""

    law: Law
    sigma: float
    per_unit: FlopsPerUnit
    source: str  # "measured" (a study's runs about its law) or "assumed"
    record: dict[str, Any]

    def optimum(self, compute: float) -> dict[str, Any]:
        """N*, D*, L* of the truth at C, along the budget line C = f(N)·D."""
        return optimal_allocation(self.law, [compute], per_unit=self.per_unit)[0]


def chinchilla_law(record: dict[str, Any], where: str) -> Law:
    """The law in the chinchilla form of a fit record: a two-axis record's Approach 3, a fit of
    the chinchilla form, or of chinchilla_shared (one exponent, alpha = beta = eta)."""
    if record.get("law") == "two_axis":
        record = record.get("approach3") or {}
    params = dict(record.get("params") or {})
    if record.get("law") == "chinchilla_shared" and "eta" in params:
        params.update(alpha=params["eta"], beta=params["eta"])
    elif record.get("law") != FORM:
        raise UserError(f"{where}: a plan for --compute needs a law in N and D, L(N, D) = E + "
                        f"A/N^alpha + B/D^beta; this is {record.get('law')!r} (a ladder in N "
                        "alone is planned with --target)")
    return Law.from_summary({"law": FORM, "params": params, "x": list(X_NAMES),
                             "y": "val_loss"})


@dataclass
class TwoAxisSource:
    """What a plan for a compute target starts from: the truth, the base spec (a dict as a YAML
    spec writes it), the IsoFLOP budgets measured (empty for a prior), the measured FLOPs per
    training second (None without) and where it came from."""

    truth: Truth
    spec: dict[str, Any]
    budgets: list[float]
    flops_per_s: float | None
    name: str


def two_axis_source(study: str | Path | None = None, law: str | Path | None = None,
                    noise: float | None = None, preset: str = "default") -> TwoAxisSource:
    """The truth of `--from STUDY` (a two-axis study), `--law FIT` or, with neither, the
    Chinchilla prior (see the module docstring); a prior needs `noise`."""
    from scalelab.plan.source import _summary, law_record, prior_record

    if study is not None and law is not None:
        raise UserError("give --from STUDY or --law FIT, not both")
    if study is not None:
        path = Path(study)
        data = _summary(path)
        if "rungs" not in data:
            raise UserError(f"{path}: not a study folder (its summary has no rungs)")
        record = law_record(data, path)
        if record.get("law") != "two_axis":
            raise UserError(f"{path} is a ladder in N alone: --compute needs a two-axis study "
                            "(IsoFLOP budgets or a grid of N and D); plan it with --target")
        a3 = record.get("approach3") or {}
        sigma = noise if noise is not None else a3.get("residual_sigma")
        if not sigma:
            raise UserError(f"{path}: its law passes through every run (no residual noise to "
                            "measure); give --noise (e.g. --noise 1%)")
        truth = assumed_truth(chinchilla_law(record, str(path)), sigma,
                              FlopsPerUnit.from_dict(record.get("flops_per_unit")), str(path))
        if noise is None:
            truth.source = "measured"
            truth.record.update(source="measured", of="the residuals of its runs about its "
                                "Approach-3 law", n_runs=record.get("n_rungs"))
        done = [r for r in data["rungs"] if r.get("status") == "done"]
        return TwoAxisSource(truth, dict((data.get("study") or {}).get("spec") or {}),
                             sorted(float(c) for c in record.get("budgets") or []),
                             measured_rate(done), str(path))
    if noise is None:
        raise UserError("a prior law has no runs to measure its noise from: give --noise (e.g. "
                        "--noise 1%), or --from a two-axis study")
    from scalelab.spec import preset_spec

    spec = preset_spec(preset).model_dump(mode="json", exclude_none=True)
    if law is None:
        return TwoAxisSource(assumed_truth(chinchilla_prior(), noise, name=PRIOR_NAME), spec,
                             [], None, PRIOR_NAME)
    record = prior_record(law)
    per_unit = FlopsPerUnit.from_dict(record.get("flops_per_unit"))
    return TwoAxisSource(assumed_truth(chinchilla_law(record, str(law)), noise, per_unit,
                                       str(law)), spec, [], None, str(law))


def refusal(base: dict[str, Any]) -> Callable[[dict[str, Any]], str | None]:
    """Why `scalelab run` would refuse the spec of a candidate row (`isoflop_spec`), or None:
    the ladder planner it uses, on the base spec's task and family (built once)."""
    from scalelab.ladder import plan_ladder
    from scalelab.spec import parse_spec
    from scalelab.study import resolve

    res = resolve(parse_spec(base))

    def why(row: dict[str, Any]) -> str | None:
        try:
            plan_ladder(parse_spec(isoflop_spec(base, row)), res.task, res.family)
        except UserError as err:
            return str(err)
        return None

    return why


def chinchilla_prior() -> Law:
    return Law.from_summary({"law": FORM, "params": CHINCHILLA, "x": list(X_NAMES),
                             "y": "val_loss"})


def assumed_truth(law: Law, sigma: float, per_unit: FlopsPerUnit | None = None,
                  name: str = "prior") -> Truth:
    """`law` with one assumed sigma for every run (0 allowed here: a check of the fit)."""
    if not 0 <= sigma < 1:
        raise UserError(f"--noise must be between 0 and 100%, got {100 * sigma:g}%")
    return Truth(law, float(sigma), per_unit or FlopsPerUnit.from_dict(None), "assumed",
                 {"source": "assumed", "sigma": float(sigma), "law": name,
                  "params": dict(law.params_)})


def optimal_loss(law: Law, thetas: np.ndarray, compute: float,
                 per_unit: FlopsPerUnit) -> np.ndarray:
    """L*(C) of every fitted theta (fitting parameterization, one per row), as the study
    answers: the optimum along the budget line (`laws.optimal`)."""
    best = optimum_along_budgets(law.form_, thetas, np.array([float(compute)]), 6.0, per_unit)
    return best["loss"][:, 0]


def draw(ladder: IsoLadder, truth: Truth, sims: int, seed: int,
         realize: Callable[[float], float] = float) -> tuple[np.ndarray, np.ndarray]:
    """(N and D of every run, sims synthetic ladders of log L): the law plus the noise."""
    X, _ = ladder.design(truth.per_unit, realize)
    rng = np.random.default_rng(seed)
    ly = np.log(truth.law.predict(X).point) + truth.sigma * rng.standard_normal((sims, len(X)))
    return X, ly


def simulate_isoflop(ladders: Sequence[IsoLadder], truth: Truth, compute: float, *,
                     tolerance: float = 0.02, sims: int = SCREEN_SIMS, seed: int = 0,
                     realize: Callable[[float], float] = float) -> list[Outcome]:
    """The errors of L*(C) over `sims` synthetic ladders of each candidate (one batched fit)."""
    true_loss = truth.optimum(compute)["loss"]
    designs = [(*draw(lad, truth, sims, seed, realize), None) for lad in ladders]
    thetas = fit_designs(truth.law, designs)
    return [Outcome(optimal_loss(truth.law, th, compute, truth.per_unit) / true_loss - 1.0,
                    tolerance) for th in thetas]


def study_fit(ladder: IsoLadder, truth: Truth, compute: float, *, tolerance: float = 0.02,
              draws: int = STUDY_DRAWS, seed: int = 0,
              realize: Callable[[float], float] = float) -> dict[str, Any]:
    """The chosen ladder's synthetic draws fitted by the study's own `fit_two_axis` (its choice
    of law included): P, mean error, and which law answered how often."""
    from scalelab.laws.two_axis import fit_two_axis

    X, budget = ladder.design(truth.per_unit, realize)
    _, ly = draw(ladder, truth, draws, seed + 2, realize)
    true_loss = truth.optimum(compute)["loss"]
    errors, laws = [], []
    for row in np.exp(ly):
        runs = [{"n_nonembed": n, "D": d, "flops": c, "budget": c, "val_loss": y}
                for (n, d), c, y in zip(X, budget, row, strict=True)]
        record = fit_two_axis(runs, bootstrap=STUDY_BOOTSTRAP, seed=seed, tolerance=tolerance,
                              compute=[compute])
        answer = (record.get("answers") or [{}])[0].get("loss")
        errors.append(np.nan if answer is None else answer / true_loss - 1.0)
        laws.append(str(record.get("chosen")))
    err = np.array(errors)
    ok = err[np.isfinite(err)]
    return {"draws": draws, "answered": int(ok.size),
            "p_within": float(np.mean(np.abs(ok) <= tolerance)) if ok.size else None,
            "mean_error": float(ok.mean()) if ok.size else None,
            "chosen_laws": dict(Counter(laws))}


def isoflop_ladders(compute: float, *, span: float = 4.0, tokens_per_param: float = 20.0,
                    reach: float = TOP_RATIOS[0], realize: Callable[[float], float] = float
                    ) -> list[IsoLadder]:
    """Every candidate (see the module docstring) whose largest budget lies at least `reach`
    below C and whose sizes map to distinct shapes in every budget."""
    out = []
    for ratio in (r for r in TOP_RATIOS if r >= reach):
        for k in BUDGET_COUNTS:
            # three significant digits: the budgets the spec writes are the ones simulated
            budgets = tuple(float(f"{compute / ratio / BUDGET_STEP ** (k - 1 - i):.3g}")
                            for i in range(k))
            for points in POINTS:
                lad = IsoLadder(budgets, points, 1, span, tokens_per_param)
                if all(len(set(lad.sizes(c, realize))) == points for c in budgets):
                    out += [replace(lad, repeats=r) for r in REPEATS]
    return out


def _row(lad: IsoLadder, compute: float, flops_per_s: float | None,
         decay_frac: float | None, realize: Callable[[float], float]) -> dict[str, Any]:
    flops = lad.flops if decay_frac is None else lad.wsd_flops(decay_frac, realize)
    return {"budgets": list(lad.budgets), "points": lad.points, "repeats": lad.repeats,
            "span": lad.span, "tokens_per_param": lad.tokens_per_param, "runs": lad.runs,
            "ratio": compute / lad.budgets[-1], "describe": lad.describe(), "flops": flops,
            "ladder_flops": flops, "independent_flops": lad.flops,
            "seconds": flops / flops_per_s if flops_per_s else None}


def ladder_of(row: dict[str, Any]) -> IsoLadder:
    return IsoLadder(tuple(row["budgets"]), row["points"], row["repeats"], row["span"],
                     row["tokens_per_param"])


def make_two_axis_plan(truth: Truth, compute: float, *, tolerance: float = 0.02,
                       budget: float | None = None, span: float = 4.0,
                       tokens_per_param: float = 20.0, reach: float = TOP_RATIOS[0],
                       realize: Callable[[float], float] = float,
                       refused: Callable[[dict[str, Any]], str | None] | None = None,
                       flops_per_s: float | None = None, decay_frac: float | None = None,
                       seed: int = 0,
                       screen_sims: int = SCREEN_SIMS, final_sims: int = FINAL_SIMS,
                       study_draws: int = STUDY_DRAWS) -> Plan:
    """The plan for compute target C (see the module docstring); `refused(row)` says why a study
    could not train a candidate, or None (the CLI plans its spec: `refusal`). UserError without
    candidates, when none fits the budget, or when the chosen ones cannot be trained.
    `decay_frac`: the spec's WSD cool-down share when its ladder trains with WSD (runs of one
    size then share a trunk and cost less: `IsoLadder.wsd_flops`); None, every run whole."""
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance must be between 0 and 100%, got {100 * tolerance:g}%")
    ladders = isoflop_ladders(compute, span=span, tokens_per_param=tokens_per_param,
                              reach=reach, realize=realize)
    if not ladders:
        raise UserError(f"no IsoFLOP ladder for --compute {compute:.3g}: the largest budget "
                        f"must lie {max(TOP_RATIOS):g}x or less below C (--reach {reach:g}), "
                        "and each budget's sizes must map to distinct shapes; choose a larger "
                        "--compute")
    rows = [_row(lad, compute, flops_per_s, decay_frac, realize) for lad in ladders]
    # Without a budget, C itself: a ladder that costs more than the run it forecasts is no
    # forecast (training at C would answer for less).
    budget = compute if budget is None else budget
    check_budget(rows, budget)

    def evaluate(some: list[dict[str, Any]], sims: int, s: int) -> None:
        outs = simulate_isoflop([ladder_of(r) for r in some], truth, compute,
                                tolerance=tolerance, sims=sims, seed=s, realize=realize)
        for row, out in zip(some, outs, strict=True):
            row.update(out.record())
            row["p_per_pflop"] = row["p_within"] / (row["ladder_flops"] / 1e15)

    try:
        chosen = choose(rows, evaluate, budget, screen_sims, final_sims, seed, refused)
    except UserError as err:
        raise UserError(f"--compute {compute:.3g}: {err}; choose a larger --compute") from None
    if study_draws > 0:
        chosen["study_fit"] = study_fit(ladder_of(chosen), truth, compute, tolerance=tolerance,
                                        draws=study_draws, seed=seed, realize=realize)
    rows.sort(key=lambda r: -r["p_per_pflop"])
    opt = truth.optimum(compute)
    return Plan(compute, tolerance, budget, rows, chosen, truth.record,
                _cost_text(decay_frac, truth.per_unit.source),
                {"screen_sims": screen_sims, "final_sims": final_sims, "seed": seed,
                 "reach": reach, "study_draws": study_draws, "kind": "compute",
                 "optimum": {k: opt[k] for k in ("N", "D", "loss")}},
                label=f"C = {compute:.3g} FLOPs")


def _cost_text(decay_frac: float | None, per_unit: str) -> str:
    if decay_frac is None:
        return ("each run spends its budget: seeds × sizes × the sum of the budgets (FLOPs per "
                f"unit of D: {per_unit})")
    return ("WSD: a size's runs share one trunk, its largest budget trained whole and each "
            f"smaller one over its last {100 * decay_frac:g}% (FLOPs per unit of D: {per_unit})")


def wsd_decay(spec: dict[str, Any]) -> float | None:
    """The cool-down share of the spec's IsoFLOP ladder when it trains with WSD branches (the
    planned spec is two-axis, so `ladder.schedule_of` gives WSD unless the spec asks for
    cosine), else None."""
    from scalelab.spec import Schedule, parse_spec

    train = parse_spec(spec).train
    return train.decay_frac if train.schedule in (None, Schedule.WSD) else None


def isoflop_spec(base: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """The base spec (a two-axis study's, or a preset's) with the chosen IsoFLOP ladder; its D
    rule is dropped: the budgets set every run's D."""
    from scalelab.spec import BUDGET_KEYS

    spec = {k: v for k, v in base.items() if v is not None}
    spec["train"] = {k: v for k, v in (spec.get("train") or {}).items()
                     if k not in BUDGET_KEYS}
    spec["ladder"] = {"isoflop": {"budgets": [float(c) for c in chosen["budgets"]],
                                  "points": int(chosen["points"]),
                                  "span": float(chosen["span"]),
                                  "tokens_per_param": float(chosen["tokens_per_param"])},
                      "repeats": int(chosen["repeats"])}
    spec["name"] = f"{base.get('name', 'study')}-plan"
    return spec


def isoflop_settings(spec: dict[str, Any]) -> tuple[float, float]:
    """(span, tokens_per_param) of a spec's IsoFLOP ladder, else the spec's defaults."""
    from scalelab.spec import IsoFlopSpec

    iso = (spec.get("ladder") or {}).get("isoflop") or {}
    fields = IsoFlopSpec.model_fields
    return (float(iso.get("span", fields["span"].default)),
            float(iso.get("tokens_per_param", fields["tokens_per_param"].default)))
