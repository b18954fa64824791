"""What `scalelab fit`, `predict` and `optimal` print: Rich tables and lines read off the
records of `scalelab.laws` (a fit.json, prediction and allocation rows)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from scalelab.cli.app import console

if TYPE_CHECKING:  # the CLI starts without importing numpy and the law engine
    from scalelab.laws.answers import Allocation, PredictionTable
    from scalelab.laws.fitfile import FitResult


def _g(v: Any) -> str:
    return "-" if v is None else f"{v:.5g}"


def _pct(v: float | None, spec: str) -> str:
    return "-" if v is None else f"{100 * v:{spec}}%"


def _size(v: Any) -> str:
    if isinstance(v, list | tuple):
        v = v[0] if v else None
    return "-" if v is None else f"{v:.3g}"


def print_fit(result: FitResult) -> None:
    """A fit of `scalelab.laws.fit_runs`, whichever route gave it."""
    if result.note:
        console.print(f"[bold]{result.note}[/]")
    {"one_form": _print_one_form, "study": _print_study_fit,
     "two_axis": _print_two_axis}[result.kind](result.record)


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


def _print_one_form(summary: dict) -> None:
    """A one-form fit: its law, holdout, candidates, profile and ranking of rivals."""
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
    if summary.get("selection") is not None:
        console.print(candidates_table(summary["selection"], summary["candidates"]))
    print_profile(summary.get("profile"))
    if summary.get("comparison"):
        console.print(_ranking_table(summary["comparison"]["ranking"],
                                     summary["comparison"]["rule"]))


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


def _ranking_table(ranking: list[dict], rule: str) -> Table:
    table = Table(title=f"laws ranked by holdout {rule}", title_justify="left")
    for col in ("rank", "law", "mean |rel. error|", "mean rel. error", "on a bound"):
        table.add_column(col, justify="left" if col in ("law", "on a bound") else "right")
    for i, row in enumerate(ranking, 1):
        ho = row["holdout"]
        table.add_row(str(i), row["law"], f"{100 * ho['mean_abs_rel_error']:.2f}%",
                      f"{100 * ho['mean_rel_error']:+.2f}%", ", ".join(ho["on_bound"] or []))
    return table


def _print_two_axis(record: dict) -> None:
    """A two-axis record: its answers, the choice of law, the holdout, the profile."""
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
        console.print(allocation_table(answers, "at the budgets asked (--compute)"))
    for line in study_lines(answers, record):
        console.print(line)
    for skipped in ([record["holdout_skipped"]] if record.get("holdout_skipped") else []):
        console.print(f"holdout skipped: {skipped}")
    print_profile(record.get("profile"))


def print_predictions(table_rows: PredictionTable) -> None:
    """`scalelab predict`: the table, then a warning per point beyond the fit's evidence."""
    table = Table(title=f"{table_rows.law} prediction of {table_rows.y}", title_justify="left")
    for col in (*table_rows.roles, "predicted", f"{table_rows.level:.0%} interval"):
        table.add_column(col, justify="right")
    for row in table_rows.rows:
        iv = row["interval"]
        table.add_row(*[f"{row[r]:.4g}" for r in table_rows.roles], f"{row['predicted']:.5g}",
                      f"[{iv[0]:.5g}, {iv[1]:.5g}]" if iv else "- (fit has no bootstrap)")
    console.print(table)
    for row in table_rows.rows:
        if row["warning"]:
            where = ", ".join(f"{r}={row[r]:.4g}" for r in table_rows.roles)
            console.print(f"[bold red]warning[/] ({where}): {row['warning']}")


def print_allocation(answer: Allocation) -> None:
    """`scalelab optimal`: the table, where the answers come from, the warnings."""
    console.print(allocation_table(answer.rows, answer.title))
    if answer.record is not None:
        for line in study_lines(answer.rows, answer.record):
            console.print(line)
    for row, warning in zip(answer.rows, answer.warnings, strict=True):
        if warning:
            console.print(f"[bold red]warning[/] (C={row['compute']:.3g}): {warning}")


def allocation_table(rows: list[dict], title: str) -> Table:
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


def study_lines(rows: list[dict], record: dict) -> list[str]:
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
