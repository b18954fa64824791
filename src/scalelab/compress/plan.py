"""Plan a compression run: which rung, which methods, which distillation students; every check
against the study happens here, before anything is built or written.

UserErrors (one line each): unknown methods and ratios outside (0, 1) (from `methods.py`); a
study without trained rungs; a rung that does not exist or is not trained; a method that does
not apply to the study's family or task objective (`base.check_supported`); a method that takes
a student (distill) without a smaller trained rung, or with a student rung that is not smaller;
two methods naming the same variant.

`methods=None` means the default list (`methods.default_methods()`) reduced to what applies: the
methods that support the family and objective, and those that take a student only when a
smaller trained rung exists. Methods the user names are never dropped silently.

Planning reads only store rows (plain dicts), so the CLI runs it on a read-only view of the
study first: bad input changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from scalelab.compress.base import Method, applicable, check_supported, get_method
from scalelab.compress.methods import default_methods, parse_methods, parse_rung
from scalelab.errors import UserError


@dataclass
class CompressPlan:
    """The checked plan: the base rung's store row, the methods in order, and the student rung
    row of each method that takes one (distill)."""

    rung: dict
    methods: list[Method]
    students: dict[Method, dict] = field(default_factory=dict)

    def names(self) -> list[str]:
        """The variant name of each method, in order (e.g. r3-prune0.5-ft, r3-distill-r2)."""
        r = self.rung["rung"]
        return [m.variant_name(r, self.students[m]["rung"] if m in self.students else None)
                for m in self.methods]


def done_rungs(rungs: Sequence[dict]) -> list[dict]:
    """The trained rungs (status done, with their weights file recorded)."""
    return [r for r in rungs if r["status"] == "done" and r.get("checkpoint")]


def choose_rung(rungs: Sequence[dict], rung: str | int = "largest") -> dict:
    """The store row of a trained rung: 'largest' (most non-embedding parameters) or an index;
    UserError for a study without trained rungs or a rung that does not exist or is not
    trained."""
    which = parse_rung(rung)
    done = done_rungs(rungs)
    if not done:
        raise UserError("the study has no trained rungs yet; run `scalelab run` on it first")
    return _target(rungs, which, done)


def _target(rungs: Sequence[dict], which: str | int, done: list[dict]) -> dict:
    if which == "largest":
        return max(done, key=lambda r: (r["n_nonembed"], r["rung"]))
    rows = {r["rung"]: r for r in rungs}
    if which not in rows:
        known = ", ".join(str(r["rung"]) for r in rungs)
        raise UserError(f"rung {which} does not exist in this study (rungs: {known})")
    target = rows[which]
    if target not in done:
        raise UserError(f"rung {which} is not trained (status {target['status']}); "
                        "choose a finished rung")
    return target


def plan_compress(rungs: Sequence[dict], rung: str | int = "largest",
                  methods: Sequence[str] | str | None = None, family: str | None = None,
                  objective: str | None = None) -> CompressPlan:
    """Check every argument against the study's rung rows; raises UserError before anything is
    written. `family` (a family name) defaults to the rung row's `family`; `objective` (the
    task's: lm, classification, regression) None skips the objective check."""
    parsed = parse_methods(default_methods() if methods is None else methods)
    target = choose_rung(rungs, rung)
    done = done_rungs(rungs)
    family = family or target["family"]
    smaller = [r for r in done if r["n_nonembed"] < target["n_nonembed"]]
    if methods is None:
        parsed = [m for m in applicable(parsed, family, objective)
                  if not get_method(m.kind).takes_student or smaller]
        if not parsed:
            raise UserError(f"no default compression method applies to family {family!r}")
    else:
        check_supported(parsed, family, objective)
    plan = CompressPlan(target, parsed)
    for m in parsed:
        if not get_method(m.kind).takes_student:
            continue
        if m.value is None:
            if not smaller:
                raise UserError(f"{m.kind} needs a trained rung smaller than rung "
                                f"{target['rung']} to take its shape as the student")
            plan.students[m] = max(smaller, key=lambda r: r["n_nonembed"])
        else:
            student = next((r for r in rungs if r["rung"] == int(m.value)), None)
            if student is None or student not in done:
                raise UserError(f"{m.text}: rung {int(m.value)} is not a trained rung")
            if student not in smaller:
                raise UserError(f"{m.text}: the student rung must be smaller than the teacher "
                                f"(rung {target['rung']})")
            plan.students[m] = student
    names = plan.names()
    if len(set(names)) != len(names):
        raise UserError("two methods name the same variant; list each method once")
    return plan


__all__ = ["CompressPlan", "choose_rung", "done_rungs", "plan_compress"]
